# Mini teacher: ResNet-34 with base width 32 (stages 32/64/128/256) and the student's 64-channel
# FPN and head -- like the paper's R101 teacher / R50 student, which share 256-channel FPN/heads:
# PGD imitates features without an adaptation layer, so the widths must match.
# Backbone initialised from SYNTHETIC pretraining (see mini_r18.py):
# results/<scale>/pretrain/mini_r34/backbone.pth, `{scale}` filled from `pretrain_scale`.
pretrain_scale = 'none'  # the workflow passes pretrain_scale=<scale> (see mini_r18.py)
size_name = 'r34-w32'
size_backbone = dict(
    _delete_=True, type='ResNet', depth=34, base_channels=32, num_stages=4,
    out_indices=(1, 2, 3), frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
    init_cfg=dict(type='Pretrained',
                  checkpoint='results/{scale}/pretrain/mini_r34/backbone.pth'))
size_neck = dict(in_channels=[64, 128, 256], out_channels=64, start_level=0)
size_width = 64
