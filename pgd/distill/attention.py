"""Spatial and channel attention maps of a feature map ``F`` (B, C, H, W).

PGD (paper Eq. 7) -- note the *sum* over channels and the *per-location* channel attention::

    P[i, j]    = H W  * softmax_{(i,j)} ( sum_k |F[k, i, j]| / tau )          -> (B, 1, H, W)
    A[k, i, j] = C    * softmax_k       ( |F[k, i, j]| / tau )                -> (B, C, H, W)

FGD (Yang et al., CVPR'22), which PGD builds on, uses channel *means* and a spatially pooled
channel attention::

    P_fgd[i, j] = H W * softmax_{(i,j)} ( mean_k |F[k, i, j]| / tau )         -> (B, 1, H, W)
    A_fgd[k]    = C   * softmax_k       ( mean_{(i,j)} |F[k, i, j]| / tau )   -> (B, C, 1, 1)

All functions compute in float32 (float64 inputs stay float64) and keep the autograd graph
(detach the input for teacher maps).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['spatial_attention', 'channel_attention', 'spatial_attention_fgd',
           'channel_attention_pooled']


def _prep(feat: Tensor) -> Tensor:
    if feat.dim() != 4:
        raise ValueError(f'expected a (B, C, H, W) feature map, got shape {tuple(feat.shape)}')
    return feat.abs() if feat.dtype == torch.float64 else feat.float().abs()


def spatial_attention(feat: Tensor, tau: float = 0.8) -> Tensor:
    """PGD spatial attention ``H W softmax_hw(sum_c |F| / tau)``: (B, C, H, W) -> (B, 1, H, W)."""
    a = _prep(feat)
    b, _, h, w = a.shape
    logits = a.sum(dim=1).reshape(b, h * w) / tau
    return (h * w * F.softmax(logits, dim=1)).reshape(b, 1, h, w)


def channel_attention(feat: Tensor, tau: float = 0.8) -> Tensor:
    """PGD per-location channel attention ``C softmax_c(|F| / tau)``: -> (B, C, H, W)."""
    a = _prep(feat)
    return a.shape[1] * F.softmax(a / tau, dim=1)


def spatial_attention_fgd(feat: Tensor, tau: float = 0.5) -> Tensor:
    """FGD spatial attention ``H W softmax_hw(mean_c |F| / tau)``: -> (B, 1, H, W)."""
    a = _prep(feat)
    b, _, h, w = a.shape
    logits = a.mean(dim=1).reshape(b, h * w) / tau
    return (h * w * F.softmax(logits, dim=1)).reshape(b, 1, h, w)


def channel_attention_pooled(feat: Tensor, tau: float = 0.5) -> Tensor:
    """FGD channel attention ``C softmax_c(mean_hw |F| / tau)``: -> (B, C, 1, 1)."""
    a = _prep(feat)
    c = a.shape[1]
    return (c * F.softmax(a.mean(dim=(2, 3)) / tau, dim=1))[..., None, None]
