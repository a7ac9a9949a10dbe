"""The quality bound of the sparse engine: only the cells that can reach a top-K get their
quality computed (on large batches, one prediction per location).

Two exact bounds, each a measured speed choice whose result is tested to equal computing every
cell: the IoU bound ``q <= IoU^xi`` with a per-GT IoU threshold from a sample of cells
(:func:`_bounded_quality`), and, on grid locations, a box-area bound of the IoU that drops
whole (GT, level) rectangles before any per-cell work (:func:`_rect_bounded_quality`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .locations import _expand_rows, _rect_rows
from .quality import (_VEC_BLOCK, _cell_max_iou, _cell_quality, _quality_at,
                      _quality_at_positions)
from .topk import _group_threshold, _per_xi_segments, _segment_kth_floor

#: Relative margin of the IoU threshold of :func:`_bounded_quality`. It covers the rounding of
#: ``fl(fl(p^a) * fl(u^xi))`` (two powers of <= 1 ulp and a product: e < 3e-7 relative in
#: float32), raised to the power ``1 / xi <= 20``: ``(1 + e)^20 - 1 < 6e-6``, ~16x below the
#: margin, plus the float32 rounding of the threshold (6e-8). A larger margin only keeps a few
#: more cells.
_BOUND_MARGIN = 1e-4
#: The bound is used only for k-th qualities at least this large: far above the denormal range,
#: where the relative rounding bounds above would not hold.
_BOUND_MIN_Q = 1e-20
#: The bound is used only for xi in this range (``p^(1 - xi) <= 1`` needs xi <= 1; tiny xi
#: would make ``u^xi`` nearly constant and the margin ``(1 + e)^(1 / xi)`` large).
_BOUND_XI = (0.05, 1.0)
#: The bound is used only from this many cells, and from :data:`_BOUND_MIN_CELLS_PER_GT` per
#: (image, GT) with cells on average: below, its extra ops cost more than the gathers and
#: powers it saves, or its IoU threshold keeps most cells. Measured, 1 thread, on the mini
#: benchmark batches of ``bench_step_time.py`` (42k-69k cells, 440-770 per GT, random-weight
#: teachers whose IoU keeps 74-84 % of the cells; official rule, forced on / off, paired):
#: ATSS 4.5 -> 6.8 ms, GFL 7.2 -> 10.1 ms with the bound; on the COCO-sized batches (205k
#: inside cells, ~850 per GT; ~520k cells of the official rule) it pays (benchmarks/README.md).
#: Module constants, so the tests can force it.
_BOUND_MIN_CELLS = 1 << 17
_BOUND_MIN_CELLS_PER_GT = 640
#: Cells per group when the bound's sample is chosen by IoU (:func:`_group_threshold`): smaller
#: groups than the top-K pre-filter's give a smaller sample (COCO-sized inside rule, with the
#: rectangle bound, interleaved in one process: groups of 4 / 8 / 16 -> 12.3 / 10.4 / 10.5 ms).
_BOUND_GROUP = 8
#: Histogram bins over [0, 1] with which :func:`_bounded_quality` finds its two k-th-largest
#: lower bounds (:func:`_segment_kth_floor`: the sample's IoU threshold with these, the sampled
#: quality's with twice as many) instead of two segmented sorts. Their bin width loosens the
#: bounds slightly (COCO-sized inside rule: sample 19.8k -> 20.5k cells, kept cells 27.0k ->
#: 27.0k), the sorts cost more (there, interleaved in one process: 12.5-13.7 -> 11.7-12.8 ms).
_BOUND_BINS = 128


#: Relative margin of the box-area bound of the IoU (:func:`_rect_iou_bound`): the computed
#: IoU exceeds ``min(a_p, a_g) / max(a_p, a_g)`` of the computed areas by at most ~5 ulp
#: (overlap <= both areas and union >= the larger one, up to the rounding of one addition and
#: one subtraction; float32: 3e-7), ~30x below this margin.
_AREA_MARGIN = 1e-5
#: Relative margin of the k-th quality lower bound handed to the final top-K's pre-filter:
#: the sample's qualities are computed at other positions than the kept cells' (``pow`` may
#: differ by 1 ulp between torch's vectorised and scalar loops, ~3 ulp for the product of two
#: powers: 2e-7 in float32), ~50x below this margin.
_FLOOR_MARGIN = 1e-5
#: The sample of :func:`_rect_bounded_quality` is taken from the rectangles of a GT whose area
#: bound is at least this fraction of its best level's (the levels whose predicted boxes are
#: about the GT's size). A larger sample gives a tighter threshold for more IoUs (COCO-sized
#: inside rule, interleaved in one process: 0.5 / 0.35 / 0.25 / 0.15 / 0 (every rectangle) ->
#: 13.9 / 11.2 / 11.2 / 12.2 / 15.1 ms; 0.3 / 0.2 -> 10.4 / 10.6 ms).
_SAMPLE_LEVEL_FRACTION = 0.3


def _bound_applies(num_cells: int, seg_cells: Tensor, cls_prob: Tensor, xis: Sequence[float],
                   chunk_elems: int) -> bool:
    """Whether the bound is used (see the constants above): enough cells, per GT too, one
    prediction per location, chunks of whole vector blocks, every xi in range."""
    lo, hi = _BOUND_XI
    return (num_cells >= _BOUND_MIN_CELLS
            and num_cells >= _BOUND_MIN_CELLS_PER_GT * int((seg_cells > 0).sum())
            and cls_prob.shape[2] == 1 and chunk_elems % _VEC_BLOCK == 0
            and all(lo <= x <= hi for x in xis))


def _sample_threshold(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, u, seg_count, xis, k,
                      chunk_elems) -> Tuple[Tensor, Tensor]:
    """``(thr, floor)``: ``thr`` (num_seg,), the IoU below which no cell of a segment can be in
    its top-``k``, from the given cells (``seg``, ``bn``, their IoU ``u`` and per-segment
    counts), -inf where the sample gives no bound (then every cell is kept); ``floor``
    (X * num_seg,), a lower bound of each (xi, segment)'s k-th largest quality, ``t (1 -
    _FLOOR_MARGIN)`` (-inf where none), for the final top-K's pre-filter.

    ``q = fl(fl(p^(1-xi)) fl(u^xi)) <= u^xi (1 + e)`` with ``p <= 1`` and ``e`` a few ulp.
    ``t`` <= the k-th largest quality of a sample of at least k cells is <= the segment's k-th
    largest quality ``v_k``; the sample is the cells with ``u >=`` a lower bound of the k-th
    largest group maximum of ``u`` (:func:`_group_threshold`: at least k cells, the best by
    IoU) and ``t`` the histogram lower bound of their k-th quality (:func:`_segment_kth_floor`).
    Every top-k cell has ``q >= v_k >= t``, hence ``u >= (t / (1 + e))^(1/xi) >=
    t^(1/xi) (1 - margin)``; the threshold is the smallest over the xi. Segments with fewer
    than ``k`` sampled cells or with ``t < 1e-20`` (zero-quality cells may then be selected
    by index; NaN counts 0) get -inf.
    """
    num_x, num_seg = len(xis), seg_count.numel()
    if seg.numel() == 0:
        return (u.new_full((num_seg, ), float('-inf')),
                u.new_full((num_x * num_seg, ), float('-inf')))
    # IoU threshold 0 (fewer than k groups with a positive IoU): t would be 0, keep all
    u_thr = _group_threshold(seg, u, seg_count, k, _BOUND_GROUP, fill=float('inf'),
                             bins=_BOUND_BINS)
    u_thr = u_thr.masked_fill_(u_thr <= 0, float('inf'))
    sample = (u >= u_thr.index_select(0, seg)).nonzero().squeeze(1)
    s_seg = seg.index_select(0, sample)
    q_s = _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, s_seg, bn.index_select(0, sample),
                        xis, chunk_elems, iou=u.index_select(0, sample))
    q_s = torch.nan_to_num_(q_s, nan=0.0).clamp_(min=0)
    # all xi at once (segments x * num_seg + s); -1 where fewer than k cells were sampled
    t = _segment_kth_floor(_per_xi_segments(s_seg, num_x, num_seg), q_s.view(-1),
                           num_x * num_seg, k, 2 * _BOUND_BINS, fill=-1.0).view(num_x, num_seg)
    ok = t >= _BOUND_MIN_Q
    inv_xi = 1.0 / torch.tensor(xis, dtype=torch.float64, device=seg.device)[:, None]
    thr = t.to(torch.float64).pow(inv_xi).mul_(1.0 - _BOUND_MARGIN)
    floor = t.mul(1.0 - _FLOOR_MARGIN).masked_fill_(~ok, float('-inf')).view(-1)
    return thr.masked_fill_(~ok, float('-inf')).amin(dim=0).to(u.dtype), floor


def _bounded_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, seg_count, xis, k,
                     chunk_elems):
    """Quality (X, C) of only the cells that can be in a top-``k`` of their segment.

    Returns ``(cand, qual, floor)``: ``cand`` (C,) ascending indices into the cells (None =
    all cells), ``qual`` (X, C) their quality per xi, bit-identical to :func:`_cell_quality`,
    ``floor`` the k-th quality lower bounds of :func:`_sample_threshold` (None without the
    bound).
    The IoU ``u`` of every cell is computed, the threshold taken from a sample of them
    (:func:`_sample_threshold`); only the cells with ``u`` above it get their probability
    gathered and their powers computed (~5 % of the official rule's cells, ~12 % of the
    inside cells on the COCO-sized benchmark; below :data:`_BOUND_MIN_CELLS_PER_GT` cells per
    GT the plain computation is faster), reusing ``u``. The kept cells stay in their original
    order, so their top-k -- ties included -- is the top-k of all cells.
    """
    if not _bound_applies(seg.numel(), seg_count, cls_prob, xis, chunk_elems):
        return None, _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis,
                                   chunk_elems), None
    u = _cell_max_iou(boxes, gt_bboxes, seg, bn, chunk_elems)          # (P,), NaN -> 0
    thr, floor = _sample_threshold(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, u,
                                   seg_count, xis, k, chunk_elems)
    cand = (u >= thr.index_select(0, seg)).nonzero().squeeze(1)
    return cand, _quality_at(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis, cand,
                             chunk_elems, iou=u), floor


def _rect_iou_bound(boxes: Tensor, gt_bboxes: Tensor,
                    level_sizes: Sequence[Tuple[int, int]]) -> Tensor:
    """(B * G * L,) float64, ordered (image, GT, level): an upper bound of the IoU of GT g
    with any prediction of image b on level l, ``min(1, A_max / a_g, a_g / A_min)``.

    For positive areas ``IoU <= min(a_p, a_g) / max(a_p, a_g)`` (overlap <= the smaller area,
    union >= the larger); ``A_min`` / ``A_max`` are the smallest / largest positive predicted
    area of the level (a box without a positive area, or NaN, has IoU 0 with every GT). The
    areas are those the IoU kernels compute (mmdet's ``(x2 - x1) * (y2 - y1)``, A = 1).
    """
    num_b, num_g = gt_bboxes.shape[:2]
    dt = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    bx = boxes.reshape(-1, 4).to(dt)
    area = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])                     # (B * N,)
    sizes = [h * w for h, w in level_sizes]

    def level_max(t: Tensor) -> Tensor:                                      # -> (B, L)
        return torch.stack([p.amax(1) for p in t.view(num_b, -1).split(sizes, 1)], 1)

    # per (image, level): the largest and the smallest positive area, each clamped after the
    # reduction (max(clamp(x)) = clamp(max(x))). The smallest is one over the largest
    # reciprocal: non-positive areas have a reciprocal <= 0 or -inf and do not count, a +0
    # area's is +inf (then no bound from below); the two roundings are far inside
    # _AREA_MARGIN. A NaN box makes its level's bounds NaN: nothing is dropped there.
    a_max = level_max(area).clamp_(min=0)
    a_min = level_max(torch.reciprocal(area)).clamp_(min=0).reciprocal_()
    gt = gt_bboxes.reshape(num_b, num_g, 4).to(dt)
    a_g = ((gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])).double()[..., None]
    bound = torch.minimum(a_max.double()[:, None] / a_g, a_g / a_min.double()[:, None])
    return bound.clamp_(max=1.0).reshape(-1)                  # NaN (NaN GT) stays NaN


def _rect_bounded_quality(cls_prob, boxes, gt_bboxes, gt_labels, rects: dict,
                          level_sizes: Sequence[Tuple[int, int]], xis, k, chunk_elems,
                          sample_rects: Optional[Callable[[], dict]] = None
                          ) -> Optional[Tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The cells of the grid rectangles ``rects`` (``locations._grid_rects``) that can be in a
    top-``k`` of their segment, with their quality: ``(seg, bn, qual, floor)`` -- the same
    cells, in the same order and with bit-identical quality (X, C), as
    :func:`_bounded_quality` keeps from all cells, and the k-th quality lower bounds of
    :func:`_sample_threshold` -- or None where the bound is not used (:func:`_bound_applies`).

    The IoU threshold comes from a sample of the cells of each GT's best levels by the
    box-area bound (:func:`_rect_iou_bound`), taken from the rectangles ``sample_rects()``
    returns if given (indexed like ``rects``, e.g. the inside ones for the official rule's
    widened ones; only built where the bound applies); a rectangle whose bound (with its
    margin) is below the threshold holds no cell above it, so only the cells of the other
    rectangles are enumerated and get their IoU (COCO-sized inside rule: ~25 % of the cells;
    the big GTs' fine levels, whose predicted boxes are far smaller than the GT, go). The last 64
    cells of the full enumeration are enumerated too, for :func:`_quality_at_positions`.
    """
    num_l = rects['num_l']
    cells = rects['rows'] * rects['width']                              # (B * G * L,)
    num_cells = int(cells.sum())
    seg_cells = cells.view(-1, num_l).sum(1)
    if not _bound_applies(num_cells, seg_cells, cls_prob, xis, chunk_elems):
        return None
    bound = _rect_iou_bound(boxes, gt_bboxes, level_sizes)
    src = rects if sample_rects is None else sample_rects()
    src_cells = src['rows'] * src['width']
    best = bound.nan_to_num(nan=1.0).masked_fill(src_cells == 0, -1.0).view(-1, num_l)
    sampled = (best >= _SAMPLE_LEVEL_FRACTION * best.amax(1, keepdim=True)).view(-1)
    sampled &= src_cells > 0
    a_seg, a_bn = _expand_rows(*_rect_rows(src, src['rows'] * sampled))
    a_u = _cell_max_iou(boxes, gt_bboxes, a_seg, a_bn, chunk_elems)
    thr, floor = _sample_threshold(cls_prob, boxes, gt_bboxes, gt_labels, a_seg, a_bn, a_u,
                                   (src_cells * sampled).view(-1, num_l).sum(1), xis, k,
                                   chunk_elems)
    # drop a rectangle only where its bound is surely below the threshold (NaN: kept)
    hopeless = bound.mul(1.0 + _AREA_MARGIN) < thr.double().repeat_interleave(num_l)
    seg, bn, pos = _expand_rows(*_rect_rows(rects, rects['rows'] * ~hopeless, with_pos=True))
    u = _cell_max_iou(boxes, gt_bboxes, seg, bn, chunk_elems)
    keep = (u >= thr.index_select(0, seg)).nonzero().squeeze(1)
    seg, bn, pos, u = (t.index_select(0, keep) for t in (seg, bn, pos, u))
    # the last min(64, num_cells) cells of the full enumeration: from the runs of the last
    # rectangles with cells
    tail0 = max(0, num_cells - _VEC_BLOCK)
    r_seg, r_bn, r_w, r_pos = _rect_rows(
        rects, rects['rows'] * (torch.cumsum(cells, 0) > tail0), with_pos=True)
    last = (r_pos + r_w > tail0).nonzero().squeeze(1)
    t_seg, t_bn, t_pos = _expand_rows(*(x.index_select(0, last) for x in (r_seg, r_bn, r_w,
                                                                         r_pos)))
    in_tail = (t_pos >= tail0).nonzero().squeeze(1)
    t_seg, t_bn = t_seg.index_select(0, in_tail), t_bn.index_select(0, in_tail)
    t_u = _cell_max_iou(boxes, gt_bboxes, t_seg, t_bn, chunk_elems)
    qual = _quality_at_positions(cls_prob, boxes, gt_bboxes, gt_labels, xis, chunk_elems,
                                 num_cells, seg, bn, u, pos, t_seg, t_bn, t_u)
    # a sample from other rectangles bounds the k-th quality less tightly than the top-K's
    # own group maxima do (official rule, paired: 24.4 ms without it, 25.6 ms with it)
    return seg, bn, qual, (floor if sample_rects is None else None)
