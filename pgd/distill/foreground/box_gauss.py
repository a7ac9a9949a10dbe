"""``boxgauss``: a Gaussian centred on the GT box centre, sigma from the box size (TADF-style).

PGD Tab. 5 ("BoxGauss", after TADF): "a Gaussian distribution is used to weight the
distillation loss, where its mean is the centre of the GT box, and the standard deviation is
calculated from the box dimensions". Formula, for box ``b_g = (x1, y1, x2, y2)`` with centre
``(cx, cy)``, width ``w = x2 - x1`` and height ``h = y2 - y1``::

    sigma_x = sigma_ratio * w,   sigma_y = sigma_ratio * h        (default sigma_ratio = 1/6)
    I_g[n]  = 1[X_n strictly inside b_g]
              * exp(-(x_n - cx)^2 / (2 sigma_x^2) - (y_n - cy)^2 / (2 sigma_y^2))
    M[n]    = max_g I_g[n] / #{m on level(n) of the image: max_g I_g[m] != 0}

Choices (the PGD paper gives no constant, and the exact TADF constant was not checked here):

* ``sigma_ratio = 1/6`` puts the box border at 3 sigma from the centre (weight
  ``exp(-4.5) ~ 0.011`` at the border midpoints), i.e. the Gaussian "covers" the box; an
  axis-aligned (diagonal) covariance, since the box gives no orientation.
* The Gaussian is restricted to the locations inside the box, like every other foreground
  mask here (the outside is the background term ``N^cls`` of PGD); inside the box the weight
  is never exactly 0, so the per-level count equals the number of inside locations, as for
  ``box``. ``xi`` is ignored. ``sigma`` is clamped to >= 1e-6 px (degenerate boxes have no
  inside location anyway).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from .base import ForegroundStrategy, batch_geometry, out_dtype, register_strategy

__all__ = ['BoxGaussStrategy']


@register_strategy('boxgauss')
class BoxGaussStrategy(ForegroundStrategy):
    """BoxGauss strategy.

    Args:
        sigma_ratio: ``sigma_x = sigma_ratio * w``, ``sigma_y = sigma_ratio * h``.
    """

    def __init__(self, sigma_ratio: float = 1.0 / 6.0):
        if not sigma_ratio > 0:
            raise ValueError(f'sigma_ratio must be > 0, got {sigma_ratio}')
        self.sigma_ratio = float(sigma_ratio)

    @torch.no_grad()
    def per_gt(self, batch, xis: Sequence[float]) -> List[Tensor]:
        points, _, gt_bboxes, _, inside = batch_geometry(batch)
        pts = points.to(torch.float64)
        box = gt_bboxes.to(torch.float64)
        cx = (box[..., 0] + box[..., 2])[..., None] / 2                     # (B, G, 1)
        cy = (box[..., 1] + box[..., 3])[..., None] / 2
        sx = (self.sigma_ratio * (box[..., 2] - box[..., 0])).clamp(min=1e-6)[..., None]
        sy = (self.sigma_ratio * (box[..., 3] - box[..., 1])).clamp(min=1e-6)[..., None]
        e = ((pts[:, 0] - cx) / sx).pow(2) + ((pts[:, 1] - cy) / sy).pow(2)  # (B, G, N)
        w = torch.where(inside, torch.exp(-0.5 * e), torch.zeros((), dtype=e.dtype,
                                                                  device=e.device))
        return [w.to(out_dtype(batch))]

    def _extra_repr(self) -> str:
        return f'sigma_ratio={self.sigma_ratio:g}'
