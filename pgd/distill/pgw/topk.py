"""Segmented top-K of the sparse engine: per segment (one (image, GT), or one (xi, image, GT)),
the ``k`` cells of largest value, ties to the lower index, in the order the float64 Gaussian
fit sums them.

Separate from :mod:`.sparse` because these sorts are pure speed engineering (radix-sort
padding, an exact group-maximum pre-filter) with their own exactness tests.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

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


def _per_xi_segments(seg: Tensor, num_x: int, num_seg: int) -> Tensor:
    """(X * P,): the cells of mask ``x`` as segments ``x * num_seg + seg`` -- one segmented
    op then serves every xi (still non-decreasing, each xi's cells in their own order)."""
    return (seg + (torch.arange(num_x, device=seg.device) * num_seg)[:, None]).view(-1)


def _segment_order(seg: Tensor, q: Tensor, clean: bool = False) -> Tensor:
    """Permutation ordering pairs by (segment asc, q desc, original position asc).

    ``seg`` must be non-decreasing. For float32 ``q >= 0`` one stable sort of an int64 key
    ``seg * 2^31 + (2^31 - 1 - bits(q))`` is used (the IEEE bit pattern of a non-negative
    float is monotone in its value); otherwise two stable sorts. ``clean``: the caller
    guarantees ``q`` has no NaN, no negative value and no -0.0 (skips that pass).
    """
    if q.dtype == torch.float32 and q.numel() and int(seg[-1]) < (1 << 31):
        # nan -> 0 and -0.0 -> +0.0 so that the bit pattern is monotone
        if not clean:
            q = torch.nan_to_num(q, nan=0.0).clamp_(min=0).add_(0.0)
        key = (seg * (1 << 31)).add_((1 << 31) - 1).sub_(q.view(torch.int32))
        return _stable_argsort(key)
    o1 = torch.sort(q, descending=True, stable=True).indices
    o2 = torch.sort(seg[o1], stable=True).indices
    return o1[o2]


#: Cells per group of the exact top-K pre-filter in :func:`_segment_topk`.
_TOPK_GROUP = 16
#: Below this many cells the pre-filter costs more (in op overhead) than it saves.
_TOPK_PREFILTER_MIN_CELLS = 1 << 15
#: ... and below this many cells per segment and k (e.g. the ~110 cells per segment left by
#: the quality bound): then a segment has few groups per top-k slot, the pre-filter drops
#: little and the plain sort is faster (measured: 53k cells, 480 segments, k = 30: 2.4 -> 1.3 ms).
_TOPK_PREFILTER_MIN_DENSITY = 8


def _segment_kth_floor(seg: Tensor, v: Tensor, num_seg: int, k: int, bins: int,
                       fill: float) -> Tensor:
    """(num_seg,): a lower bound of every segment's k-th largest value, without a sort.

    ``v`` (P,) must lie in [0, 1] (values above 1 count as 1) and be free of NaN; ``seg``
    (P,) gives each value's segment (any order). The bound is the lower edge ``j / bins`` of
    the highest histogram bin (``bins`` equal bins over [0, 1], a power of two) at and above
    which a segment has at least ``k`` values: at least ``k`` of its values are then
    ``>= j / bins``, so its k-th largest is too (``floor(v * bins) >= j`` exactly when
    ``v >= j / bins``: the scaling by a power of two is exact). At most one bin width below
    the exact k-th largest. Segments with fewer than ``k`` values get ``fill``. One
    ``bincount`` instead of a segmented sort: the callers only need some lower bound.
    """
    idx = v.mul(bins).clamp_(0, bins - 1).to(torch.long).add_(seg * bins)
    upto = torch.cumsum(torch.bincount(idx, minlength=num_seg * bins).view(num_seg, bins), 1)
    # bin j has >= k values at or above it iff the values below it, upto[j - 1] (0 for j = 0),
    # are at most total - k; those bins are 0 .. top (non-increasing counts), so top + 1 is
    # their number (no flip or suffix sum: both cost more than this comparison)
    limit = upto[:, -1:] - k
    top = (upto[:, :-1] <= limit).sum(1) + (limit[:, 0] >= 0).to(torch.long) - 1
    return (top.to(v.dtype) / bins).masked_fill_(top < 0, fill)


def _group_threshold(seg: Tensor, q: Tensor, seg_count: Tensor, k: int, group: int,
                     fill: float, bins: Optional[int] = None) -> Tensor:
    """(num_seg,): the k-th largest maximum of consecutive groups of a segment's cells.

    Groups are runs of ``g = clamp(count // k, 1, group)`` cells (the last one shorter), so a
    segment with at least ``k`` cells has ``ceil(count / g) >= k`` groups; k distinct cells
    (one per group) are then ``>=`` the threshold, which makes it a lower bound of the
    segment's k-th largest value. Segments with fewer than ``k`` groups get ``fill``. ``q``
    must be free of NaN. ``bins`` (``q`` in [0, 1] only): return the histogram lower bound of
    that k-th largest group maximum (:func:`_segment_kth_floor`) instead of sorting the group
    maxima -- still a threshold that at least k groups reach.
    """
    num_seg = seg_count.numel()
    g_size = torch.div(seg_count, k, rounding_mode='floor').clamp_(1, group)
    g_count = torch.div(seg_count + g_size - 1, g_size, rounding_mode='floor')
    g_end = torch.cumsum(g_count, 0)
    g_len = torch.repeat_interleave(g_size, g_count, output_size=int(g_end[-1]))
    has = g_count > 0
    g_len[g_end[has] - 1] = seg_count[has] - (g_count[has] - 1) * g_size[has]
    g_max = torch.segment_reduce(q, 'max', lengths=g_len)
    g_seg = torch.repeat_interleave(torch.arange(num_seg, device=seg.device), g_count,
                                    output_size=g_len.numel())
    if bins is not None:
        return _segment_kth_floor(g_seg, g_max, num_seg, k, bins, fill)
    g_order = _segment_order(g_seg, g_max)
    thr = q.new_full((num_seg, ), fill)
    big = g_count >= k
    thr[big] = g_max[g_order[(g_end - g_count)[big] + (k - 1)]]
    return thr


def _segment_topk(seg: Tensor, q: Tensor, seg_count: Tensor, k: int,
                  group: int = _TOPK_GROUP,
                  prefilter_min_cells: Optional[int] = None,
                  floor: Optional[Tensor] = None) -> Tensor:
    """Indices of the top-``k`` cells of every segment, ordered by (segment, q desc, index).

    ``seg`` (P,) is non-decreasing, ``seg_count`` its counts. Same selection as sorting all
    cells with :func:`_segment_order` and keeping the first ``k`` of each segment -- which is
    what is done for fewer than ``prefilter_min_cells`` cells (default: fewer than
    :data:`_TOPK_PREFILTER_MIN_CELLS`, or fewer than :data:`_TOPK_PREFILTER_MIN_DENSITY` ``* k``
    per segment). Otherwise only the cells that can make the top-k are sorted. Exact
    pre-filter: the k-th largest group maximum ``t`` (:func:`_group_threshold`) is a lower
    bound of a segment's k-th largest value, so every cell below ``t`` is discarded before the
    sort; ties at ``t`` are kept and the stable sort breaks them by index as before. ``floor``
    (num_seg,), if given, is such a lower bound already known (e.g. from the quality bound's
    sample) and replaces the group maxima. ``q`` is overwritten.
    """
    device = seg.device
    if seg.numel() == 0:
        return seg.new_zeros(0)
    # nan -> 0 and -0.0 -> +0.0, as _segment_order does, so the pre-filter ranks the same keys
    q = torch.nan_to_num_(q, nan=0.0).clamp_(min=0).add_(0.0)
    num_seg = seg_count.numel()
    if floor is not None:
        prefilter = True
    elif prefilter_min_cells is None:
        prefilter = (seg.numel() >= _TOPK_PREFILTER_MIN_CELLS
                     and seg.numel() >= _TOPK_PREFILTER_MIN_DENSITY * k * num_seg)
    else:
        prefilter = seg.numel() >= prefilter_min_cells
    if not prefilter:
        cand, c_seg, c_q, c_count = None, seg, q, seg_count
    else:
        thr = (_group_threshold(seg, q, seg_count, k, group, fill=float('-inf'))
               if floor is None else floor)
        cand = (q >= thr.index_select(0, seg)).nonzero().squeeze(1)
        c_seg, c_q = seg.index_select(0, cand), q.index_select(0, cand)
        c_count = torch.bincount(c_seg, minlength=num_seg)
    order = _segment_order(c_seg, c_q, clean=True)          # q was cleaned above
    c_start = torch.cumsum(c_count, 0) - c_count
    # the sorted order keeps segments grouped, so slot i belongs to segment c_seg[i]
    keep = (torch.arange(c_seg.numel(), device=device) - c_start.index_select(0, c_seg)) < k
    chosen = order[keep]
    return chosen if cand is None else cand.index_select(0, chosen)
