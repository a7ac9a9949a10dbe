"""Entry points of PGW: :func:`pgw_masks` (dispatch between the dense and sparse
implementations), the :class:`~pgd.distill.inputs.DistillBatch` adapter and the configurable
strategy class.

Separate so that the equation modules and the sparse engine do not depend on the batch
layout of the distillers.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .defaults import CANDIDATE_MODES, DEFAULT_CHUNK_ELEMS, DEFAULT_RIDGE
from .importance import (_topk_mask_low_index_ties, fit_gaussian, gaussian_importance,
                         normalise_per_level, topk_candidates)
from .locations import _grid_axes, batch_level_index, points_inside_boxes
from .quality import quality_scores_multi
from .sparse import _sparse_pgw, _sparse_pgw_all


# Device types on which impl='auto' may choose the sparse engine. Elsewhere it is dense: the
# sparse engine saves arithmetic at the price of many small kernels and host-side index work,
# which a GPU does not repay. Measured side by side in one run of benchmarks/bench_pgw.py on
# an NVIDIA H200 (2026-12-04, COCO-sized batch, A = 1): inside rule sparse 15.5 ms vs dense
# 7.3 ms, official rule 25.1 ms vs 6.8 ms; masks identical.
_AUTO_SPARSE_DEVICES = ('cpu', )


def _dense_pgw(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis, k, ridge,
               candidates, chunk_elems) -> List[Tensor]:
    inside = points_inside_boxes(points, gt_bboxes, gt_valid)
    quals = quality_scores_multi(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis,
                                 inside_only=(candidates == 'inside'), chunk_elems=chunk_elems)
    outs = []
    for q in quals:
        if candidates == 'all_then_mask':
            # the public code fits the Gaussian on all K candidates, inside the box or not,
            # and keeps the weight only of those inside (pgw_anchor_based.py, `w = w * valid`)
            fit_on = _topk_mask_low_index_ties(q, k)
            sel = fit_on & inside
        else:
            fit_on = sel = topk_candidates(q, inside, k, candidates)
        mu, sigma = fit_gaussian(points, fit_on)
        imp = gaussian_importance(points, mu, sigma, sel, ridge, out_dtype=q.dtype)
        outs.append(imp.amax(dim=1) if imp.shape[1] else imp.new_zeros(imp.shape[0],
                                                                        imp.shape[2]))
    return outs


@torch.no_grad()
def pgw_masks(cls_prob: Tensor, boxes: Tensor, points: Tensor, level_index: Tensor,
              num_levels: int, gt_bboxes: Tensor, gt_labels: Tensor, gt_valid: Tensor,
              xis: Sequence[float] = (0.8, 0.6), k: int = 30, candidates: str = 'inside',
              ridge: float = DEFAULT_RIDGE, impl: str = 'auto',
              chunk_elems: int = DEFAULT_CHUNK_ELEMS,
              level_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> List[Tensor]:
    """PGW masks ``M`` (Eq. 1-4) for several ``xi`` (e.g. ``xi_cls=0.8, xi_reg=0.6``).

    The probability gathering and IoUs are computed once and shared by all ``xi``.

    Args:
        cls_prob: (B, N, A, C) teacher sigmoid class probabilities.
        boxes: (B, N, A, 4) teacher decoded boxes, xyxy pixels.
        points: (N, 2) location centres (x, y), pixels.
        level_index: (N,) level of each location; num_levels: L.
        gt_bboxes: (B, G, 4); gt_labels: (B, G) (padding -1); gt_valid: (B, G) bool.
        xis: the balance ``xi`` of each mask.
        k: K of the top-K (paper: 30).
        candidates: ``'inside'`` (paper text) or ``'all_then_mask'`` (public code).
        ridge: px^2 added to the covariance diagonal (:data:`DEFAULT_RIDGE`).
        impl: ``'sparse'`` / ``'dense'`` / ``'auto'`` (on the CPU: sparse for 'inside' and for
            'all_then_mask' on a grid given ``level_sizes``, else dense; on any other device:
            dense, see :data:`_AUTO_SPARSE_DEVICES`). Every choice gives the same masks.
        chunk_elems: memory bound for the quality computation.
        level_sizes: optional ``[(H_l, W_l)]``; lets the sparse implementation enumerate the
            inside locations per grid rectangle (see :func:`inside_pairs`). Same result.

    Returns:
        list of (B, N) masks ``M``, one per xi (float32, float64 for float64 inputs).
    """
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f'unknown candidate mode {candidates!r}; expected {CANDIDATE_MODES}')
    if impl == 'auto' and cls_prob.device.type not in _AUTO_SPARSE_DEVICES:
        impl = 'dense'
    # only the official rule needs to know here whether the sparse path applies (the inside
    # rule's sparse path falls back to a dense inside test by itself)
    grid = (candidates != 'inside' and impl != 'dense' and level_sizes is not None
            and _grid_axes(points, level_sizes) is not None)
    if impl == 'auto':
        impl = 'sparse' if candidates == 'inside' or grid else 'dense'
    if impl == 'sparse' and candidates != 'inside' and not grid:
        raise ValueError("impl='sparse' with candidates='all_then_mask' needs grid points "
                         "and level_sizes")
    cls_prob, boxes, gt_bboxes = cls_prob.detach(), boxes.detach(), gt_bboxes.detach()
    points = points.detach().to(cls_prob.device)
    level_index = level_index.to(cls_prob.device)
    gt_valid = gt_valid.to(torch.bool)
    if impl == 'sparse' and candidates == 'all_then_mask':
        return _sparse_pgw_all(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis,
                               k, ridge, chunk_elems, level_sizes, level_index, num_levels)
    if impl == 'sparse':                 # normalises (Eq. 4) on the selected locations only
        return _sparse_pgw(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis, k,
                           ridge, chunk_elems, level_sizes, level_index, num_levels)
    if impl != 'dense':
        raise ValueError(f'unknown impl {impl!r}')
    imps = _dense_pgw(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis, k, ridge,
                      candidates, chunk_elems)
    return [normalise_per_level(i, level_index, num_levels) for i in imps]


def prediction_guided_weighting(cls_prob: Tensor, boxes: Tensor, points: Tensor,
                                level_index: Tensor, num_levels: int, gt_bboxes: Tensor,
                                gt_labels: Tensor, gt_valid: Tensor, k: int = 30,
                                xi: float = 0.8, candidates: str = 'inside',
                                ridge: float = DEFAULT_RIDGE, impl: str = 'auto',
                                level_sizes: Optional[Sequence[Tuple[int, int]]] = None
                                ) -> Tensor:
    """One PGW mask ``M`` (B, N) for a single ``xi``; see :func:`pgw_masks`."""
    return pgw_masks(cls_prob, boxes, points, level_index, num_levels, gt_bboxes, gt_labels,
                     gt_valid, xis=(xi, ), k=k, candidates=candidates, ridge=ridge,
                     impl=impl, level_sizes=level_sizes)[0]


def pgw_masks_from_batch(batch, xis: Sequence[float] = (0.8, 0.6), k: int = 30,
                         candidates: str = 'inside', ridge: float = DEFAULT_RIDGE,
                         impl: str = 'auto') -> List[Tensor]:
    """:func:`pgw_masks` on a :class:`~pgd.distill.inputs.DistillBatch`."""
    level_index = batch_level_index(batch.level_sizes, device=batch.teacher_cls_prob.device)
    return pgw_masks(batch.teacher_cls_prob, batch.teacher_boxes, batch.points, level_index,
                     len(batch.level_sizes), batch.gt_bboxes, batch.gt_labels, batch.gt_valid,
                     xis=xis, k=k, candidates=candidates, ridge=ridge, impl=impl,
                     level_sizes=batch.level_sizes)


class PredictionGuidedWeighting:
    """Configurable PGW foreground-mask provider.

    ``PredictionGuidedWeighting(k=30)(batch, xi)`` -> (B, N) ``M``, the same call signature as
    the other foreground strategies; :meth:`masks` computes several ``xi`` sharing the IoUs.
    """

    def __init__(self, k: int = 30, candidates: str = 'inside', ridge: float = DEFAULT_RIDGE,
                 impl: str = 'auto'):
        if candidates not in CANDIDATE_MODES:
            raise ValueError(f'unknown candidate mode {candidates!r}')
        self.k, self.candidates, self.ridge, self.impl = k, candidates, ridge, impl

    def masks(self, batch, xis: Sequence[float]) -> List[Tensor]:
        return pgw_masks_from_batch(batch, xis, k=self.k, candidates=self.candidates,
                                    ridge=self.ridge, impl=self.impl)

    def __call__(self, batch, xi: float) -> Tensor:
        return self.masks(batch, (xi, ))[0]

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(k={self.k}, candidates={self.candidates!r}, '
                f'ridge={self.ridge}, impl={self.impl!r})')
