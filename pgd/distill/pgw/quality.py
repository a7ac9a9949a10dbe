"""Quality (Eq. 1): ``max_a p[n, a, c_g] ** (1 - xi) * IoU(b_g, box[n, a]) ** xi``.

Both the readable dense form (:func:`quality_scores_multi`, (B, G, N) tensors) and the
per-cell form the sparse engine calls (:func:`_cell_quality`) live here, because they share
the IoU kernels that reproduce mmdet's ``bbox_overlaps`` bit for bit.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .defaults import DEFAULT_CHUNK_ELEMS, _work_dtype
from .locations import points_inside_boxes


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


class _IouOperands:
    """The GT and prediction tables both cell kernels gather from (one home for their layout):
    A = 1: one row of 4 coordinates per (image, location), IoU on interleaved rows; A > 1:
    per-GT columns broadcast over the A predictions of a cell (gathering a GT row per (cell,
    prediction) for the interleaved-row IoU costs more than it saves for A = 9)."""

    def __init__(self, boxes: Tensor, gt_bboxes: Tensor, dt: torch.dtype):
        num_b, num_n, self.num_a = boxes.shape[:3]
        self.dt = dt
        self.gts = gt_bboxes.reshape(-1, 4).to(dt).contiguous()
        self.g_area = ((self.gts[:, 2] - self.gts[:, 0])
                       * (self.gts[:, 3] - self.gts[:, 1]))                    # mmdet's area1
        if self.num_a == 1:
            self.pred_rows = boxes.reshape(num_b * num_n, 4).to(dt).contiguous()
        else:
            self.flat_boxes = boxes.reshape(num_b * num_n, self.num_a * 4)
            self.g_cols = [self.gts[:, i].contiguous() for i in range(4)] + [self.g_area]

    def iou(self, cb: Tensor, cs: Tensor) -> Tensor:
        """IoU of GT ``cs[p]`` with the predictions of cell ``cb[p]``: (P,) if A = 1, else
        (P, A)."""
        if self.num_a == 1:
            return _aligned_iou(_gather_rows4(self.gts, cs), self.g_area.index_select(0, cs),
                                _gather_rows4(self.pred_rows, cb))
        pred = self.flat_boxes.index_select(0, cb).view(-1, self.num_a, 4).to(self.dt)
        gx1, gy1, gx2, gy2, g_ar = (c.index_select(0, cs)[:, None] for c in self.g_cols)
        return _iou_with_gts(gx1, gy1, gx2, gy2, g_ar, pred)


def _cell_quality(cls_prob: Tensor, boxes: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                  seg: Tensor, bn: Tensor, xis: Sequence[float],
                  chunk_elems: int = DEFAULT_CHUNK_ELEMS, iou: Optional[Tensor] = None) -> Tensor:
    """Quality (max over A) of the cells (segment ``seg = b * G + g``, ``bn = b * N + n``):
    (len(xis), P), row ``x`` for ``xis[x]``.

    ``iou`` (P,), A = 1 only: the cells' IoU already computed by :func:`_cell_max_iou` (the
    same kernel, hence the same values; its NaN -> 0 gives quality 0 where this would give NaN,
    and every caller ranks NaN as 0), so that only the probabilities are gathered here."""
    dt = _work_dtype(cls_prob)
    num_pairs, num_a = bn.numel(), cls_prob.shape[2]
    outs = cls_prob.new_empty((len(xis), num_pairs), dtype=dt)
    step = max(1, chunk_elems // max(1, num_a))
    num_c = cls_prob.shape[3]
    labels = gt_labels.clamp(min=0).reshape(-1)
    flat_prob = cls_prob.reshape(-1)
    if iou is not None and num_a != 1:
        raise ValueError('_cell_quality: a precomputed iou needs one prediction per location')
    ops = _IouOperands(boxes, gt_bboxes, dt) if iou is None else None
    a_off = torch.arange(num_a, device=bn.device) * num_c
    for s in range(0, num_pairs, step):
        cb, cs = bn[s:s + step], seg[s:s + step]
        # flat index_select is much faster than multi-tensor advanced indexing on CPU
        idx = (cb * (num_a * num_c)).add_(labels.index_select(0, cs))
        if num_a == 1:
            c_iou = ops.iou(cb, cs) if iou is None else iou[s:s + step]              # (P,)
            prob = flat_prob.index_select(0, idx).to(dt).clamp_(0, 1)              # (P,)
            for out, xi in zip(outs, xis):
                torch.mul(prob.pow(1.0 - xi), c_iou.pow(xi), out=out[s:s + step])
            continue
        c_iou = ops.iou(cb, cs)                                                  # (P, A)
        idx = (idx[:, None] + a_off).reshape(-1)
        prob = flat_prob.index_select(0, idx).view(-1, num_a).to(dt).clamp_(0, 1)  # (P, A)
        for out, xi in zip(outs, xis):
            q = prob.pow(1.0 - xi).mul_(c_iou.pow(xi))
            torch.amax(q, dim=-1, out=out[s:s + step])
    return outs


def _cell_max_iou(boxes: Tensor, gt_bboxes: Tensor, seg: Tensor, bn: Tensor,
                  chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Tensor:
    """``u[p] = max_a IoU(gt[seg[p]], boxes[bn[p], a])`` of every cell, NaN -> 0: (P,).

    The same IoU kernels (hence the same float values) as :func:`_cell_quality`, without the
    class-probability gather and the powers: the sparse engine ranks cells by ``u`` first,
    because ``q <= u^xi`` bounds the quality from above (see ``sparse._bounded_quality``).
    """
    dt = _work_dtype(boxes)
    num_pairs, num_a = bn.numel(), boxes.shape[2]
    out = boxes.new_empty((num_pairs, ), dtype=dt)
    step = max(1, chunk_elems // max(1, num_a))
    ops = _IouOperands(boxes, gt_bboxes, dt)
    for s in range(0, num_pairs, step):
        iou = ops.iou(bn[s:s + step], seg[s:s + step])
        if num_a == 1:
            out[s:s + step] = iou
        else:
            torch.amax(iou, dim=-1, out=out[s:s + step])
    return torch.nan_to_num_(out, nan=0.0)


#: torch's CPU elementwise loops run blocks of 2 vector widths (<= 32 float32 on AVX-512) and
#: a scalar loop for the rest of a tensor, and ``pow`` differs by up to 1 ulp between the two.
_VEC_BLOCK = 64


def _quality_at_positions(cls_prob, boxes, gt_bboxes, gt_labels, xis, chunk_elems, num_cells,
                          seg, bn, iou, pos, tail_seg, tail_bn, tail_iou):
    """``_cell_quality(all cells)[:, pos]`` bit for bit, computing only the cells at the
    ascending positions ``pos`` (their ``seg``, ``bn``, ``iou``) of the ``num_cells`` cells.

    ``pow`` is not position-independent on CPU (vectorised blocks vs the scalar remainder of
    each tensor, up to 1 ulp apart, which can reorder tied qualities). The full computation
    runs chunks of ``chunk_elems`` cells (a multiple of :data:`_VEC_BLOCK`), so only cells among
    the last 64 can fall in a scalar remainder. Here the other requested cells are padded to a
    multiple of 64 (all vectorised, as there), and the last ``n_tail = min(64, num_cells)``
    cells -- given as ``tail_seg``, ``tail_bn``, ``tail_iou`` -- are recomputed behind
    ``(L - n_tail) mod 64`` dummy cells, ``L`` the length of the last full chunk, so each of
    them sits at the same distance from a chunk end as in the full computation. Requires
    A = 1. ``iou`` / ``tail_iou``: the cells' IoU from :func:`_cell_max_iou` (exactly rounded
    arithmetic, the same in every position), or both None to recompute it.
    """
    n_tail = tail_seg.numel()
    tail0 = num_cells - n_tail
    last_len = num_cells - chunk_elems * ((num_cells - 1) // chunk_elems)
    front = (pos < tail0).nonzero().squeeze(1)
    n_front = front.numel()
    n_pad = (-n_front) % _VEC_BLOCK + (last_len - n_tail) % _VEC_BLOCK

    def join(cell_vals, tail_vals):            # front cells, dummies (tail cell 0), tail
        return torch.cat([cell_vals.index_select(0, front), tail_vals[:1].expand(n_pad),
                          tail_vals])

    q = _cell_quality(cls_prob, boxes, gt_bboxes, gt_labels, join(seg, tail_seg),
                      join(bn, tail_bn), xis, chunk_elems,
                      iou=None if iou is None else join(iou, tail_iou))
    in_tail = pos.index_select(0, (pos >= tail0).nonzero().squeeze(1)) - tail0
    return q.index_select(1, torch.cat([torch.arange(n_front, device=pos.device),
                                        q.shape[1] - n_tail + in_tail]))


def _quality_at(cls_prob, boxes, gt_bboxes, gt_labels, seg, bn, xis, cells, chunk_elems,
                iou=None):
    """``_cell_quality(all cells)[:, cells]`` bit for bit, computing only ``cells`` (ascending
    indices into all cells ``seg``, ``bn``; ``iou`` optional, of all cells):
    :func:`_quality_at_positions`."""
    tail = slice(max(0, seg.numel() - _VEC_BLOCK), None)
    pick = (lambda t: None if t is None else t.index_select(0, cells))
    return _quality_at_positions(
        cls_prob, boxes, gt_bboxes, gt_labels, xis, chunk_elems, seg.numel(), pick(seg),
        pick(bn), pick(iou), cells, seg[tail], bn[tail], None if iou is None else iou[tail])


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
