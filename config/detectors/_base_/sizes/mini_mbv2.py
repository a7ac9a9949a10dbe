# Mini lightweight student (Table 2): MobileNetV2 x0.5 (strides 8/16/32 -> 16/48/160 channels),
# 64-channel FPN and head. Backbone initialised from SYNTHETIC pretraining (see mini_r18.py):
# results/<scale>/pretrain/mini_mbv2/backbone.pth, `{scale}` filled from `pretrain_scale`.
pretrain_scale = 'none'  # the workflow passes pretrain_scale=<scale> (see mini_r18.py)
size_name = 'mbv2-x0.5'
size_backbone = dict(
    _delete_=True, type='MobileNetV2', widen_factor=0.5, out_indices=(2, 4, 6),
    frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
    init_cfg=dict(type='Pretrained',
                  checkpoint='results/{scale}/pretrain/mini_mbv2/backbone.pth'))
size_neck = dict(in_channels=[16, 48, 160], out_channels=64, start_level=0)
size_width = 64
