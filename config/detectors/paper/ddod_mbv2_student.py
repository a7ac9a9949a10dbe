# DDOD -- paper lightweight student (Table 2): MobileNetV2, 1x, COCO
# Generated pattern: model recipe + dataset + schedule + size; edit the bases, not this file.
_base_ = [
    '../_base_/models/ddod.py', '../_base_/datasets/coco.py',
    '../_base_/schedules/paper_1x.py', '../_base_/runtime.py', '../_base_/sizes/paper_mbv2.py'
]
model = dict(
    backbone={{_base_.size_backbone}},
    neck={{_base_.size_neck}},
    bbox_head=dict(
        num_classes={{_base_.num_classes}},
        in_channels={{_base_.size_width}},
        feat_channels={{_base_.size_width}}))
