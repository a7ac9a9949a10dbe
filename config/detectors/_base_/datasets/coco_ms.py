# COCO with multi-scale training (paper §4.1: teachers are trained with multi-scale inputs,
# 3x schedule) -- the shorter side drawn from [480, 960] as in MMDetection's 3x ms configs.
_base_ = './coco.py'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(1333, 480), (1333, 960)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
