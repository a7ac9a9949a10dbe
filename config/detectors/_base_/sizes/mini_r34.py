# Mini teacher: ResNet-34 with base width 32 (stages 32/64/128/256) and the student's 64-channel
# FPN and head -- like the paper's R101 teacher / R50 student, which share 256-channel FPN/heads:
# PGD imitates features without an adaptation layer, so the widths must match.
size_name = 'r34-w32'
size_backbone = dict(
    _delete_=True, type='ResNet', depth=34, base_channels=32, num_stages=4,
    out_indices=(1, 2, 3), frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch')
size_neck = dict(in_channels=[64, 128, 256], out_channels=64, start_level=0)
size_width = 64
