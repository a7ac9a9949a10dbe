"""Test helper: two tiny detection samples with GT boxes, the batch a one-step distillation
test feeds to ``model.loss`` (shared by test_add_method and test_loss_scale)."""
from __future__ import annotations

from typing import Callable

import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

BOXES = ([[10, 12, 70, 100], [60, 20, 120, 60]], [[30, 30, 90, 110]])


def gt_samples(size: int, labels: Callable[[int], torch.Tensor]) -> list:
    """One DetDataSample per entry of :data:`BOXES` on a ``size`` x ``size`` image;
    ``labels(n)`` gives the class ids of its ``n`` boxes."""
    out = []
    for boxes in BOXES:
        ds = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         batch_input_shape=(size, size), scale_factor=(1., 1.)))
        inst = InstanceData()
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32)
        inst.labels = labels(len(boxes))
        ds.gt_instances = inst
        out.append(ds)
    return out
