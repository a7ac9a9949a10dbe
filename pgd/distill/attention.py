"""Spatial and channel attention maps of a feature map ``F`` (B, C, H, W).

PGD's spatial attention ``P`` and its *per-location* channel attention ``A``::

    P[i, j]    = H W  * softmax_{(i,j)} ( mean_k |F[k, i, j]| / tau )         -> (B, 1, H, W)
    A[k, i, j] = C    * softmax_k       ( |F[k, i, j]| / tau )                -> (B, C, H, W)

Mean or sum over channels in ``P``: the two sources disagree.

* The official code (ChenhongyiYang/PGD, ``mmdet/distillation/losses/pgd_cls.py``,
  ``PGDClsLoss.get_attention``: ``value.mean(axis=1)``) and the paper's own text ("we use
  spatial attention as defined in [FGD]", FGD uses the channel mean) take the **mean**. This is
  the default (``channel_reduce='mean'``): it produced the paper's numbers.
* The paper's Eq. 7 prints a **sum**. With C = 256 channels the sum is the mean times 256, i.e.
  the softmax temperature is effectively tau / 256: the attention collapses onto one to three
  locations per level. ``channel_reduce='sum'`` keeps this reading selectable
  (``PGDLoss(semantics='paper')``).

FGD (Yang et al., CVPR'22), which PGD builds on, uses channel *means* and a spatially pooled
channel attention::

    P_fgd[i, j] = H W * softmax_{(i,j)} ( mean_k |F[k, i, j]| / tau )         -> (B, 1, H, W)
    A_fgd[k]    = C   * softmax_k       ( mean_{(i,j)} |F[k, i, j]| / tau )   -> (B, C, 1, 1)

All functions compute in float32 (float64 inputs stay float64) and keep the autograd graph
(detach the input for teacher maps).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['CHANNEL_REDUCTIONS', 'spatial_attention', 'channel_attention', 'channel_softmax',
           'pgd_attention_maps', 'spatial_attention_fgd', 'channel_attention_pooled']


def _prep(feat: Tensor, rows_ok: bool = False) -> Tensor:
    if not (feat.dim() == 4 or (rows_ok and feat.dim() == 2)):
        expected = '(B, C, H, W) feature map or (Q, C) rows' if rows_ok else \
            '(B, C, H, W) feature map'
        raise ValueError(f'expected a {expected}, got shape {tuple(feat.shape)}')
    return feat.abs() if feat.dtype == torch.float64 else feat.float().abs()


#: How :func:`spatial_attention` pools ``|F|`` over channels (see the module docstring).
CHANNEL_REDUCTIONS = ('mean', 'sum')


def _spatial_from_abs(a: Tensor, tau: float, channel_reduce: str) -> Tensor:
    """``H W softmax_hw(reduce_c a / tau)`` of ``a = |F|`` (B, C, H, W) -> (B, 1, H, W)."""
    if channel_reduce not in CHANNEL_REDUCTIONS:
        raise ValueError(f'channel_reduce must be one of {CHANNEL_REDUCTIONS}, '
                         f'got {channel_reduce!r}')
    b, _, h, w = a.shape
    pooled = a.mean(dim=1) if channel_reduce == 'mean' else a.sum(dim=1)
    logits = pooled.reshape(b, h * w) / tau
    return (h * w * F.softmax(logits, dim=1)).reshape(b, 1, h, w)


def spatial_attention(feat: Tensor, tau: float = 0.8, channel_reduce: str = 'mean') -> Tensor:
    """PGD spatial attention ``H W softmax_hw(reduce_c |F| / tau)``: (B, C, H, W) -> (B, 1, H, W).

    ``channel_reduce='mean'`` is the official code's (and FGD's) definition, ``'sum'`` the
    paper's printed Eq. 7.
    """
    return _spatial_from_abs(_prep(feat), tau, channel_reduce)


def channel_softmax(feat: Tensor, tau: float = 0.8) -> Tensor:
    """``S = softmax_c(|F| / tau)``: PGD's channel attention without its factor ``C``
    (``A = C * S``), for callers that fold ``C`` into a scalar.

    ``feat`` is a (B, C, H, W) map or (Q, C) rows of one (the loss's reg branch): pass rows as
    2-D, not as (Q, C, 1, 1) -- torch's CPU softmax over dim 1 with trailing singleton dims
    takes a slow path (measured, 1,567 x 64 rows: forward 0.39 vs 0.07 ms, with backward
    1.16 vs 0.15 ms)."""
    return F.softmax(_prep(feat, rows_ok=True) / tau, dim=1)


def channel_attention(feat: Tensor, tau: float = 0.8) -> Tensor:
    """PGD per-location channel attention ``C softmax_c(|F| / tau)``: -> (B, C, H, W)."""
    return feat.shape[1] * channel_softmax(feat, tau)


def pgd_attention_maps(feat: Tensor, tau: float = 0.8,
                       channel_reduce: str = 'mean') -> Tuple[Tensor, Tensor]:
    """``(P, S)`` of one feature map from a single ``|F|``: the spatial attention of
    :func:`spatial_attention` (B, 1, H, W) and :func:`channel_softmax` (B, C, H, W).

    What the loss runs every step: ``|F|`` is taken once for both maps, and the constant ``C``
    is left to the caller to fold into a scalar or a (B, 1, H, W) weight instead of scaling a
    (B, C, H, W) tensor, forward and backward.
    """
    a = _prep(feat)
    return _spatial_from_abs(a, tau, channel_reduce), F.softmax(a / tau, dim=1)


def spatial_attention_fgd(feat: Tensor, tau: float = 0.5) -> Tensor:
    """FGD spatial attention ``H W softmax_hw(mean_c |F| / tau)``: -> (B, 1, H, W)."""
    return _spatial_from_abs(_prep(feat), tau, 'mean')


def channel_attention_pooled(feat: Tensor, tau: float = 0.5) -> Tensor:
    """FGD channel attention ``C softmax_c(mean_hw |F| / tau)``: -> (B, C, 1, 1)."""
    a = _prep(feat)
    c = a.shape[1]
    return (c * F.softmax(a.mean(dim=(2, 3)) / tau, dim=1))[..., None, None]
