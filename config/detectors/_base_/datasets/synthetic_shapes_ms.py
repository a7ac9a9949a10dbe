# NOT USED since the mini backbones are synthetically pretrained (2026-12-03): the FCOS teacher
# trains single scale like every teacher. Kept as the record of the from-scratch FCOS recipe.
# SYNTHETIC shapes with multi-scale training, the mini counterpart of coco_ms.py (paper §4.1:
# teachers train on multi-scale inputs): each training image is resized to a side drawn from
# [96, 160] px, i.e. 0.75-1.25x the 128-px scenes; validation stays at 128 px.
# Used by the mini FCOS teacher, which overfits the 640 train images single-scale (see
# README "Mini scale"). The two sides are written out for the 128-px mini data.
_base_ = './synthetic_shapes.py'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(96, 96), (160, 160)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
