"""The tuned sparse engine: PGW masks (Eq. 1-4) without any (B, G, N) tensor.

Only (image, GT, location) cells that can matter are materialised (the inside cells, or the
cells within reach of the predicted boxes for the official candidate rule), and the top-K is a
segmented sort over them (package docstring, ``impl='sparse'``). Kept apart from the readable
equations because almost every line here is a measured speed choice; its results are tested to
be exactly those of the dense implementation.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .defaults import _work_dtype
from .importance import _mahalanobis_sq, _segment_gaussian
from .locations import _expand_rows, _grid_rows, _inside_cells
from .quality import _cell_max_iou, _cell_quality
from .topk import _group_threshold, _segment_kth_floor, _segment_topk, _stable_argsort

#: The sparse path computes the quality in blocks of at most this many (pair, prediction)
#: elements: its temporaries (~0.25-0.5 MB) are then recycled by the allocator instead of being
#: returned to and re-faulted from the OS, which cost up to half of its CPU time with glibc
#: malloc (measured on the COCO-sized benchmark: 28 -> 17 ms, ~4,400 -> 0 page faults).
SPARSE_CHUNK_ELEMS = 1 << 16
#: With A = 1, half of that: the (rows, 4) box temporaries of a block then stay in a 1 MB L2
#: cache (measured on that benchmark: ~1.5-2.5 ms less of ~20 ms; no gain for A = 9).
SPARSE_CHUNK_ELEMS_A1 = 1 << 15


def _sparse_chunk(cls_prob: Tensor, chunk_elems: int) -> int:
    """Block size of the per-cell quality / IoU loops (see the two constants above)."""
    return min(chunk_elems, SPARSE_CHUNK_ELEMS if cls_prob.shape[2] > 1 else SPARSE_CHUNK_ELEMS_A1)


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
#: powers it saves, or its IoU threshold keeps most cells (measured, 1 thread, since the
#: sample's k-th value is one segmented sort and the kept cells reuse the IoU: the mini
#: benchmark batches of ``bench_step_time.py``, 42k-69k cells, 440-770 per GT, random-weight
#: teachers whose IoU keeps 74-84 % of the cells: ATSS 4.6 -> 6.2 ms, GFL 6.8 -> 10.1 ms with
#: the bound; COCO-sized inside rule, 205k cells, ~850 per GT: 15.9 -> 12.9 ms; COCO-sized
#: official rule, ~520k cells, ~2,200 per GT: 46 -> 37 ms when it was introduced). Module
#: constants, so the tests can force it.
_BOUND_MIN_CELLS = 1 << 17
_BOUND_MIN_CELLS_PER_GT = 640
#: Cells per group when the bound's sample is chosen by IoU (:func:`_group_threshold`): smaller
#: groups than the top-K pre-filter's give a smaller sample for a slightly larger sort (COCO-sized
#: inside rule, interleaved in one process: 8 -> 11.2-12.0 ms, 16 -> 11.6-13.7 ms, 4 or 32
#: slower; official rule equal).
_BOUND_GROUP = 8
#: Histogram bins over [0, 1] with which :func:`_bounded_quality` finds its two k-th-largest
#: lower bounds (:func:`_segment_kth_floor`: the sample's IoU threshold with these, the sampled
#: quality's with twice as many) instead of two segmented sorts. Their bin width loosens the
#: bounds slightly (COCO-sized inside rule: sample 19.8k -> 20.5k cells, kept cells 27.0k ->
#: 27.0k), the sorts cost more (there, interleaved in one process: 12.5-13.7 -> 11.7-12.8 ms).
_BOUND_BINS = 128


def _per_xi_segments(seg: Tensor, num_x: int, num_seg: int) -> Tensor:
    """(X * P,): the cells of mask ``x`` as segments ``x * num_seg + seg`` -- one segmented
    op then serves every xi (still non-decreasing, each xi's cells in their own order)."""
    return (seg + (torch.arange(num_x, device=seg.device) * num_seg)[:, None]).view(-1)


def _bounded_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, seg_count, xis, k,
                     chunk_elems):
    """Quality (X, C) of only the cells that can be in a top-``k`` of their segment.

    Returns ``(cand, qual)``: ``cand`` (C,) ascending indices into the cells (None = all
    cells), ``qual`` (X, C) their quality per xi, bit-identical to :func:`_cell_quality`.

    Exact upper bound: ``q = fl(fl(p^(1-xi)) fl(u^xi)) <= u^xi (1 + e)`` with ``p <= 1``,
    ``u`` the IoU (max over A, :func:`_cell_max_iou`) and ``e`` a few ulp. Lower bound of the
    k-th largest quality ``v_k`` of a segment: ``t`` <= the k-th largest quality of a sample
    of its cells (any sample of at least k cells: ``v_k >= t``; ``t`` is its histogram lower
    bound, :func:`_segment_kth_floor`). The sample is the cells with ``u >=`` a lower bound of
    the k-th largest group maximum of ``u`` (:func:`_group_threshold`: at least k cells, the
    best by IoU; ~85 per GT on the COCO-sized benchmark). Every top-k cell has
    ``q >= v_k >= t``, hence ``u >= (t / (1 + e))^(1/xi) >= t^(1/xi) (1 - margin)``; only
    the cells above that IoU threshold (the smallest over the xi) get their probability
    gathered and their powers computed (~5 % of the official rule's cells, ~12 % of the
    inside cells on that benchmark; below :data:`_BOUND_MIN_CELLS_PER_GT` cells per GT the
    plain computation is faster). The kept cells' IoU is reused from ``u``. Segments with
    fewer than ``k`` sampled cells or with ``t < 1e-20``
    (zero-quality cells may then be selected by index; NaN counts 0) keep all their cells.
    The kept cells stay in their original order, so their top-k -- ties included -- is the
    top-k of all cells.
    """
    num_x, num_seg = len(xis), seg_count.numel()
    lo, hi = _BOUND_XI
    dense_enough = seg.numel() >= _BOUND_MIN_CELLS_PER_GT * int((seg_count > 0).sum())
    if (seg.numel() < _BOUND_MIN_CELLS or not dense_enough or cls_prob.shape[2] != 1
            or chunk_elems % _VEC_BLOCK or not all(lo <= x <= hi for x in xis)):
        return None, _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis,
                                   chunk_elems)
    u = _cell_max_iou(boxes, gt_bboxes, seg, bn, chunk_elems)          # (P,), NaN -> 0
    # IoU threshold 0 (fewer than k groups with a positive IoU): t would be 0, keep all
    u_thr = _group_threshold(seg, u, seg_count, k, _BOUND_GROUP, fill=float('inf'),
                             bins=_BOUND_BINS)
    u_thr = u_thr.masked_fill_(u_thr <= 0, float('inf'))
    sample = (u >= u_thr.index_select(0, seg)).nonzero().squeeze(1)
    s_seg = seg.index_select(0, sample)
    q_s = _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, s_seg, bn.index_select(0, sample),
                        xis, chunk_elems, iou=u.index_select(0, sample))
    q_s = torch.nan_to_num_(q_s, nan=0.0).clamp_(min=0)
    # lower bound of the k-th largest sampled quality per (xi, segment), all xi at once
    # (segments x * num_seg + s); -1 where fewer than k cells were sampled
    t = _segment_kth_floor(_per_xi_segments(s_seg, num_x, num_seg), q_s.view(-1),
                           num_x * num_seg, k, 2 * _BOUND_BINS, fill=-1.0).view(num_x, num_seg)
    ok = t >= _BOUND_MIN_Q
    inv_xi = 1.0 / torch.tensor(xis, dtype=torch.float64, device=seg.device)[:, None]
    thr = t.to(torch.float64).pow(inv_xi).mul_(1.0 - _BOUND_MARGIN)
    thr = thr.masked_fill_(~ok, float('-inf')).amin(dim=0).to(u.dtype)     # (num_seg,)
    cand = (u >= thr.index_select(0, seg)).nonzero().squeeze(1)
    return cand, _quality_at(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis, cand,
                             chunk_elems, iou=u)


