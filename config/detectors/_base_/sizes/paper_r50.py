# Paper student: ImageNet-pretrained ResNet-50, all BN frozen (paper §4.1), 256-channel FPN/head.
size_name = 'r50'
size_backbone = dict(
    _delete_=True, type='ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
    frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
    style='pytorch', init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))
size_neck = dict(in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1)
size_width = 256
