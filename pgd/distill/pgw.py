"""Prediction-Guided Weighting (PGW), PGD paper Sec. 3.1-3.2, Eq. 1-4.

For every GT box ``b`` (label ``c``) of an image and every feature location ``n`` (all FPN
levels flattened, see :mod:`pgd.distill.inputs`):

* quality (Eq. 1, max over the A predictions of a location)::

      q[g, n] = 1[X_n inside b_g] * max_a  p[n, a, c_g] ** (1 - xi) * IoU(b_g, box[n, a]) ** xi

* ``T_g`` = the top-K locations by ``q`` jointly over all levels (candidate rule below);
* Gaussian MLE of the image-plane centres of ``T_g`` (Eq. 2)::

      mu_g = mean_{n in T_g} X_n,   Sigma_g = 1/K' sum_{n in T_g} (X_n - mu_g)(X_n - mu_g)^T

* importance (Eq. 3) ``I_g[n] = exp(-1/2 (X_n - mu_g)^T (Sigma_g + r I)^-1 (X_n - mu_g))`` for
  ``n in T_g`` and 0 elsewhere; ``I[n] = max_g I_g[n]``;
* per image and level (Eq. 4) ``M[n] = I[n] / #{m on level(n): I[m] != 0}`` (0/0 -> 0).

Conventions and decisions (not fixed by the paper text):

* **Inside test** is strict: ``x1 < x < x2 and y1 < y < y2`` for the location centre
  (FCOS/ATSS use ``min(l, t, r, b) > 0``, the same thing). Padded GTs (``gt_valid`` False)
  are never inside anything.
* **Candidates** ``'inside'`` (paper text: "compute the quality score for each feature pixel
  inside b, then select the K pixels with the highest quality"): the candidates are the
  locations inside the box, *even when their quality is 0*; ``K' = min(K, #inside)``.
  ``'all_then_mask'`` (the official code, ``pgw_anchor_based.py`` / ``pgw_anchor_free.py``
  of ChenhongyiYang/PGD; :class:`~pgd.distill.losses.PGDLoss`'s default): the top-K is taken
  over all locations of the *raw* quality ``p^(1-xi) IoU^xi`` (no inside indicator), the
  Gaussian is fitted on *all* K candidates, and only the weights of the candidates inside the
  box are kept, so fewer than K (possibly 0) locations get a weight.
* The official code adds uniform noise of +-0.05 px to the candidate centres before the fit
  and divides by ``det + 1e-10`` ("to avoid zero determinant"); here a fixed ridge does that
  job deterministically (next items), so a rerun gives the same masks.
* **Ties** in the top-K are broken towards the lower flattened location index, so the result
  is deterministic and independent of the implementation (matches ``np.argsort(-q,
  kind='stable')``).
* **Ridge** ``r = DEFAULT_RIDGE = 1e-2 px^2`` is added to ``Sigma`` (deterministic, no
  jitter). It only has to make ``Sigma`` invertible: with a single candidate (``Sigma = 0``) or
  collinear candidates, every selected point lies exactly on the degenerate subspace, so its
  Mahalanobis distance along the degenerate direction is 0 whatever ``r`` is, and the exact
  value of ``r`` is irrelevant there. For non-degenerate fits it should perturb the MLE as
  little as possible: locations lie on lattices with spacing >= 8 px (smallest stride of all
  detectors used), so any non-zero per-axis variance of K' <= 30 lattice points is at least
  ``8^2 (K'-1)/K'^2 >= 2 px^2``; ``r = 0.01 px^2`` changes it by at most 0.5 %. The 2x2
  algebra is done in float64, so such a small ridge is numerically safe (Sigma entries are at
  most ~1e6 px^2 for 1333-px inputs).
* Everything runs under ``torch.no_grad()`` on detached inputs, in float32 (float64 if the
  inputs are float64; fp16 inputs are upcast).

Two implementations are provided and tested against each other and against the per-GT loop
reference in :mod:`pgd.distill.pgw_reference`:

* ``impl='sparse'`` (default for ``candidates='inside'``): only (image, GT, location) pairs
  with the location inside the box are materialised (``P`` pairs; with ``level_sizes`` they
  are enumerated as runs of consecutive locations -- the rows of each box's grid rectangle --
  without any (B, G, N) tensor, see :func:`inside_pairs`); quality (mmdet's aligned IoU
  written out elementwise, bit-identical; for A = 1 on the interleaved (x1, y1, x2, y2) rows,
  see :func:`_aligned_iou`), a segmented top-K and the Gaussian fit work
  on those pairs, so memory and time scale with ``P * A`` instead of ``B * G * N * A``. The
  top-K is one stable sort of an int64 ``(pair's GT, quality bits)`` key; on large batches an
  exact pre-filter (k-th largest maximum of 16-pair groups, see :func:`_segment_topk`) first
  drops the pairs that cannot be in any top-K, so only a few per GT are sorted. A NaN quality
  counts as 0 (both dtypes). The top-K, the Gaussian fit and the normalisation (Eq. 4, done
  on the selected locations only, :func:`_normalise_at`) run once for all ``xi`` together,
  the masks of ``xi_x`` being the segments ``x * B * G + (b * G + g)``; within a segment the
  order (hence the tie-breaking and the float64 summation order) is that of one ``xi`` alone.
* ``impl='dense'``: built from the public pieces :func:`quality_scores`,
  :func:`topk_candidates`, :func:`fit_gaussian`, :func:`gaussian_importance` and
  :func:`normalise_per_level` on (B, G, N) tensors (used for ``'all_then_mask'`` and by the
  ablation strategies).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    'DEFAULT_RIDGE', 'CANDIDATE_MODES', 'points_inside_boxes', 'inside_pairs', 'quality_scores',
    'quality_scores_multi', 'topk_candidates', 'fit_gaussian', 'gaussian_importance',
    'normalise_per_level', 'denormalise_per_level', 'prediction_guided_weighting', 'pgw_masks', 'pgw_masks_from_batch',
    'batch_level_index', 'PredictionGuidedWeighting'
]

#: Ridge added to the MLE covariance, in px^2 (see module docstring for the choice).
DEFAULT_RIDGE = 1e-2
CANDIDATE_MODES = ('inside', 'all_then_mask')
#: Soft bound on the number of elements of one (pairs x A) or (B x G_chunk x N x A) block.
DEFAULT_CHUNK_ELEMS = 1 << 24
#: The sparse path computes the quality in blocks of at most this many (pair, prediction)
#: elements: its temporaries (~0.25-0.5 MB) are then recycled by the allocator instead of being
#: returned to and re-faulted from the OS, which cost up to half of its CPU time with glibc
#: malloc (measured on the COCO-sized benchmark: 28 -> 17 ms, ~4,400 -> 0 page faults).
SPARSE_CHUNK_ELEMS = 1 << 16
#: With A = 1, half of that: the (rows, 4) box temporaries of a block then stay in a 1 MB L2
#: cache (measured on that benchmark: ~1.5-2.5 ms less of ~20 ms; no gain for A = 9).
SPARSE_CHUNK_ELEMS_A1 = 1 << 15


def _work_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def batch_level_index(level_sizes: Sequence[Tuple[int, int]], device=None) -> Tensor:
    """(N,) level index of every flattened location, from ``[(H_l, W_l)]``."""
    counts = torch.tensor([h * w for h, w in level_sizes], dtype=torch.long, device=device)
    return torch.repeat_interleave(torch.arange(len(level_sizes), device=device), counts)


def points_inside_boxes(points: Tensor, gt_bboxes: Tensor,
                        gt_valid: Optional[Tensor] = None) -> Tensor:
    """Strict point-in-box test.

    Args:
        points: (N, 2) centres (x, y).
        gt_bboxes: (B, G, 4) xyxy.
        gt_valid: optional (B, G) bool; invalid GTs contain no point.

    Returns:
        (B, G, N) bool.
    """
    x = points[:, 0].to(gt_bboxes.dtype)
    y = points[:, 1].to(gt_bboxes.dtype)
    x1, y1, x2, y2 = (gt_bboxes[..., i, None] for i in range(4))
    inside = (x > x1) & (x < x2) & (y > y1) & (y < y2)
    if gt_valid is not None:
        inside &= gt_valid[..., None]
    return inside


def _grid_axes(points: Tensor, level_sizes: Sequence[Tuple[int, int]]):
    """Per level (xs (W,), ys (H,), start) if ``points`` is a separable row-major grid with
    strictly increasing axes, else None."""
    axes, start = [], 0
    for h, w in level_sizes:
        if h * w == 0 or start + h * w > points.shape[0]:
            return None
        lvl = points[start:start + h * w].reshape(h, w, 2)
        xs, ys = lvl[0, :, 0], lvl[:, 0, 1]
        if not (torch.equal(lvl[..., 0], xs[None, :].expand(h, w))
                and torch.equal(lvl[..., 1], ys[:, None].expand(h, w))):
            return None
        if (w > 1 and not bool((xs[1:] > xs[:-1]).all())) or (
                h > 1 and not bool((ys[1:] > ys[:-1]).all())):
            return None
        axes.append((xs, ys, start))
        start += h * w
    if start != points.shape[0]:
        return None
    return axes


def _grid_rows(points: Tensor, gt_bboxes: Tensor, gt_valid: Tensor,
               level_sizes: Optional[Sequence[Tuple[int, int]]],
               level_margin: Optional[Tensor] = None):
    """Inside locations of every valid GT as runs of consecutive flattened locations.

    On a grid level the locations strictly inside a box form a rectangle (found with
    ``searchsorted``), and each row of that rectangle is a run of consecutive flattened indices.
    ``level_margin`` (B, L), if given, widens every box of image b on level l by
    ``level_margin[b, l]`` on all four sides first.

    Returns:
        ``(row_seg, row_bn0, row_w)``, (R,) long tensors ordered by (image, GT, location): row
        ``r`` covers the flat (image, location) indices ``row_bn0[r] ... row_bn0[r] + row_w[r]
        - 1`` (``bn = b * N + n``) of segment ``row_seg[r] = b * G + g``; or None if ``points``
        is not a separable row-major grid per level (or ``level_sizes`` is None).
    """
    axes = _grid_axes(points, level_sizes) if level_sizes is not None else None
    if axes is None:
        return None
    device = gt_bboxes.device
    num_b, num_g = gt_bboxes.shape[:2]
    num_n = points.shape[0]
    lo_x, lo_y, hi_x, hi_y = (gt_bboxes[..., i].contiguous() for i in range(4))
    i0s, j0s, hs, ws = [], [], [], []
    for lvl, (xs, ys, _) in enumerate(axes):
        # same comparison dtype as points_inside_boxes (points cast to the boxes' dtype)
        xs = xs.to(device=device, dtype=gt_bboxes.dtype).contiguous()
        ys = ys.to(device=device, dtype=gt_bboxes.dtype).contiguous()
        if level_margin is not None:
            m = level_margin[:, lvl, None].to(gt_bboxes.dtype)
            lo_x, lo_y, hi_x, hi_y = (gt_bboxes[..., 0] - m, gt_bboxes[..., 1] - m,
                                      gt_bboxes[..., 2] + m, gt_bboxes[..., 3] + m)
        j0 = torch.searchsorted(xs, lo_x, right=True)       # first x > x1
        j1 = torch.searchsorted(xs, hi_x, right=False)      # first x >= x2
        i0 = torch.searchsorted(ys, lo_y, right=True)
        i1 = torch.searchsorted(ys, hi_y, right=False)
        i0s.append(i0), j0s.append(j0)
        hs.append((i1 - i0).clamp(min=0)), ws.append((j1 - j0).clamp(min=0))
    # rectangles ordered (b, g, level); rows top to bottom -> runs sorted by (b, g, n)
    i0, j0 = torch.stack(i0s, -1), torch.stack(j0s, -1)                   # (B, G, L)
    hh, ww = torch.stack(hs, -1), torch.stack(ws, -1)
    level_w = torch.tensor([len(a[0]) for a in axes], device=device)
    level_start = torch.tensor([a[2] for a in axes], device=device)
    num_l = len(axes)
    rows_per_rect = (hh * ((ww > 0) & gt_valid.to(device)[..., None])).flatten()
    seg = (torch.arange(num_b * num_g, device=device)[:, None].expand(-1, num_l)).flatten()
    b_of = torch.div(seg, max(num_g, 1), rounding_mode='floor')
    first = (b_of * num_n + (level_start + i0 * level_w + j0).flatten())    # first cell's bn
    rect = torch.repeat_interleave(torch.arange(rows_per_rect.numel(), device=device),
                                   rows_per_rect)                            # (R,)
    row_in_rect = (torch.arange(rect.numel(), device=device)
                   - (torch.cumsum(rows_per_rect, 0) - rows_per_rect).index_select(0, rect))
    lw = level_w.repeat(num_b * num_g)
    row_bn0 = first.index_select(0, rect) + row_in_rect * lw.index_select(0, rect)
    return seg.index_select(0, rect), row_bn0, ww.flatten().index_select(0, rect)


def _expand_rows(row_seg: Tensor, row_bn0: Tensor, row_w: Tensor) -> Tuple[Tensor, Tensor]:
    """Runs -> per-cell (segment, flat (image, location) index), sorted by (segment, bn).

    Both are running sums: ``bn`` grows by 1 from cell to cell except at the first cell of a
    row, where it jumps to the row's start; ``seg`` changes only at row starts. So each is one
    ``cumsum`` of a constant array with the jumps written at the row starts -- about 2x faster
    on CPU than ``repeat_interleave`` (which builds and gathers through a (P,) index) plus an
    ``arange``, and it touches fewer (P,) temporaries.
    """
    row_end = torch.cumsum(row_w, 0)
    num_cells = int(row_end[-1]) if row_w.numel() else 0
    rows = (row_w > 0).nonzero().squeeze(1)                 # empty rows have no first cell
    start, bn0, w, sg = (t.index_select(0, rows) for t in (row_end - row_w, row_bn0, row_w,
                                                           row_seg))
    # jump of bn at a row start: this row's first bn minus the previous row's last bn
    bn_jump = torch.cat([bn0[:1], bn0[1:] - (bn0[:-1] + w[:-1] - 1)])
    seg_jump = torch.cat([sg[:1], sg[1:] - sg[:-1]])
    ones = torch.ones(num_cells, dtype=torch.long, device=row_w.device)
    bn = ones.index_copy_(0, start, bn_jump).cumsum_(0)
    zeros = torch.zeros(num_cells, dtype=torch.long, device=row_w.device)
    seg = zeros.index_copy_(0, start, seg_jump).cumsum_(0)
    return seg, bn


def _inside_cells(points: Tensor, gt_bboxes: Tensor, gt_valid: Tensor,
                  level_sizes: Optional[Sequence[Tuple[int, int]]] = None
                  ) -> Tuple[Tensor, Tensor, Tensor]:
    """(segment ``b * G + g``, flat ``b * N + n``) of every (image, GT, location) triple with the
    location strictly inside a valid GT, sorted by (image, GT, location), and the number of
    cells of every segment ((B * G,) long)."""
    num_b, num_g = gt_bboxes.shape[:2]
    num_n = points.shape[0]
    rows = _grid_rows(points, gt_bboxes, gt_valid, level_sizes)
    if rows is not None:
        seg, bn = _expand_rows(*rows)
        count = torch.zeros(num_b * num_g, dtype=torch.long, device=seg.device)
        return seg, bn, count.index_add_(0, rows[0], rows[2])
    pb, pg, pn = points_inside_boxes(points, gt_bboxes, gt_valid).nonzero(as_tuple=True)
    seg = pb * num_g + pg
    return seg, pb * num_n + pn, torch.bincount(seg, minlength=num_b * num_g)


@torch.no_grad()
def inside_pairs(points: Tensor, gt_bboxes: Tensor, gt_valid: Tensor,
                 level_sizes: Optional[Sequence[Tuple[int, int]]] = None
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """All (image, GT, location) triples with the location strictly inside a valid GT.

    Same result as ``points_inside_boxes(...).nonzero(as_tuple=True)`` (sorted by image, GT,
    location). With ``level_sizes`` and grid-structured ``points`` (as produced by the prior
    generators), the inside locations of a box on a level form a rectangle of the grid that is
    found with ``searchsorted`` and enumerated row by row, costing O(#pairs) instead of
    O(B * G * N).

    Returns:
        pb, pg, pn: (P,) long tensors.
    """
    num_g, num_n = gt_bboxes.shape[1], points.shape[0]
    if gt_bboxes.shape[0] * num_g == 0:
        return points_inside_boxes(points, gt_bboxes, gt_valid).nonzero(as_tuple=True)
    seg, bn, _ = _inside_cells(points, gt_bboxes, gt_valid, level_sizes)
    pb = torch.div(seg, num_g, rounding_mode='floor')
    return pb, seg - pb * num_g, bn - pb * num_n


# ----------------------------------------------------------------------------------------
# Quality (Eq. 1)
# ----------------------------------------------------------------------------------------
def _iou_with_gts(gx1: Tensor, gy1: Tensor, gx2: Tensor, gy2: Tensor, gt_area: Tensor,
                  pred: Tensor) -> Tensor:
    """IoU of GT boxes (given as (P, 1) coordinate columns and areas) with the predictions
    (P, A, 4) of their cells -> (P, A).

    Exactly mmdet's ``bbox_overlaps(gt, pred, mode='iou', is_aligned=True, eps=1e-6)``: the
    same elementwise operations (each exactly rounded) in the same order, so bit-identical;
    written out to avoid materialising broadcast copies and to reuse buffers.
    """
    px1, py1, px2, py2 = pred.unbind(-1)                                    # strided (P, A)
    w = torch.minimum(gx2, px2).sub_(torch.maximum(gx1, px1)).clamp_(min=0)
    h = torch.minimum(gy2, py2).sub_(torch.maximum(gy1, py1)).clamp_(min=0)
    overlap = w.mul_(h)
    union = (px2 - px1).mul_(py2 - py1).add_(gt_area, alpha=1).sub_(overlap)   # (a1+a2)-ov
    union = torch.maximum(union, union.new_tensor([1e-6]))
    return overlap.div_(union)


def _gather_rows4(table: Tensor, idx: Tensor) -> Tensor:
    """``table.index_select(0, idx)`` for a contiguous (M, 4) table.

    Rows of four float32 (16 bytes) are gathered as 1-D complex128 elements: ~3-5x faster on
    CPU than the 2-D ``index_select`` (which copies row by row). Bit-identical (pure copy)."""
    if (table.element_size() == 4 and table.is_contiguous()
            and table.storage_offset() % 4 == 0):
        return table.view(torch.complex128).view(-1).index_select(0, idx).view(
            table.dtype).view(-1, 4)
    return table.index_select(0, idx)


def _aligned_iou(gt: Tensor, gt_area: Tensor, pred: Tensor) -> Tensor:
    """IoU of row ``r`` of ``gt`` (R, 4) with row ``r`` of ``pred`` (R, 4), both contiguous
    xyxy, given the GT areas ``gt_area`` (R,) -> (R,).

    Exactly mmdet's ``bbox_overlaps(gt, pred, mode='iou', is_aligned=True, eps=1e-6)``: the
    same elementwise operations (each exactly rounded) in the same order, so bit-identical.
    Written on the interleaved (R, 4) rows instead of per-coordinate columns, because strided
    (stride-4) or (R, 2)-shaped operands are not vectorised on CPU (~5-10x slower per element):
    ``x2 - x1`` and ``y2 - y1`` of all rows are one contiguous subtraction of the flat buffer
    and itself shifted by two elements (its entries ``4r`` and ``4r + 1`` are row ``r``'s
    width and height, the other two are unused), so only the final products are strided.
    """
    lt = torch.maximum(gt, pred).view(-1)              # entries 4r, 4r+1: max(x1), max(y1)
    rb = torch.minimum(gt, pred).view(-1)              # entries 4r+2, 4r+3: min(x2), min(y2)
    wh = rb[2:].sub_(lt[:-2]).clamp_(min=0)            # 4r: w, 4r+1: h (rb - lt, clamped)
    overlap = wh[0::4] * wh[1::4]
    flat = pred.view(-1)
    pwh = flat[2:] - flat[:-2]
    union = (pwh[0::4] * pwh[1::4]).add_(gt_area).sub_(overlap)       # (area1 + area2) - ov
    union = torch.maximum(union, union.new_tensor([1e-6]))
    return overlap.div_(union)


def _cell_quality(cls_prob: Tensor, boxes: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                  seg: Tensor, bn: Tensor, xis: Sequence[float],
                  chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Tensor:
    """Quality (max over A) of the cells (segment ``seg = b * G + g``, ``bn = b * N + n``):
    (len(xis), P), row ``x`` for ``xis[x]``."""
    dt = _work_dtype(cls_prob)
    num_pairs, num_a = bn.numel(), cls_prob.shape[2]
    outs = cls_prob.new_empty((len(xis), num_pairs), dtype=dt)
    step = max(1, chunk_elems // max(1, num_a))
    num_b, num_n, _, num_c = cls_prob.shape
    labels = gt_labels.clamp(min=0).reshape(-1)
    flat_prob = cls_prob.reshape(-1)
    gts = gt_bboxes.reshape(-1, 4).to(dt).contiguous()
    g_area = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])               # mmdet's area1
    if num_a == 1:
        # one row of 4 coordinates per (image, location): IoU on interleaved rows
        pred_rows = boxes.reshape(num_b * num_n, 4).to(dt).contiguous()
    else:
        # per-GT columns broadcast over the A predictions of a cell (gathering a GT row per
        # (cell, prediction) for the interleaved-row IoU costs more than it saves for A = 9)
        flat_boxes = boxes.reshape(num_b * num_n, num_a * 4)
        g_cols = [gts[:, i].contiguous() for i in range(4)] + [g_area]
        a_off = torch.arange(num_a, device=bn.device) * num_c
    for s in range(0, num_pairs, step):
        cb, cs = bn[s:s + step], seg[s:s + step]
        # flat index_select is much faster than multi-tensor advanced indexing on CPU
        idx = (cb * (num_a * num_c)).add_(labels.index_select(0, cs))
        if num_a == 1:
            prob = flat_prob.index_select(0, idx).to(dt).clamp_(0, 1)              # (P,)
            iou = _aligned_iou(_gather_rows4(gts, cs), g_area.index_select(0, cs),
                               _gather_rows4(pred_rows, cb))
            for out, xi in zip(outs, xis):
                torch.mul(prob.pow(1.0 - xi), iou.pow(xi), out=out[s:s + step])
            continue
        idx = (idx[:, None] + a_off).reshape(-1)
        prob = flat_prob.index_select(0, idx).view(-1, num_a).to(dt).clamp_(0, 1)  # (P, A)
        pred = flat_boxes.index_select(0, cb).view(-1, num_a, 4).to(dt)
        gx1, gy1, gx2, gy2, g_ar = (c.index_select(0, cs)[:, None] for c in g_cols)
        iou = _iou_with_gts(gx1, gy1, gx2, gy2, g_ar, pred)                # (P, A)
        for out, xi in zip(outs, xis):
            q = prob.pow(1.0 - xi).mul_(iou.pow(xi))
            torch.amax(q, dim=-1, out=out[s:s + step])
    return outs


def _pair_quality(cls_prob: Tensor, boxes: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                  pb: Tensor, pg: Tensor, pn: Tensor, xis: Sequence[float],
                  chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> List[Tensor]:
    """Quality (max over A) of the (image pb, GT pg, location pn) pairs, one (P,) per xi."""
    num_g, num_n = gt_bboxes.shape[1], cls_prob.shape[1]
    return list(_cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, pb * num_g + pg,
                              pb * num_n + pn, xis, chunk_elems))


def _dense_raw_quality(cls_prob: Tensor, boxes: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                       xis: Sequence[float], chunk_elems: int) -> List[Tensor]:
    """Raw quality ``max_a p^(1-xi) IoU^xi`` for every (image, GT, location): (B, G, N) per xi."""
    from mmdet.structures.bbox import bbox_overlaps
    dt = _work_dtype(cls_prob)
    num_b, num_n, num_a, _ = cls_prob.shape
    num_g = gt_bboxes.shape[1]
    outs = [cls_prob.new_zeros((num_b, num_g, num_n), dtype=dt) for _ in xis]
    cls_bcna = cls_prob.permute(0, 3, 1, 2)                                  # (B, C, N, A)
    flat_boxes = boxes.to(dt).reshape(num_b, num_n * num_a, 4)
    labels = gt_labels.clamp(min=0)
    bidx = torch.arange(num_b, device=cls_prob.device)[:, None]
    step = max(1, chunk_elems // max(1, num_b * num_n * num_a))
    for g0 in range(0, num_g, step):
        g1 = min(num_g, g0 + step)
        prob = cls_bcna[bidx, labels[:, g0:g1]].to(dt).clamp(0, 1)           # (B, g, N, A)
        iou = bbox_overlaps(gt_bboxes[:, g0:g1].to(dt), flat_boxes)
        iou = iou.reshape(num_b, g1 - g0, num_n, num_a)
        for out, xi in zip(outs, xis):
            out[:, g0:g1] = (prob.pow(1.0 - xi) * iou.pow(xi)).amax(dim=-1)
    return outs


@torch.no_grad()
def quality_scores_multi(cls_prob: Tensor, boxes: Tensor, points: Tensor, gt_bboxes: Tensor,
                         gt_labels: Tensor, gt_valid: Tensor, xis: Sequence[float],
                         inside_only: bool = True,
                         chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> List[Tensor]:
    """Eq. 1 quality for several ``xi`` at once, sharing the IoU/probability gathering.

    Args:
        cls_prob: (B, N, A, C) teacher sigmoid probabilities.
        boxes: (B, N, A, 4) teacher decoded boxes (xyxy, pixels).
        points: (N, 2) location centres (x, y).
        gt_bboxes, gt_labels, gt_valid: (B, G, 4), (B, G), (B, G) padded GTs.
        xis: the ``xi`` values.
        inside_only: True -> Eq. 1 with the inside indicator (computed only for inside pairs);
            False -> raw ``max_a p^(1-xi) IoU^xi`` for every location (no indicator), 0 for
            padded GTs.

    Returns:
        list of (B, G, N) tensors, one per xi.
    """
    cls_prob, boxes = cls_prob.detach(), boxes.detach()
    gt_bboxes = gt_bboxes.detach()
    if inside_only:
        inside = points_inside_boxes(points, gt_bboxes, gt_valid)
        pb, pg, pn = inside.nonzero(as_tuple=True)
        vals = _pair_quality(cls_prob, boxes, gt_bboxes, gt_labels, pb, pg, pn, xis, chunk_elems)
        outs = []
        for v in vals:
            q = v.new_zeros(inside.shape)
            q[pb, pg, pn] = v
            outs.append(q)
        return outs
    outs = _dense_raw_quality(cls_prob, boxes, gt_bboxes, gt_labels, xis, chunk_elems)
    return [q * gt_valid[..., None].to(q.dtype) for q in outs]


def quality_scores(cls_prob: Tensor, boxes: Tensor, points: Tensor, gt_bboxes: Tensor,
                   gt_labels: Tensor, gt_valid: Tensor, xi: float = 0.8,
                   inside_only: bool = True,
                   chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Tensor:
    """Eq. 1 quality ``q`` (B, G, N) for one ``xi``; see :func:`quality_scores_multi`."""
    return quality_scores_multi(cls_prob, boxes, points, gt_bboxes, gt_labels, gt_valid, (xi, ),
                                inside_only=inside_only, chunk_elems=chunk_elems)[0]


# ----------------------------------------------------------------------------------------
# Top-K, Gaussian MLE, importance, normalisation (Eq. 2-4) -- dense (B, G, N) pieces
# ----------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------
# Full PGW
# ----------------------------------------------------------------------------------------
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
        impl: ``'sparse'`` / ``'dense'`` / ``'auto'`` (sparse for 'inside', else dense).
        chunk_elems: memory bound for the quality computation.
        level_sizes: optional ``[(H_l, W_l)]``; lets the sparse implementation enumerate the
            inside locations per grid rectangle (see :func:`inside_pairs`). Same result.

    Returns:
        list of (B, N) masks ``M``, one per xi (float32, float64 for float64 inputs).
    """
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f'unknown candidate mode {candidates!r}; expected {CANDIDATE_MODES}')
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
