# FCOS -- mini teacher: ResNet-34/w32 (synthetically pretrained), longer schedule (mini_teacher), synthetic shapes
# Generated pattern: model recipe + dataset + schedule + size; edit the bases, not this file.
# The shared teacher recipe of every Table 1 teacher (mini_teacher.py, single scale). From
# scratch FCOS needed 48 multi-scale epochs (mini_teacher_long.py, synthetic_shapes_ms.py);
# with the pretrained backbone the shared 18 epochs suffice (README "Mini scale").
_base_ = [
    '../_base_/models/fcos.py', '../_base_/datasets/synthetic_shapes.py',
    '../_base_/schedules/mini_teacher.py', '../_base_/runtime.py', '../_base_/sizes/mini_r34.py'
]
model = dict(
    backbone={{_base_.size_backbone}},
    neck={{_base_.size_neck}},
    bbox_head=dict(
        num_classes={{_base_.num_classes}},
        in_channels={{_base_.size_width}},
        feat_channels={{_base_.size_width}}))