#: torch's CPU elementwise loops run blocks of 2 vector widths (<= 32 float32 on AVX-512) and
#: a scalar loop for the rest of a tensor, and ``pow`` differs by up to 1 ulp between the two.
_VEC_BLOCK = 64


def _quality_at(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis, cells, chunk_elems,
                iou=None):
    """``_cell_quality(all cells)[:, cells]`` bit for bit, computing only ``cells`` (ascending).

    ``pow`` is not position-independent on CPU (vectorised blocks vs the scalar remainder of
    each tensor, up to 1 ulp apart, which can reorder tied qualities). The full computation
    runs chunks of ``chunk_elems`` cells (a multiple of :data:`_VEC_BLOCK`), so only cells among
    the last 64 can fall in a scalar remainder. Here the other requested cells are padded to a
    multiple of 64 (all vectorised, as there), and the last 64 cells are recomputed behind
    ``L mod 64`` dummy cells, ``L`` the length of the last full chunk, so each of them sits at
    the same distance from a chunk end as in the full computation. Requires A = 1. ``iou``
    (all cells, optional): their IoU from :func:`_cell_max_iou`, gathered instead of
    recomputed (IoU is exactly rounded arithmetic, the same in every position).
    """
    num_cells = seg.numel()
    tail0 = max(0, num_cells - _VEC_BLOCK)
    last_len = num_cells - chunk_elems * ((num_cells - 1) // chunk_elems)
    front = cells[cells < tail0]
    n_tail = num_cells - tail0
    idx = torch.cat([front, front.new_zeros((-front.numel()) % _VEC_BLOCK),
                     front.new_zeros((last_len - n_tail) % _VEC_BLOCK),
                     torch.arange(tail0, num_cells, device=cells.device)])
    q = _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg.index_select(0, idx),
                      bn.index_select(0, idx), xis, chunk_elems,
                      iou=None if iou is None else iou.index_select(0, idx))
    pos_tail = idx.numel() - n_tail + (cells[cells >= tail0] - tail0)
    return q.index_select(1, torch.cat([torch.arange(front.numel(), device=cells.device),
                                        pos_tail]))


