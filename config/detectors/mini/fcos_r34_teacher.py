# FCOS -- mini teacher: ResNet-34/w32, 8x-longer schedule (mini_teacher_long), multi-scale synthetic shapes
# Generated pattern: model recipe + dataset + schedule + size; edit the bases, not this file.
_base_ = [
    '../_base_/models/fcos.py', '../_base_/datasets/synthetic_shapes_ms.py',
    '../_base_/schedules/mini_teacher_long.py', '../_base_/runtime.py', '../_base_/sizes/mini_r34.py'
]
model = dict(
    backbone={{_base_.size_backbone}},
    neck={{_base_.size_neck}},
    bbox_head=dict(
        num_classes={{_base_.num_classes}},
        in_channels={{_base_.size_width}},
        feat_channels={{_base_.size_width}}))
