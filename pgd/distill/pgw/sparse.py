"""The tuned sparse engine: PGW masks (Eq. 1-4) without any (B, G, N) tensor.

Only (image, GT, location) cells that can matter are materialised (the inside cells, or the
cells within reach of the predicted boxes for the official candidate rule), and the top-K is a
segmented sort over them (package docstring, ``impl='sparse'``). Kept apart from the readable
equations because almost every line here is a measured speed choice; its results are tested to
be exactly those of the dense implementation.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .defaults import _work_dtype
from .importance import _mahalanobis_sq, _segment_gaussian
from .locations import _expand_rows, _grid_rows, _inside_cells
from .quality import _cell_quality

#: The sparse path computes the quality in blocks of at most this many (pair, prediction)
#: elements: its temporaries (~0.25-0.5 MB) are then recycled by the allocator instead of being
#: returned to and re-faulted from the OS, which cost up to half of its CPU time with glibc
#: malloc (measured on the COCO-sized benchmark: 28 -> 17 ms, ~4,400 -> 0 page faults).
SPARSE_CHUNK_ELEMS = 1 << 16
#: With A = 1, half of that: the (rows, 4) box temporaries of a block then stay in a 1 MB L2
#: cache (measured on that benchmark: ~1.5-2.5 ms less of ~20 ms; no gain for A = 9).
SPARSE_CHUNK_ELEMS_A1 = 1 << 15

#: On CPU, torch sorts a 1-D int64 tensor with a radix sort (fbgemm) only from this many
#: elements on (``at::internal::GRAIN_SIZE``); below, a comparison sort runs, ~3x slower per key
#: from ~10k keys (measured: 16k keys 0.97 ms, the same padded to 32,768 keys 0.68 ms; 31.7k
#: keys 1.96 vs 0.77 ms).
_CPU_RADIX_SORT_MIN = 1 << 15


def _stable_argsort(key: Tensor) -> Tensor:
    """``torch.sort(key, stable=True).indices`` of a 1-D int64 ``key``.

    On CPU, a key array of 12k-32k elements is padded with copies of its maximum up to
    :data:`_CPU_RADIX_SORT_MIN` so that torch takes its (faster) radix sort: the stable sort
    puts the padding after every real key, so the first ``n`` indices are the same
    permutation. Only a speed matter (any device, any size gives the same result).
    """
    n = key.numel()
    if key.device.type == 'cpu' and (3 * _CPU_RADIX_SORT_MIN) // 8 <= n < _CPU_RADIX_SORT_MIN:
        pad = key.max().expand(_CPU_RADIX_SORT_MIN - n)
        return torch.sort(torch.cat([key, pad]), stable=True).indices[:n]
    return torch.sort(key, stable=True).indices


def _segment_order(seg: Tensor, q: Tensor) -> Tensor:
    """Permutation ordering pairs by (segment asc, q desc, original position asc).

    ``seg`` must be non-decreasing. For float32 ``q >= 0`` one stable sort of an int64 key
    ``seg * 2^31 + (2^31 - 1 - bits(q))`` is used (the IEEE bit pattern of a non-negative
    float is monotone in its value); otherwise two stable sorts.
    """
    if q.dtype == torch.float32 and q.numel() and int(seg[-1]) < (1 << 31):
        # nan -> 0 and -0.0 -> +0.0 so that the bit pattern is monotone
        bits = (torch.nan_to_num(q, nan=0.0).clamp(min=0) + 0.0).view(torch.int32).long()
        key = seg * (1 << 31) + ((1 << 31) - 1 - bits)
        return _stable_argsort(key)
    o1 = torch.sort(q, descending=True, stable=True).indices
    o2 = torch.sort(seg[o1], stable=True).indices
    return o1[o2]


#: Cells per group of the exact top-K pre-filter in :func:`_segment_topk`.
_TOPK_GROUP = 16
#: Below this many cells the pre-filter costs more (in op overhead) than it saves.
_TOPK_PREFILTER_MIN_CELLS = 1 << 15


def _segment_topk(seg: Tensor, q: Tensor, seg_count: Tensor, k: int,
                  group: int = _TOPK_GROUP,
                  prefilter_min_cells: Optional[int] = None) -> Tensor:
    """Indices of the top-``k`` cells of every segment, ordered by (segment, q desc, index).

    ``seg`` (P,) is non-decreasing, ``seg_count`` its counts. Same selection as sorting all
    cells with :func:`_segment_order` and keeping the first ``k`` of each segment -- which is
    what is done for fewer than ``prefilter_min_cells`` cells (default
    :data:`_TOPK_PREFILTER_MIN_CELLS`). For more, only the cells that
    can make the top-k are sorted. Exact pre-filter: the cells of a segment are split into
    consecutive groups of ``clamp(count // k, 1, group)`` cells; if a segment has at least
    ``k`` groups (always, unless it has fewer than ``k`` cells), the k-th largest group maximum
    ``t`` is a lower bound of its k-th largest value (k distinct cells are >= t), so every cell
    below ``t`` is discarded before the sort; ties at ``t`` are kept and the stable sort breaks
    them by index as before. ``q`` is overwritten.
    """
    device = seg.device
    if seg.numel() == 0:
        return seg.new_zeros(0)
    # nan -> 0 and -0.0 -> +0.0, as _segment_order does, so the pre-filter ranks the same keys
    q = torch.nan_to_num_(q, nan=0.0).clamp_(min=0).add_(0.0)
    num_seg = seg_count.numel()
    if prefilter_min_cells is None:
        prefilter_min_cells = _TOPK_PREFILTER_MIN_CELLS
    if seg.numel() < prefilter_min_cells:
        cand, c_seg, c_q, c_count = None, seg, q, seg_count
    else:
        # groups: per segment runs of g = clamp(count // k, 1, group) cells, the last one
        # shorter; ceil(count / g) >= k groups whenever count >= k
        g_size = torch.div(seg_count, k, rounding_mode='floor').clamp_(1, group)
        g_count = torch.div(seg_count + g_size - 1, g_size, rounding_mode='floor')
        g_end = torch.cumsum(g_count, 0)
        g_len = torch.repeat_interleave(g_size, g_count, output_size=int(g_end[-1]))
        has = g_count > 0
        g_len[g_end[has] - 1] = seg_count[has] - (g_count[has] - 1) * g_size[has]
        g_max = torch.segment_reduce(q, 'max', lengths=g_len)
        g_seg = torch.repeat_interleave(torch.arange(num_seg, device=device), g_count,
                                        output_size=g_len.numel())
        g_order = _segment_order(g_seg, g_max)
        thr = q.new_full((num_seg, ), float('-inf'))
        big = g_count >= k
        thr[big] = g_max[g_order[(g_end - g_count)[big] + (k - 1)]]
        cand = (q >= thr.index_select(0, seg)).nonzero().squeeze(1)
        c_seg, c_q = seg.index_select(0, cand), q.index_select(0, cand)
        c_count = torch.bincount(c_seg, minlength=num_seg)
    order = _segment_order(c_seg, c_q)
    c_start = torch.cumsum(c_count, 0) - c_count
    # the sorted order keeps segments grouped, so slot i belongs to segment c_seg[i]
    keep = (torch.arange(c_seg.numel(), device=device) - c_start.index_select(0, c_seg)) < k
    chosen = order[keep]
    return chosen if cand is None else cand.index_select(0, chosen)


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
    qual = _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis,
                         min(chunk_elems, SPARSE_CHUNK_ELEMS if cls_prob.shape[2] > 1
                             else SPARSE_CHUNK_ELEMS_A1))                         # (X, P)
    # All xi at once: the cells of mask x form the segments x * num_seg + (b * G + g), so
    # the top-K, the Gaussian fit and the normalisation run once over X * P cells (one set of
    # ops instead of one per xi, and sorts large enough for torch's radix sort). Cells keep
    # their order inside a segment, so ties and summation orders are those of one xi alone.
    seg_x = (seg + (torch.arange(num_x, device=seg.device) * num_seg)[:, None]).view(-1)
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
    px, py = points[:, 0, None].to(boxes.dtype), points[:, 1, None].to(boxes.dtype)
    ext = torch.stack([px - boxes[..., 0], boxes[..., 2] - px,
                       py - boxes[..., 1], boxes[..., 3] - py], -1)          # (B, N, A, 4)
    ext = torch.nan_to_num(ext, nan=0.0).amax(dim=(2, 3)).clamp(min=0)      # (B, N)
    parts = ext.split([h * w for h, w in level_sizes], dim=1)
    return torch.stack([p.amax(dim=1) if p.shape[1] else p.new_zeros(p.shape[0])
                        for p in parts], dim=1)


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
    x_off = torch.arange(num_x, device=seg.device) * num_seg
    if num_cells:
        qual = _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis,
                             min(chunk_elems, SPARSE_CHUNK_ELEMS if cls_prob.shape[2] > 1
                                 else SPARSE_CHUNK_ELEMS_A1))                     # (X, P)
        seg_x = (seg + x_off[:, None]).view(-1)
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
