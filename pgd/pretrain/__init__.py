"""Synthetic pretraining: the mini scale's stand-in for ImageNet-pretrained backbones.

The paper's students and teachers start from ImageNet weights; the mini scale has no ImageNet,
so ``python -m pgd pretrain-backbone`` trains each mini backbone on a SYNTHETIC classification
task drawn from the detection data's generator family, on images that can never be detection
images (:mod:`pgd.pretrain.data`). The result, ``backbone.pth``, holds the backbone's own
parameter names, so detector configs load it exactly as the paper configs load ImageNet weights:
``backbone.init_cfg=dict(type='Pretrained', checkpoint='.../backbone.pth')``;
:func:`pgd.pretrain.check.check_pretrained` stops a run whose checkpoint is missing or does not
fit its backbone before anything is trained.

Modules: ``data`` (images, dataset, packing transform), ``model`` (classifier, metric, backbone
of a size), ``check`` (pretrained-checkpoint check), ``cli`` (the command).
"""
