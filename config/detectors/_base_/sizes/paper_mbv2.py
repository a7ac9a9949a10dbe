# Paper lightweight student (Table 2): ImageNet-pretrained MobileNetV2 (strides 8/16/32 ->
# 32/96/320 channels), BN frozen, 256-channel FPN/head.
size_name = 'mbv2'
size_backbone = dict(
    _delete_=True, type='MobileNetV2', widen_factor=1.0, out_indices=(2, 4, 6),
    frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint='mmcls://mobilenet_v2'))
size_neck = dict(in_channels=[32, 96, 320], out_channels=256, start_level=0)
size_width = 256
