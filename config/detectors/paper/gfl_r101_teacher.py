# GFL -- paper teacher (§4.1): ResNet-101, 3x, multi-scale, COCO
# Generated pattern: model recipe + dataset + schedule + size; edit the bases, not this file.
_base_ = [
    '../_base_/models/gfl.py', '../_base_/datasets/coco_ms.py',
    '../_base_/schedules/paper_3x.py', '../_base_/runtime.py', '../_base_/sizes/paper_r101.py'
]
model = dict(
    backbone={{_base_.size_backbone}},
    neck={{_base_.size_neck}},
    bbox_head=dict(
        num_classes={{_base_.num_classes}},
        in_channels={{_base_.size_width}},
        feat_channels={{_base_.size_width}}))
