"""``centre``: equal weight on a ``0.2H x 0.2W`` region at the middle of each GT box (Tab. 5).

Formula, for box ``b_g`` with centre ``(cx, cy)``, width ``w`` and height ``h`` and
``ratio = 0.2``::

    R_g[n] = 1[|x_n - cx| <= ratio * w / 2  and  |y_n - cy| <= ratio * h / 2]
    I_g[n] = R_g[n]                                   if some location satisfies R_g
           = 1[n == argmin_m ||X_m - (cx, cy)||]       otherwise (fallback)
    M[n]   = max_g I_g[n] / #{m on level(n) of the image: max_g I_g[m] != 0}

Choices:

* The region is closed (``<=``) and tested on the location centres ``X_n`` of all FPN levels
  jointly (like the inside test of ``box``/PGW).
* Fallback: when no location centre of any level falls in the region (small boxes, whose
  region is narrower than the stride), the single location nearest (Euclidean) to the box
  centre over all levels is used, so every valid GT gets at least one location; ties go to
  the lowest flattened index (finest level first, then row-major). The nearest location is
  taken even if it lies outside the (tiny) box.
* ``xi`` is ignored.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from .base import ForegroundStrategy, batch_geometry, out_dtype, register_strategy

__all__ = ['CentreStrategy']


@register_strategy('centre')
class CentreStrategy(ForegroundStrategy):
    """Centre strategy.

    Args:
        ratio: side of the central region as a fraction of the box side (paper: 0.2).
        fallback_nearest: give a GT whose region holds no location its nearest location.
    """

    def __init__(self, ratio: float = 0.2, fallback_nearest: bool = True):
        if not 0 < ratio <= 1:
            raise ValueError(f'ratio must be in (0, 1], got {ratio}')
        self.ratio = float(ratio)
        self.fallback_nearest = bool(fallback_nearest)

    @torch.no_grad()
    def per_gt(self, batch, xis: Sequence[float]) -> List[Tensor]:
        points, _, gt_bboxes, gt_valid, _ = batch_geometry(batch)
        pts = points.to(torch.float64)
        box = gt_bboxes.to(torch.float64)
        cx = (box[..., 0] + box[..., 2])[..., None] / 2                     # (B, G, 1)
        cy = (box[..., 1] + box[..., 3])[..., None] / 2
        hw = (self.ratio / 2) * (box[..., 2] - box[..., 0])[..., None]
        hh = (self.ratio / 2) * (box[..., 3] - box[..., 1])[..., None]
        dx = pts[:, 0] - cx                                                 # (B, G, N)
        dy = pts[:, 1] - cy
        region = (dx.abs() <= hw) & (dy.abs() <= hh) & gt_valid[..., None]
        if self.fallback_nearest and region.shape[-1] > 0:
            nearest = (dx * dx + dy * dy).argmin(dim=-1, keepdim=True)      # first minimum
            empty = gt_valid & ~region.any(dim=-1)                          # (B, G)
            fb = torch.zeros_like(region).scatter_(-1, nearest, True) & empty[..., None]
            region = region | fb
        return [region.to(out_dtype(batch))]

    def _extra_repr(self) -> str:
        return f'ratio={self.ratio:g}, fallback_nearest={self.fallback_nearest}'