def _normalise_at(out: Tensor, pos: Tensor, level_index: Tensor, num_levels: int,
                  num_n: int) -> Tensor:
    """:func:`normalise_per_level` of the flat (M * N,) ``out`` (in place), given positions
    ``pos`` (duplicates allowed) outside of which ``out`` is 0.

    Same values (the same division by the same count), but it only touches the few selected
    positions instead of making several passes over all M * N locations. Each distinct
    position is counted once: every occurrence writes its own tag ``-1 - i`` into ``out``
    itself (exact in float32 below 2^24 positions; no M * N scratch array, whose fresh pages
    would page-fault) and the occurrence that reads its own tag back represents the position;
    the normalised values are written over the tags afterwards.
    """
    num = pos.numel()
    if num == 0:
        return out
    vals = out.index_select(0, pos)
    occ = torch.arange(num, device=pos.device)
    if num < (1 << 24):
        tag = (-1 - occ).to(out.dtype)
        first = out.index_put_((pos, ), tag).index_select(0, pos) == tag
    else:
        owner = torch.empty(out.numel(), dtype=torch.long, device=pos.device)
        first = owner.index_put_((pos, ), occ).index_select(0, pos) == occ
    img = torch.div(pos, num_n, rounding_mode='floor')
    key = img * num_levels + level_index.index_select(0, pos - img * num_n)
    counts = torch.bincount(key[first & (vals != 0)],
                            minlength=out.numel() // num_n * num_levels)
    div = counts.to(out.dtype).clamp(min=1).index_select(0, key)
    return out.index_put_((pos, ), vals / div)       # duplicates write the same value


def _sparse_pgw(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis, k, ridge,
                chunk_elems, level_sizes, level_index, num_levels) -> List[Tensor]:
    """PGW masks (B, N) per xi (Eq. 1-4), candidates='inside', working on inside cells."""
    num_b, num_g = gt_bboxes.shape[:2]
    num_n = points.shape[0]
    num_seg = num_b * num_g
    dt = _work_dtype(cls_prob)
    if num_seg == 0 or k <= 0:
        return [cls_prob.new_zeros((num_b, num_n), dtype=dt) for _ in xis]
    seg, bn, seg_count = _inside_cells(points, gt_bboxes, gt_valid, level_sizes)
    num_x, num_cells = len(xis), seg.numel()
    out = cls_prob.new_zeros((num_x * num_b * num_n, ), dtype=dt)
    if num_cells == 0:
        return list(out.view(num_x, num_b, num_n))
    cand, qual = _bounded_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, seg_count,
                                  xis, k, _sparse_chunk(cls_prob, chunk_elems))   # (X, P')
    if cand is not None:                # only the cells that can make a top-K from here on
        seg, bn = seg.index_select(0, cand), bn.index_select(0, cand)
        seg_count, num_cells = torch.bincount(seg, minlength=num_seg), cand.numel()
    # All xi at once: the cells of mask x form the segments x * num_seg + (b * G + g), so
    # the top-K, the Gaussian fit and the normalisation run once over X * P cells (one set of
    # ops instead of one per xi, and sorts large enough for torch's radix sort). Cells keep
    # their order inside a segment, so ties and summation orders are those of one xi alone.
    seg_x = _per_xi_segments(seg, num_x, num_seg)
    chosen = _segment_topk(seg_x, qual.view(-1), seg_count.repeat(num_x), k)
    s_seg = seg_x.index_select(0, chosen)
    s_x = torch.div(chosen, num_cells, rounding_mode='floor')
    s_bn = bn.index_select(0, chosen - s_x * num_cells)
    s_n = s_bn - torch.div(s_bn, num_n, rounding_mode='floor') * num_n
    _, cov, d = _segment_gaussian(s_seg, points.to(torch.float64).index_select(0, s_n),
                                  num_x * num_seg)
    c = cov.index_select(0, s_seg)
    m = _mahalanobis_sq(d[:, 0], d[:, 1], c[:, 0], c[:, 1], c[:, 2], ridge)
    imp = torch.exp(-0.5 * m).to(dt)
    pos = s_x * (num_b * num_n) + s_bn                  # flat (x, b, n)
    out.scatter_reduce_(0, pos, imp, reduce='amax', include_self=True)     # max over GTs
    _normalise_at(out, pos, level_index, num_levels, num_n)                 # Eq. 4
    return list(out.view(num_x, num_b, num_n))


