# Mini student: ResNet-18 with base width 16 (stages 16/32/64/128), 64-channel FPN and head,
# BN trained from scratch (no pretrained weights at mini scale).
size_name = 'r18-w16'
size_backbone = dict(
    _delete_=True, type='ResNet', depth=18, base_channels=16, num_stages=4,
    out_indices=(1, 2, 3), frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch')
size_neck = dict(in_channels=[32, 64, 128], out_channels=64, start_level=0)
size_width = 64
