# Mini student: ResNet-18 with base width 16 (stages 16/32/64/128), 64-channel FPN and head.
# Backbone initialised from SYNTHETIC pretraining (the mini stand-in for ImageNet, as the paper's
# students start from ImageNet weights): `python -m pgd pretrain-backbone --size mini_r18`, the
# workflow's pretrain rule output results/<scale>/pretrain/mini_r18/backbone.pth. `{scale}` is
# filled from `pretrain_scale` by pgd.pretrain.check.resolve_pretrained (pgd train / distill).
# The workflow passes `--cfg-options pretrain_scale=<scale>` at every scale whose config has a
# `pretrain` block; the default `none` trains the backbone from scratch (a hand-run or a unit
# test needs no checkpoint). BN stays trainable (the pretraining used the same BN).
pretrain_scale = 'none'  # the workflow passes pretrain_scale=<scale> (see mini_r18.py)
size_name = 'r18-w16'
size_backbone = dict(
    _delete_=True, type='ResNet', depth=18, base_channels=16, num_stages=4,
    out_indices=(1, 2, 3), frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
    init_cfg=dict(type='Pretrained',
                  checkpoint='results/{scale}/pretrain/mini_r18/backbone.pth'))
size_neck = dict(in_channels=[32, 64, 128], out_channels=64, start_level=0)
size_width = 64
