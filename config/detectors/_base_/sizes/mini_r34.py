# Mini teacher: ResNet-34 with base width 32 (stages 32/64/128/256), 96-channel FPN and head.
size_name = 'r34-w32'
size_backbone = dict(
    _delete_=True, type='ResNet', depth=34, base_channels=32, num_stages=4,
    out_indices=(1, 2, 3), frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch')
size_neck = dict(in_channels=[64, 128, 256], out_channels=96, start_level=0)
size_width = 96
