"""``box``: equal weight at every location inside a GT box (FGD / DeFeat foreground; PGD Tab. 5).

Formula::

    I_g[n] = 1[X_n strictly inside b_g]
    M[n]   = max_g I_g[n] / #{m on level(n) of the image: max_g I_g[m] != 0}

so each level's foreground locations share weight 1 equally. ``xi`` is ignored. A GT whose box
contains no location centre (tiny box) contributes nothing, as with PGW's ``'inside'`` rule.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from .base import ForegroundStrategy, batch_geometry, out_dtype, register_strategy

__all__ = ['BoxStrategy']


@register_strategy('box')
class BoxStrategy(ForegroundStrategy):
    """Box strategy; no parameters."""

    @torch.no_grad()
    def per_gt(self, batch, xis: Sequence[float]) -> List[Tensor]:
        inside = batch_geometry(batch)[4]
        return [inside.to(out_dtype(batch))]