def _prediction_reach(boxes: Tensor, points: Tensor,
                      level_sizes: Sequence[Tuple[int, int]]) -> Tensor:
    """(B, L): how far the predicted boxes of image b on level l reach from their location.

    Every prediction of location n lies in the square ``X_n +- reach``; so a location farther
    than ``reach`` outside a GT box has IoU 0, hence quality 0, with that GT. NaN boxes (quality
    NaN, counted as 0) are ignored.
    """
    num_b, num_n = boxes.shape[:2]
    # (box - centre) * (-1, -1, 1, 1) = (px - x1, py - y1, x2 - px, y2 - py) exactly (IEEE
    # subtraction is antisymmetric): two whole-tensor ops instead of four strided ones + stack
    ctr = points.to(boxes.dtype)[:, None, :].repeat(1, 1, 2)                   # (N, 1, 4)
    sign = boxes.new_tensor([-1.0, -1.0, 1.0, 1.0])
    ext = (boxes - ctr).mul_(sign).nan_to_num_(nan=0.0).view(num_b, num_n, -1)
    out, start = [], 0
    for h, w in level_sizes:
        part = ext[:, start:start + h * w]
        out.append(part.amax(dim=(1, 2)) if part.numel() else ext.new_zeros(num_b))
        start += h * w
    return torch.stack(out, dim=1).clamp_(min=0)


def _lowest_free_indices(seg: Tensor, n: Tensor, seg_need: Tensor, num_n: int, k: int):
    """For every segment s with ``seg_need[s] > 0``: its ``seg_need[s]`` lowest location
    indices not among its selected ``n`` (``seg`` sorted). Returns (segments, indices).

    These are the zero-quality locations a top-K over *all* locations takes, lowest index
    first, when fewer than K locations have a positive quality; a segment has < K selected,
    so its first ``need`` free indices lie below ``2K`` (or N).
    """
    needy = (seg_need > 0).nonzero().squeeze(1)
    if needy.numel() == 0:
        return seg.new_zeros(0), seg.new_zeros(0)
    width = min(num_n, 2 * k)
    slot = torch.full((seg_need.numel(), ), -1, dtype=torch.long, device=seg.device)
    slot[needy] = torch.arange(needy.numel(), device=seg.device)
    taken = torch.zeros(needy.numel(), width, dtype=torch.bool, device=seg.device)
    row = slot.index_select(0, seg)
    hit = (row >= 0) & (n < width)
    taken[row[hit], n[hit]] = True
    free = ~taken
    rank = free.cumsum(dim=1)
    pick = free & (rank <= seg_need.index_select(0, needy)[:, None])
    r, c = pick.nonzero(as_tuple=True)
    return needy.index_select(0, r), c


