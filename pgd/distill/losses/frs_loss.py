"""FRS: Feature-Richness Score distillation (Du et al., "Distilling Object Detectors with
Feature Richness", NeurIPS 2021), on the FPN neck outputs and the classification score maps.

Feature-richness mask (teacher, detached), per level l::

    R_l[b, i, j] = max_{a, c} sigmoid(T_cls_l)[b, a * C + c, i, j]         # (B, H_l, W_l)

Losses (authors' public code ``Distilling_Max``; ``adapt_l`` = 3x3 conv student -> teacher
width, per level, no ReLU — their ``ADAP`` neck with ``kernel=3``)::

    L_feat = sum_l  sum_{b,c,i,j} R_l (adapt_l(S_l) - T_l)^2                    / sum_{b,i,j} R_l
    L_cls  = sum_l  sum_{b,k,i,j} R_l BCE(sigmoid(S_cls_l), sigmoid(T_cls_l))   / sum_{b,i,j} R_l
    loss_frs_feat = w_feat * warm * L_feat
    loss_frs_cls  = w_cls  * warm * L_cls
    warm = min(1, cur_iter / warmup_iters)   (1 when cur_iter is None or warmup_iters <= 0)

``k`` runs over all A * C score channels (BCE summed, not averaged, over channels as in the
public code). The BCE is computed from the logits (``binary_cross_entropy_with_logits`` with the
teacher probability as target), which equals the public ``F.binary_cross_entropy`` on the
sigmoids up to its log clamp.

Normalisation: ``normalize='batch'`` (default, public code: the mask is summed over the whole
batch) or ``'image'`` (per image, then the mean over images).

Warm-up: the distiller passes the current training iteration as ``forward(batch, cur_iter=it)``;
both terms are scaled by ``cur_iter / warmup_iters`` while ``cur_iter < warmup_iters``
(public code: ``distill_warm_step = 500``).

Shapes: ``batch.student.neck[l]`` (B, C_s, H_l, W_l), ``batch.teacher.neck[l]``
(B, C_t, H_l, W_l), ``batch.teacher_cls_logits[l]`` / ``batch.student_cls_logits[l]``
(B, A * C, H_l, W_l).

Defaults (the authors' public configs, github.com/duzhixing/FRS = their MMDetection fork,
``configs/distill_max/resnet50_resnet101_{retinanet,gfl}_max.py`` and
``configs/distill_fcos/resnet50_resnet101_fcos_mstrain_max_cls.py``): RetinaNet ``feat_weight=0.005, cls_weight=0.02``; GFL
``0.1, 0.05``; FCOS ``0.01, 0.05``; warm-up 500 iterations; see :data:`FRS_PRESETS`.
ATSS/DDOD/AutoAssign have no public FRS config; :data:`FRS_PRESETS` maps them to the closest
published head — an assumption: ATSS/DDOD -> GFL weights (GFL is ATSS's head and assigner with
a different loss: same 1 anchor x C score layout, so the channel-summed BCE has the same scale),
AutoAssign -> FCOS weights (anchor-free point head).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from ..inputs import DistillBatch

#: Public FRS weights per detector. ``retinanet``, ``gfl`` and ``fcos`` are the authors'
#: configs; ``atss``/``ddod`` (1 anchor x C scores, like GFL) reuse GFL's and ``autoassign``
#: (anchor-free point head) reuses FCOS's — an assumption, there is no public config.
FRS_PRESETS = {
    'retinanet': dict(feat_weight=0.005, cls_weight=0.02),
    'gfl': dict(feat_weight=0.1, cls_weight=0.05),
    'fcos': dict(feat_weight=0.01, cls_weight=0.05),
    'atss': dict(feat_weight=0.1, cls_weight=0.05),
    'ddod': dict(feat_weight=0.1, cls_weight=0.05),
    'autoassign': dict(feat_weight=0.01, cls_weight=0.05),
}


def frs_masks(teacher_cls_logits) -> list:
    """Per level (B, H, W) feature-richness score = max over anchors and classes of sigmoid."""
    return [t.detach().sigmoid().amax(dim=1) for t in teacher_cls_logits]


@MODELS.register_module()
class FRSLoss(nn.Module):
    """Feature-richness-score weighted feature + classification-score distillation.

    Args:
        student_channels / teacher_channels: FPN widths.
        num_levels: number of FPN levels (one adaptation conv each).
        feat_weight: weight of the feature term (default 0.005, RetinaNet public config).
        cls_weight: weight of the score term (default 0.02, RetinaNet public config).
        preset: optional key of :data:`FRS_PRESETS`; explicit weights override it.
        warmup_iters: linear warm-up length in iterations (500, public code).
        adapt_kernel: adaptation conv kernel size (3, public code).
        normalize: 'batch' (public code) or 'image'.

    Returns (forward): ``{'loss_frs_feat': scalar, 'loss_frs_cls': scalar}`` (the latter only
    when ``cls_weight != 0``).
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 num_levels: int = 5,
                 feat_weight: Optional[float] = None,
                 cls_weight: Optional[float] = None,
                 preset: Optional[str] = None,
                 warmup_iters: int = 500,
                 adapt_kernel: int = 3,
                 normalize: str = 'batch') -> None:
        super().__init__()
        if normalize not in ('batch', 'image'):
            raise ValueError(f'normalize must be "batch" or "image", got {normalize!r}')
        weights = dict(FRS_PRESETS['retinanet'])
        if preset is not None:
            if preset not in FRS_PRESETS:
                raise KeyError(f'unknown FRS preset {preset!r}; choose from {sorted(FRS_PRESETS)}')
            weights = dict(FRS_PRESETS[preset])
        self.feat_weight = weights['feat_weight'] if feat_weight is None else feat_weight
        self.cls_weight = weights['cls_weight'] if cls_weight is None else cls_weight
        self.warmup_iters = warmup_iters
        self.normalize = normalize
        self.num_levels = num_levels
        self.adapt = nn.ModuleList([
            nn.Conv2d(student_channels, teacher_channels, adapt_kernel, padding=adapt_kernel // 2)
            for _ in range(num_levels)
        ])

    def warmup_factor(self, cur_iter: Optional[int]) -> float:
        if cur_iter is None or self.warmup_iters <= 0 or cur_iter >= self.warmup_iters:
            return 1.0
        return max(float(cur_iter), 0.) / float(self.warmup_iters)

    def _reduce(self, weighted: Tensor, mask: Tensor) -> Tensor:
        """weighted (B, H, W) masked loss map, mask (B, H, W)."""
        num = weighted.flatten(1).sum(1)
        den = mask.flatten(1).sum(1)
        if self.normalize == 'batch':
            return num.sum() / den.sum().clamp(min=1e-6)
        return (num / den.clamp(min=1e-6)).mean()

    def forward(self, batch: DistillBatch, cur_iter: Optional[int] = None) -> Dict[str, Tensor]:
        if cur_iter is None:
            cur_iter = batch.cur_iter  # the distiller's global iteration
        if batch.teacher_cls_logits is None:
            raise ValueError('FRSLoss needs batch.teacher_cls_logits')
        use_cls = self.cls_weight != 0
        if use_cls and batch.student_cls_logits is None:
            raise ValueError('FRSLoss with cls_weight != 0 needs batch.student_cls_logits')
        n = min(len(batch.student.neck), self.num_levels, len(batch.teacher_cls_logits))
        masks = frs_masks(batch.teacher_cls_logits[:n])
        feat = cls = 0.
        for lvl in range(n):
            m = masks[lvl]
            s = self.adapt[lvl](batch.student.neck[lvl])
            t = batch.teacher.neck[lvl].detach()
            err = ((s - t) ** 2).sum(dim=1)
            feat = feat + self._reduce(err * m, m)
            if use_cls:
                t_prob = batch.teacher_cls_logits[lvl].detach().sigmoid()
                bce = F.binary_cross_entropy_with_logits(
                    batch.student_cls_logits[lvl], t_prob, reduction='none').sum(dim=1)
                cls = cls + self._reduce(bce * m, m)
        warm = self.warmup_factor(cur_iter)
        out = {'loss_frs_feat': self.feat_weight * warm * feat}
        if use_cls:
            out['loss_frs_cls'] = self.cls_weight * warm * cls
        return out
