"""Eq. 2-4 on dense (B, G, N) tensors: top-K candidates, Gaussian MLE, importance, and the
per-level normalisation.

These are the readable, public pieces (used by the dense implementation and by the ablation
strategies); the sparse engine reuses only the segment-wise Gaussian and the closed-form 2x2
Mahalanobis distance, so that both paths compute the same float64 numbers.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .defaults import CANDIDATE_MODES, DEFAULT_RIDGE, _work_dtype


def _topk_mask_low_index_ties(key: Tensor, k: int, floor: Optional[float] = None) -> Tensor:
    """Boolean mask of the k largest entries along the last dim, ties -> lower index first.

    If ``floor`` is given, rows whose k-th value is below ``floor`` select *all* entries at the
    threshold (callers use this when those entries are masked out afterwards anyway).
    """
    n = key.shape[-1]
    k = min(int(k), n)
    if k <= 0 or n == 0:
        return torch.zeros_like(key, dtype=torch.bool)
    thr = key.topk(k, dim=-1).values[..., -1:]
    above = key > thr
    at = key == thr
    out = above | at
    need = k - torch.count_nonzero(above, dim=-1).unsqueeze(-1)
    fix = torch.count_nonzero(at, dim=-1).unsqueeze(-1) > need     # more ties than free slots
    if floor is not None:
        fix &= thr >= floor
    rows = fix.reshape(-1).nonzero().squeeze(1)
    if rows.numel():
        at_r = at.reshape(-1, n).index_select(0, rows)
        keep = at_r & (at_r.cumsum(dim=-1) <= need.reshape(-1, 1).index_select(0, rows))
        out.reshape(-1, n)[rows] = above.reshape(-1, n).index_select(0, rows) | keep
    return out


@torch.no_grad()
def topk_candidates(q: Tensor, inside: Tensor, k: int = 30, mode: str = 'inside') -> Tensor:
    """Select ``T_g``: the top-K locations per (image, GT) over all levels.

    Args:
        q: (B, G, N) quality. For ``mode='all_then_mask'`` pass the *raw* quality
            (``quality_scores(..., inside_only=False)``) to reproduce the public code.
        inside: (B, G, N) bool inside-box mask (False for padded GTs).
        k: K.
        mode: ``'inside'`` -- top-min(K, #inside) among the inside locations (even q == 0);
            ``'all_then_mask'`` -- top-K over all locations, then ``& inside``.

    Returns:
        (B, G, N) bool; ties broken towards the lower location index.
    """
    if mode == 'inside':
        # outside -> -1 (< any quality); rows with fewer than K inside keep all inside ones
        return _topk_mask_low_index_ties(q.masked_fill(~inside, -1.0), k, floor=0.0) & inside
    if mode == 'all_then_mask':
        return _topk_mask_low_index_ties(q, k) & inside
    raise ValueError(f'unknown candidate mode {mode!r}; expected one of {CANDIDATE_MODES}')


def _segment_gaussian(seg: Tensor, x: Tensor, num_seg: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Gaussian MLE per segment from points ``x`` (S, 2) float64 with segment ids ``seg`` (S,).

    Returns mu (num_seg, 2), cov (num_seg, 3) = (sxx, sxy, syy) and the centred points (S, 2).
    Centred two-pass computation in float64; empty segments get zeros.
    """
    cnt = torch.bincount(seg, minlength=num_seg).to(torch.float64).clamp(min=1)[:, None]
    mu = x.new_zeros(num_seg, 2).index_add_(0, seg, x) / cnt
    d = x - mu[seg]
    prods = torch.stack([d[:, 0] * d[:, 0], d[:, 0] * d[:, 1], d[:, 1] * d[:, 1]], dim=-1)
    cov = x.new_zeros(num_seg, 3).index_add_(0, seg, prods) / cnt
    return mu, cov, d


@torch.no_grad()
def fit_gaussian(points: Tensor, selected: Tensor) -> Tuple[Tensor, Tensor]:
    """Gaussian MLE (Eq. 2) of the centres of the selected locations, per (image, GT).

    Args:
        points: (N, 2) centres (x, y).
        selected: (B, G, N) bool (non-zero = selected).

    Returns:
        mu: (B, G, 2) float64, the mean (0 where nothing is selected).
        sigma: (B, G, 2, 2) float64, the biased (1/K') MLE covariance, *without* the ridge
        (0 where fewer than 2 distinct points are selected).
    """
    lead = selected.shape[:-1]
    num_n = selected.shape[-1]
    flat = selected.reshape(-1, num_n)
    flat = flat if flat.dtype == torch.bool else flat != 0
    seg, n = flat.nonzero(as_tuple=True)
    pts = points.to(device=selected.device, dtype=torch.float64)
    mu, cov, _ = _segment_gaussian(seg, pts[n], flat.shape[0])
    sigma = torch.stack([cov[:, 0], cov[:, 1], cov[:, 1], cov[:, 2]], dim=-1)
    return mu.reshape(*lead, 2), sigma.reshape(*lead, 2, 2)


def _mahalanobis_sq(dx: Tensor, dy: Tensor, sxx: Tensor, sxy: Tensor, syy: Tensor,
                    ridge: float) -> Tensor:
    """(dx, dy) (Sigma + ridge I)^-1 (dx, dy)^T with a closed-form 2x2 inverse (float64)."""
    a = sxx + ridge
    c = syy + ridge
    det = (a * c - sxy * sxy).clamp(min=ridge * ridge)
    return (c * dx * dx - 2.0 * sxy * dx * dy + a * dy * dy) / det


@torch.no_grad()
def gaussian_importance(points: Tensor, mu: Tensor, sigma: Tensor, selected: Tensor,
                        ridge: float = DEFAULT_RIDGE, out_dtype: torch.dtype = None) -> Tensor:
    """Eq. 3: ``exp(-1/2 (X - mu)^T (Sigma + ridge I)^-1 (X - mu))`` on selected locations.

    Args:
        points: (N, 2); mu: (B, G, 2); sigma: (B, G, 2, 2); selected: (B, G, N) bool.
        ridge: added to the diagonal of ``sigma`` (px^2).
        out_dtype: result dtype (default float32, float64 for float64 points).

    Returns:
        (B, G, N) importance per GT, 0 where not selected.
    """
    out_dtype = out_dtype or _work_dtype(points)
    num_n = selected.shape[-1]
    flat = selected.reshape(-1, num_n)
    flat = flat if flat.dtype == torch.bool else flat != 0
    seg, n = flat.nonzero(as_tuple=True)
    pts = points.to(device=selected.device, dtype=torch.float64)
    mu = mu.reshape(-1, 2).to(torch.float64)
    sig = sigma.reshape(-1, 4).to(torch.float64)
    d = pts.index_select(0, n) - mu.index_select(0, seg)
    s = sig.index_select(0, seg)
    m = _mahalanobis_sq(d[:, 0], d[:, 1], s[:, 0], s[:, 1], s[:, 3], ridge)
    out = torch.zeros(flat.numel(), dtype=out_dtype, device=selected.device)
    out[seg * num_n + n] = torch.exp(-0.5 * m).to(out_dtype)
    return out.reshape(selected.shape)


@torch.no_grad()
def normalise_per_level(importance: Tensor, level_index: Tensor, num_levels: int) -> Tensor:
    """Eq. 4: divide by the number of non-zero entries of the same image and level.

    Args:
        importance: (B, N) non-negative.
        level_index: (N,) long.
        num_levels: L.

    Returns:
        (B, N) ``M``; levels without any non-zero entry stay 0.
    """
    level_index = level_index.to(importance.device)
    if level_index.dim() == 1 and level_index.numel() == importance.shape[-1] > 0:
        # fast path for the flattened-FPN layout (levels stored contiguously, in order):
        # per-level slices instead of index_add_ along dim 1 (slow on CPU); same result
        per_level = torch.bincount(level_index, minlength=num_levels)
        if per_level.numel() == num_levels and bool((level_index[1:] >= level_index[:-1]).all()):
            parts = importance.split(per_level.tolist(), dim=1)
            counts = torch.stack([torch.count_nonzero(p, dim=1) for p in parts], dim=1)
            return importance / torch.repeat_interleave(
                counts.to(importance.dtype).clamp(min=1), per_level, dim=1,
                output_size=importance.shape[-1])
    nz = (importance != 0).to(importance.dtype)
    counts = importance.new_zeros(importance.shape[0], num_levels)
    counts.index_add_(1, level_index, nz)
    return importance / counts.index_select(1, level_index).clamp(min=1)


def denormalise_per_level(mask: Tensor, level_sizes: Sequence[Tuple[int, int]]) -> Tensor:
    """Inverse of Eq. 4: the importance ``I`` (B, N) back from a mask ``M`` (B, N).

    ``M = I / nnz`` with ``nnz`` the number of non-zero entries of the image and level, which
    ``M`` has too, so ``I = M * nnz``. The official reg loss (``pgd_reg.py``) weights by ``I``
    itself; going through ``M`` keeps every foreground strategy interchangeable.
    """
    per_level = [h * w for h, w in level_sizes]
    parts = mask.split(per_level, dim=-1)
    counts = torch.stack([torch.count_nonzero(p, dim=-1) for p in parts], dim=-1)
    return mask * torch.repeat_interleave(counts.to(mask.dtype), torch.tensor(
        per_level, device=mask.device), dim=-1, output_size=mask.shape[-1])
