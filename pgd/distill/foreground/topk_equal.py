"""``topkeq``: the top-K locations by quality, all with equal weight (PGD Tab. 5, "TopkEq").

Formula (``q`` the Eq. 1 quality, ``T_g`` the PGW candidate set)::

    T_g    = top-K locations of q_g jointly over all FPN levels     (K = 30, as PGW)
    I_g[n] = 1[n in T_g]
    M[n]   = max_g I_g[n] / #{m on level(n) of the image: max_g I_g[m] != 0}

``T_g`` is exactly PGW's selection (:func:`pgd.distill.pgw.topk_candidates`): with
``candidates='inside'`` the top-``min(K, #inside)`` inside locations (even if their quality is
0), with ``'all_then_mask'`` the public code's top-K of the raw quality intersected with the
box; ties go to the lower flattened index. Only PGW's Gaussian weighting is dropped.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from ..pgw import CANDIDATE_MODES, DEFAULT_CHUNK_ELEMS, topk_candidates
from .base import ForegroundStrategy, batch_geometry, out_dtype, register_strategy
from .quality import batch_quality

__all__ = ['TopkEqualStrategy', 'topk_selection']


@torch.no_grad()
def topk_selection(batch, xis: Sequence[float], k: int = 30, candidates: str = 'inside',
                   chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> List[Tensor]:
    """PGW's ``T_g`` as a (B, G, N) bool tensor per ``xi`` (quality shared across ``xi``)."""
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f'unknown candidate mode {candidates!r}; expected {CANDIDATE_MODES}')
    inside = batch_geometry(batch)[4]
    quals = batch_quality(batch, xis, inside_only=(candidates == 'inside'),
                          chunk_elems=chunk_elems)
    return [topk_candidates(q, inside, k, candidates) for q in quals]


def _check_k(k) -> int:
    if int(k) < 1:
        raise ValueError(f'k must be >= 1, got {k}')
    return int(k)


@register_strategy('topkeq')
class TopkEqualStrategy(ForegroundStrategy):
    """TopkEq strategy.

    Args:
        k: K (paper: 30, "to match our method").
        candidates: ``'inside'`` or ``'all_then_mask'`` (see :mod:`pgd.distill.pgw`).
        chunk_elems: memory bound of the quality computation.
    """

    uses_quality = True

    def __init__(self, k: int = 30, candidates: str = 'inside',
                 chunk_elems: int = DEFAULT_CHUNK_ELEMS):
        if candidates not in CANDIDATE_MODES:
            raise ValueError(f'unknown candidate mode {candidates!r}; expected {CANDIDATE_MODES}')
        self.k = _check_k(k)
        self.candidates = candidates
        self.chunk_elems = int(chunk_elems)

    @torch.no_grad()
    def per_gt(self, batch, xis: Sequence[float]) -> List[Tensor]:
        sels = topk_selection(batch, xis, self.k, self.candidates, self.chunk_elems)
        return [s.to(out_dtype(batch)) for s in sels]

    def _extra_repr(self) -> str:
        return f'k={self.k}, candidates={self.candidates!r}'
