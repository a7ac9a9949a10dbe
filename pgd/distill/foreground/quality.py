"""``quality``: PGW's quality score (Eq. 1) used directly as the foreground weight (Tab. 5).

Formula (``p`` teacher probabilities, ``box`` teacher boxes, ``A`` predictions per location)::

    I_g[n] = q_g[n] = 1[X_n strictly inside b_g]
                      * max_a p[n, a, c_g]^(1 - xi) * IoU(b_g, box[n, a])^xi
    M[n]   = max_g I_g[n] / #{m on level(n) of the image: max_g I_g[m] != 0}

i.e. every location inside the box is distilled, weighted by the teacher's quality; there is no
top-K selection and no Gaussian. Computed with :func:`pgd.distill.pgw.quality_scores_multi`
(shared for ``xi_cls`` and ``xi_reg``). Inside locations whose quality is exactly 0 get weight 0
and do not count in the per-level normalisation.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from ..pgw import DEFAULT_CHUNK_ELEMS, quality_scores_multi
from .base import ForegroundStrategy, register_strategy

__all__ = ['QualityStrategy', 'batch_quality']


def batch_quality(batch, xis: Sequence[float], inside_only: bool = True,
                  chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> List[Tensor]:
    """Eq. 1 quality (B, G, N) per ``xi`` for a DistillBatch (detached, teacher device)."""
    device = batch.teacher_cls_prob.device
    return quality_scores_multi(batch.teacher_cls_prob.detach(), batch.teacher_boxes.detach(),
                                batch.points.detach().to(device),
                                batch.gt_bboxes.detach().to(device),
                                batch.gt_labels.to(device),
                                batch.gt_valid.to(device=device, dtype=torch.bool), xis,
                                inside_only=inside_only, chunk_elems=chunk_elems)


@register_strategy('quality')
class QualityStrategy(ForegroundStrategy):
    """Quality strategy; no parameters besides the memory bound of the quality computation."""

    uses_quality = True

    def __init__(self, chunk_elems: int = DEFAULT_CHUNK_ELEMS):
        self.chunk_elems = int(chunk_elems)

    @torch.no_grad()
    def per_gt(self, batch, xis: Sequence[float]) -> List[Tensor]:
        return batch_quality(batch, xis, inside_only=True, chunk_elems=self.chunk_elems)
