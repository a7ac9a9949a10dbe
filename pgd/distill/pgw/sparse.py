"""The tuned sparse engine: PGW masks (Eq. 1-4) without any (B, G, N) tensor.

Only (image, GT, location) cells that can matter are materialised (the inside cells, or the
cells within reach of the predicted boxes for the official candidate rule), and the top-K is a
segmented sort over them (package docstring, ``impl='sparse'``). Kept apart from the readable
equations because almost every line here is a measured speed choice; its results are tested to
be exactly those of the dense implementation.
"""
from __future__ import annotations

import functools
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .bound import _bounded_quality, _rect_bounded_quality
from .defaults import _work_dtype
from .importance import _mahalanobis_sq, _segment_gaussian
from .locations import _grid_rects, _inside_cells, _rect_cells
from .topk import _per_xi_segments, _segment_topk, _stable_argsort

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


def _candidate_cells(cls_prob, boxes, gt_bboxes, gt_labels, xis, k, chunk_elems, rects,
                     level_sizes, points=None, gt_valid=None, sample_rects=None):
    """The cells that can make a top-K and their quality: ``(seg, bn, seg_count, qual,
    floor)``, ``floor`` (X * B * G,) a lower bound of each mask's and GT's k-th quality for
    the top-K's pre-filter (None without a bound).

    ``rects`` (``locations._grid_rects``, or None off a grid, then the inside cells of
    ``points`` / ``gt_valid``): whole rectangles are dropped first where the box-area bound
    applies (``bound._rect_bounded_quality``), else every cell is enumerated and the IoU
    bound (``bound._bounded_quality``, or no bound on small batches) keeps the candidates.
    ``qual`` (X, C) is bit-identical to the quality of those cells among all cells.
    """
    num_seg = gt_bboxes.shape[0] * gt_bboxes.shape[1]
    if rects is not None:
        kept = _rect_bounded_quality(cls_prob, boxes, gt_bboxes, gt_labels, rects,
                                     level_sizes, xis, k, chunk_elems, sample_rects)
        if kept is not None:
            seg, bn, qual, floor = kept
            return seg, bn, torch.bincount(seg, minlength=num_seg), qual, floor
        seg, bn, seg_count = _rect_cells(rects)
    else:
        seg, bn, seg_count = _inside_cells(points, gt_bboxes, gt_valid)
    if seg.numel() == 0:
        return seg, bn, seg_count, cls_prob.new_zeros((len(xis), 0)), None
    cand, qual, floor = _bounded_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn,
                                         seg_count, xis, k, chunk_elems)      # (X, P')
    if cand is not None:                # only the cells that can make a top-K from here on
        seg, bn = seg.index_select(0, cand), bn.index_select(0, cand)
        seg_count = torch.bincount(seg, minlength=num_seg)
    return seg, bn, seg_count, qual, floor


def _sparse_pgw(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, xis, k, ridge,
                chunk_elems, level_sizes, level_index, num_levels) -> List[Tensor]:
    """PGW masks (B, N) per xi (Eq. 1-4), candidates='inside', working on inside cells."""
    num_b, num_g = gt_bboxes.shape[:2]
    num_n = points.shape[0]
    num_seg = num_b * num_g
    dt = _work_dtype(cls_prob)
    if num_seg == 0 or k <= 0:
        return [cls_prob.new_zeros((num_b, num_n), dtype=dt) for _ in xis]
    num_x = len(xis)
    out = cls_prob.new_zeros((num_x * num_b * num_n, ), dtype=dt)
    rects = (_grid_rects(points, gt_bboxes, gt_valid, level_sizes)
             if level_sizes is not None else None)
    seg, bn, seg_count, qual, floor = _candidate_cells(
        cls_prob, boxes, gt_bboxes, gt_labels, xis, k, _sparse_chunk(cls_prob, chunk_elems),
        rects, level_sizes, points, gt_valid)
    num_cells = seg.numel()
    if num_cells == 0:
        return list(out.view(num_x, num_b, num_n))
    # All xi at once: the cells of mask x form the segments x * num_seg + (b * G + g), so
    # the top-K, the Gaussian fit and the normalisation run once over X * P cells (one set of
    # ops instead of one per xi, and sorts large enough for torch's radix sort). Cells keep
    # their order inside a segment, so ties and summation orders are those of one xi alone.
    seg_x = _per_xi_segments(seg, num_x, num_seg)
    chosen = _segment_topk(seg_x, qual.view(-1), seg_count.repeat(num_x), k, floor=floor)
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
    rects = _grid_rects(points, gt_bboxes, gt_valid, level_sizes, level_margin=margin)
    # the bound's IoU sample from the inside cells: fewer, and most of the best
    inside = functools.partial(_grid_rects, points, gt_bboxes, gt_valid, level_sizes)
    seg, bn, seg_count, qual, floor = _candidate_cells(
        cls_prob, boxes, gt_bboxes, gt_labels, xis, k, _sparse_chunk(cls_prob, chunk_elems),
        rects, level_sizes, sample_rects=inside)
    num_cells = seg.numel()
    if num_cells:
        seg_x = _per_xi_segments(seg, num_x, num_seg)
        q_flat = qual.view(-1)
        chosen = _segment_topk(seg_x, q_flat, seg_count.repeat(num_x), k, floor=floor)
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
