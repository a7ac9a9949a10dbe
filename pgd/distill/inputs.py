"""What every distillation loss receives: one batch of captured teacher/student tensors.

The distiller (``pgd.distill.distiller``) runs the teacher and the student, captures the
tensors below and hands one :class:`DistillBatch` to each configured loss module. Loss modules
only read it, so a new method never needs to touch the detectors.

Conventions (shared by every method, so they are stated once here):

* Levels are FPN levels P3..P7 in order; ``level_sizes[l] == (H_l, W_l)``.
* "Flattened locations" concatenate the levels in order, each level row-major over (y, x), i.e.
  the layout of ``torch.cat([f.flatten(2) for f in feats], dim=2)``. ``N = sum(H_l * W_l)``.
* ``points[n] = (x, y)`` is the image-plane centre of location n in input pixels: the head's
  own priors (anchor centres ``(j*s, i*s)`` for anchor heads, whose AnchorGenerator uses
  ``center_offset=0``; points ``((j+0.5)*s, (i+0.5)*s)`` for FCOS), see
  ``pgd.distill.head_decoding``. ``level_points`` below builds the point-head layout.
* Boxes are (x1, y1, x2, y2) in input pixels of the padded batch.
* Ground truths are padded to ``G = max #GT`` per batch; ``gt_valid`` marks the real ones, so
  images without objects have an all-False row.
* Everything teacher-side is detached; only ``student_*`` tensors carry gradients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


@dataclass
class CapturedFeatures:
    """Per-level features of one detector for one batch.

    Attributes:
        neck: FPN outputs, each (B, C, H_l, W_l).
        cls_feat: output of the first conv (+norm+ReLU) of the classification tower, per level.
        reg_feat: same for the regression tower.
    """

    neck: List[Tensor]
    cls_feat: List[Tensor]
    reg_feat: List[Tensor]


@dataclass
class DistillBatch:
    """One training batch as seen by the distillation losses.

    Attributes:
        student: captured student features (with grad).
        teacher: captured teacher features (detached).
        teacher_cls_prob: (B, N, A, C) teacher sigmoid class probabilities per prediction
            (A predictions per location: anchors for ATSS/DDOD, 1 for point-based heads).
        teacher_boxes: (B, N, A, 4) teacher boxes decoded to image-plane xyxy.
        teacher_cls_logits: per level (B, A*C, H_l, W_l) raw teacher class logits (for methods
            such as FRS that work on score maps), detached.
        student_cls_logits: same for the student, with grad.
        points: (N, 2) location centres (x, y) in pixels.
        level_sizes: [(H_l, W_l)] per level.
        strides: stride of each level in pixels.
        gt_bboxes: (B, G, 4) padded GT boxes.
        gt_labels: (B, G) padded labels (long; padding value -1).
        gt_valid: (B, G) bool.
        batch_input_shape: (H, W) of the padded input tensor.
        img_shapes: per image (h, w) of the un-padded (resized) image.
        teacher_extra / student_extra: head-specific tensors a method may need (e.g. GFL's
            distribution logits under key ``'bbox_dist'``), per level.
        cur_iter: global training iteration (for losses with a warm-up schedule); None
            outside training, meaning "no warm-up".
    """

    student: CapturedFeatures
    teacher: CapturedFeatures
    teacher_cls_prob: Tensor
    teacher_boxes: Tensor
    points: Tensor
    level_sizes: List[Tuple[int, int]]
    strides: List[int]
    gt_bboxes: Tensor
    gt_labels: Tensor
    gt_valid: Tensor
    batch_input_shape: Tuple[int, int]
    img_shapes: List[Tuple[int, int]] = field(default_factory=list)
    teacher_cls_logits: Optional[List[Tensor]] = None
    student_cls_logits: Optional[List[Tensor]] = None
    teacher_extra: dict = field(default_factory=dict)
    student_extra: dict = field(default_factory=dict)
    cur_iter: Optional[int] = None

    @property
    def num_images(self) -> int:
        return self.gt_bboxes.shape[0]

    def split_levels(self, flat: Tensor) -> List[Tensor]:
        """(B, N, ...) flattened tensor -> per level (B, H_l, W_l, ...)."""
        counts = [h * w for h, w in self.level_sizes]
        parts = torch.split(flat, counts, dim=1)
        return [p.reshape(p.shape[0], h, w, *p.shape[2:])
                for p, (h, w) in zip(parts, self.level_sizes)]


def level_points(level_sizes: Sequence[Tuple[int, int]], strides: Sequence[int],
                 device=None, dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    """Centres (x, y) of every location of every level, flattened, and its level index.

    Location (i, j) of a level with stride s has centre ((j + 0.5) s, (i + 0.5) s), matching
    MMDetection's ``MlvlPointGenerator(offset=0.5)`` and the centres of its anchors.

    Returns:
        points: (N, 2) float tensor of (x, y).
        level_index: (N,) long tensor.
    """
    pts, idx = [], []
    for lvl, ((h, w), s) in enumerate(zip(level_sizes, strides)):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing='ij')
        pts.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
        idx.append(torch.full((h * w,), lvl, device=device, dtype=torch.long))
    return torch.cat(pts), torch.cat(idx)


def pad_gts(bboxes: Sequence[Tensor], labels: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Pad per-image GT lists to (B, G, 4), (B, G) and a (B, G) validity mask (G >= 1)."""
    b = len(bboxes)
    g = max([1] + [len(x) for x in bboxes])
    ref = bboxes[0] if b else torch.zeros(0, 4)
    out_boxes = ref.new_zeros((b, g, 4))
    out_labels = torch.full((b, g), -1, dtype=torch.long, device=ref.device)
    valid = torch.zeros((b, g), dtype=torch.bool, device=ref.device)
    for i, (bb, ll) in enumerate(zip(bboxes, labels)):
        n = len(bb)
        out_boxes[i, :n] = bb
        out_labels[i, :n] = ll
        valid[i, :n] = True
    return out_boxes, out_labels, valid
