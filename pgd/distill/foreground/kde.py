"""``kde``: kernel density estimate over PGW's top-K locations instead of one Gaussian (Tab. 5).

PGD Tab. 5 ("KDE"): PGW with the Gaussian MLE (Eq. 2-3) replaced by kernel density
estimation. For each GT, with ``T_g`` the PGW top-K set (K' = |T_g| points ``X_j``)::

    S_g    = 1/(K'-1) sum_{j in T_g} (X_j - mean)(X_j - mean)^T      (unbiased; 0 if K' = 1)
    H_g    = K'^(-2/(d+4)) S_g + r I = K'^(-1/3) S_g + r I           (Scott's rule, d = 2)
    D_g(x) = sum_{j in T_g} exp(-1/2 (x - X_j)^T H_g^-1 (x - X_j))   (Gaussian kernels)
    I_g[n] = 1[n in T_g] D_g(X_n) / max_{m in T_g} D_g(X_m)
    M[n]   = max_g I_g[n] / #{m on level(n) of the image: max_g I_g[m] != 0}

Choices:

* Bandwidth: Scott's rule per GT, exactly as ``scipy.stats.gaussian_kde`` (kernel covariance =
  unbiased data covariance times ``K'^(-1/3)``), so ``I_g`` equals
  ``gaussian_kde(X)(X) / max`` for non-degenerate point sets.
* The density is evaluated only at the selected points (0 elsewhere, like PGW) and scaled to
  a maximum of 1 per GT (the kernel normalisation constants cancel), so the densest selected
  point gets 1, like the centre of PGW's Gaussian.
* ``r = ridge`` (default :data:`pgd.distill.pgw.DEFAULT_RIDGE` = 0.01 px^2) keeps ``H_g``
  invertible for one point or collinear points; all differences then lie in the non-degenerate
  subspace, so its value does not matter there (same argument as PGW). A single selected
  point gets weight 1.
* Computed on a padded (B*G, K_max, K_max) pairwise tensor built from the selected pairs (no
  loops over images or GTs), in float64.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from ..pgw import CANDIDATE_MODES, DEFAULT_CHUNK_ELEMS, DEFAULT_RIDGE
from .base import ForegroundStrategy, batch_geometry, out_dtype, register_strategy
from .topk_equal import _check_k, topk_selection

__all__ = ['KDEStrategy', 'kde_importance']


@torch.no_grad()
def kde_importance(points: Tensor, selected: Tensor, ridge: float = DEFAULT_RIDGE) -> Tensor:
    """Peak-normalised Scott's-rule Gaussian KDE of the selected points, per (image, GT).

    Args:
        points: (N, 2) location centres.
        selected: (B, G, N) bool, the point set ``T_g`` of every (image, GT).
        ridge: px^2 added to the kernel covariance diagonal.

    Returns:
        (B, G, N) float64: ``D_g(X_n) / max_{T_g} D_g`` on selected locations, 0 elsewhere.
    """
    lead, num_n = selected.shape[:-1], selected.shape[-1]
    flat = selected.reshape(-1, num_n) != 0
    num_seg = flat.shape[0]
    out = torch.zeros(flat.shape, dtype=torch.float64, device=selected.device)
    seg, n = flat.nonzero(as_tuple=True)                     # sorted by (segment, location)
    if seg.numel() == 0:
        return out.reshape(*lead, num_n)
    cnt = torch.bincount(seg, minlength=num_seg)
    rank = torch.arange(seg.numel(), device=seg.device) - (torch.cumsum(cnt, 0) - cnt)[seg]
    k_max = int(cnt.max())
    pts = points.to(device=selected.device, dtype=torch.float64)[n]         # (P, 2)
    x = pts.new_zeros(num_seg, k_max, 2)
    valid = torch.zeros(num_seg, k_max, dtype=torch.bool, device=pts.device)
    x[seg, rank] = pts
    valid[seg, rank] = True
    # unbiased covariance and Scott's factor K'^(-1/3) (d = 2)
    kc = cnt.to(torch.float64).clamp(min=1)                                   # (S,)
    mean = x.sum(dim=1) / kc[:, None]
    d = (x - mean[:, None]) * valid[..., None]
    sxx = (d[..., 0] * d[..., 0]).sum(1)
    sxy = (d[..., 0] * d[..., 1]).sum(1)
    syy = (d[..., 1] * d[..., 1]).sum(1)
    scale = torch.where(cnt > 1, kc.pow(-1.0 / 3.0) / (kc - 1).clamp(min=1), torch.zeros_like(kc))
    a = scale * sxx + ridge
    b = scale * sxy
    c = scale * syy + ridge
    det = (a * c - b * b).clamp(min=ridge * ridge if ridge > 0 else torch.finfo(torch.float64).tiny)
    # pairwise squared Mahalanobis distances within each segment: (S, K, K)
    diff = x[:, :, None, :] - x[:, None, :, :]
    dx, dy = diff[..., 0], diff[..., 1]
    m = (c[:, None, None] * dx * dx - 2 * b[:, None, None] * dx * dy
         + a[:, None, None] * dy * dy) / det[:, None, None]
    dens = (torch.exp(-0.5 * m) * valid[:, None, :]).sum(-1) * valid         # (S, K)
    peak = dens.amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    out[seg, n] = (dens / peak)[seg, rank]
    return out.reshape(*lead, num_n)


@register_strategy('kde')
class KDEStrategy(ForegroundStrategy):
    """KDE strategy.

    Args:
        k: K of the top-K selection (PGW's, 30).
        candidates: ``'inside'`` or ``'all_then_mask'`` (see :mod:`pgd.distill.pgw`).
        ridge: px^2 added to the kernel covariance.
        chunk_elems: memory bound of the quality computation.
    """

    uses_quality = True

    def __init__(self, k: int = 30, candidates: str = 'inside', ridge: float = DEFAULT_RIDGE,
                 chunk_elems: int = DEFAULT_CHUNK_ELEMS):
        if candidates not in CANDIDATE_MODES:
            raise ValueError(f'unknown candidate mode {candidates!r}; expected {CANDIDATE_MODES}')
        if ridge < 0:
            raise ValueError(f'ridge must be >= 0, got {ridge}')
        self.k = _check_k(k)
        self.candidates = candidates
        self.ridge = float(ridge)
        self.chunk_elems = int(chunk_elems)

    @torch.no_grad()
    def per_gt(self, batch, xis: Sequence[float]) -> List[Tensor]:
        points = batch_geometry(batch)[0]
        sels = topk_selection(batch, xis, self.k, self.candidates, self.chunk_elems)
        return [kde_importance(points, s, self.ridge).to(out_dtype(batch)) for s in sels]

    def _extra_repr(self) -> str:
        return f'k={self.k}, candidates={self.candidates!r}, ridge={self.ridge:g}'