def _sparse_pgw_all(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis, k, ridge,
                    chunk_elems, level_sizes, level_index, num_levels) -> List[Tensor]:
    """PGW masks (B, N) per xi for candidates='all_then_mask' (the official rule), without
    any (B, G, N) tensor: exactly the masks of the dense implementation.

    Only locations within reach of a GT (:func:`_prediction_reach`) can have a positive raw
    quality; they are enumerated per grid rectangle like the inside cells. The top-K of a GT
    is the top of its positive-quality cells, completed -- when fewer than K are positive --
    by the lowest-index zero-quality locations (:func:`_lowest_free_indices`), as the dense
    top-K breaks its ties. The Gaussian is fitted on all K, the weights kept inside the box.
    """
    num_b, num_g = gt_bboxes.shape[:2]
    num_n = points.shape[0]
    num_seg = num_b * num_g
    num_x = len(xis)
    dt = _work_dtype(cls_prob)
    out = cls_prob.new_zeros((num_x * num_b * num_n, ), dtype=dt)
    if num_seg == 0 or k <= 0:
        return list(out.view(num_x, num_b, num_n))
    margin = _prediction_reach(boxes, points, level_sizes)
    rows = _grid_rows(points, gt_bboxes, gt_valid, level_sizes, level_margin=margin)
    seg, bn = _expand_rows(*rows)
    seg_count = torch.zeros(num_seg, dtype=torch.long, device=seg.device).index_add_(
        0, rows[0], rows[2])
    num_cells = seg.numel()
    if num_cells:
        cand, qual = _bounded_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn,
                                      seg_count, xis, k, _sparse_chunk(cls_prob, chunk_elems))
        if cand is not None:
            seg, bn = seg.index_select(0, cand), bn.index_select(0, cand)
            seg_count, num_cells = torch.bincount(seg, minlength=num_seg), cand.numel()
        seg_x = _per_xi_segments(seg, num_x, num_seg)
        q_flat = qual.view(-1)
        chosen = _segment_topk(seg_x, q_flat, seg_count.repeat(num_x), k)
        chosen = chosen[q_flat.index_select(0, chosen) > 0]      # zeros: lowest index first
        s_seg = seg_x.index_select(0, chosen)
        s_bn = bn.index_select(0, chosen - torch.div(chosen, num_cells,
                                                     rounding_mode='floor') * num_cells)
    else:
        s_seg = s_bn = seg.new_zeros(0)
    s_b = torch.div(s_bn, num_n, rounding_mode='floor')
    s_n = s_bn - s_b * num_n
    valid_x = gt_valid.reshape(-1).repeat(num_x)
    need = (k - torch.bincount(s_seg, minlength=num_x * num_seg)).clamp(min=0)
    need = torch.minimum(need, num_n - torch.bincount(s_seg, minlength=num_x * num_seg))
    need = need * valid_x
    order = _stable_argsort(s_seg)
    f_seg, f_n = _lowest_free_indices(s_seg.index_select(0, order), s_n.index_select(0, order),
                                      need, num_n, k)
    all_seg = torch.cat([s_seg, f_seg])
    all_n = torch.cat([s_n, f_n])
    # fit in ascending location order within each GT, as the dense fit sums
    order = _stable_argsort(all_seg * num_n + all_n)
    all_seg, all_n = all_seg.index_select(0, order), all_n.index_select(0, order)
    _, cov, d = _segment_gaussian(all_seg, points.to(torch.float64).index_select(0, all_n),
                                  num_x * num_seg)
    c = cov.index_select(0, all_seg)
    imp = torch.exp(-0.5 * _mahalanobis_sq(d[:, 0], d[:, 1], c[:, 0], c[:, 1], c[:, 2],
                                           ridge)).to(dt)
    g = all_seg - torch.div(all_seg, num_seg, rounding_mode='floor') * num_seg   # b * G + g
    box = gt_bboxes.reshape(-1, 4).index_select(0, g)
    pt = points.to(box.dtype).index_select(0, all_n)
    inside = ((pt[:, 0] > box[:, 0]) & (pt[:, 0] < box[:, 2]) & (pt[:, 1] > box[:, 1])
              & (pt[:, 1] < box[:, 3]))
    x = torch.div(all_seg, num_seg, rounding_mode='floor')
    pos = (x * num_b + torch.div(g, max(num_g, 1), rounding_mode='floor')) * num_n + all_n
    pos, imp = pos[inside], imp[inside]
    out.scatter_reduce_(0, pos, imp, reduce='amax', include_self=True)     # max over GTs
    _normalise_at(out, pos, level_index, num_levels, num_n)                 # Eq. 4
    return list(out.view(num_x, num_b, num_n))
