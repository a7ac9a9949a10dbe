# GFL -- mini teacher: ResNet-34/w32, longer schedule (mini_teacher, 18 vs 12 epochs), synthetic shapes
# Generated pattern: model recipe + dataset + schedule + size; edit the bases, not this file.
_base_ = [
    '../_base_/models/gfl.py', '../_base_/datasets/synthetic_shapes.py',
    '../_base_/schedules/mini_teacher.py', '../_base_/runtime.py', '../_base_/sizes/mini_r34.py'
]
model = dict(
    backbone={{_base_.size_backbone}},
    neck={{_base_.size_neck}},
    bbox_head=dict(
        num_classes={{_base_.num_classes}},
        in_channels={{_base_.size_width}},
        feat_channels={{_base_.size_width}}))
