"""Plain per-image, per-GT loop reference of PGW (Eq. 1-4), in float64 NumPy.

Written to be obviously correct rather than fast; used by ``tests/test_pgw.py`` to check the
batched :mod:`pgd.distill.pgw` and by ``benchmarks/bench_pgw.py`` as the speed baseline. It
follows the same conventions as the batched code (strict inside test, ties -> lower location
index, ridge added to the MLE covariance, IoU with mmdet's ``union >= 1e-6`` clamp).
"""
from __future__ import annotations

import numpy as np

from .pgw import DEFAULT_RIDGE


def _np(t):
    if hasattr(t, 'detach'):
        t = t.detach().cpu().numpy()
    return np.asarray(t)


def _iou_one_to_many(gt, boxes):
    """IoU of one box (4,) with boxes (..., 4)."""
    lt = np.maximum(gt[:2], boxes[..., :2])
    rb = np.minimum(gt[2:], boxes[..., 2:])
    wh = np.clip(rb - lt, 0, None)
    overlap = wh[..., 0] * wh[..., 1]
    area_g = (gt[2] - gt[0]) * (gt[3] - gt[1])
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    union = np.maximum(area_g + area_b - overlap, 1e-6)
    return overlap / union


def pgw_reference(cls_prob, boxes, points, level_index, num_levels, gt_bboxes, gt_labels,
                  gt_valid, xi=0.8, k=30, candidates='inside', ridge=DEFAULT_RIDGE):
    """Same contract as :func:`pgd.distill.pgw.prediction_guided_weighting`; returns (B, N)
    float64 NumPy array."""
    cls_prob = _np(cls_prob).astype(np.float64)
    boxes = _np(boxes).astype(np.float64)
    points = _np(points).astype(np.float64)
    level_index = _np(level_index)
    gt_bboxes = _np(gt_bboxes).astype(np.float64)
    gt_labels = _np(gt_labels)
    gt_valid = _np(gt_valid).astype(bool)
    num_b, num_n = cls_prob.shape[:2]
    out = np.zeros((num_b, num_n))
    for b in range(num_b):
        imp = np.zeros(num_n)
        for g in range(gt_bboxes.shape[1]):
            if not gt_valid[b, g]:
                continue
            x1, y1, x2, y2 = gt_bboxes[b, g]
            inside = ((points[:, 0] > x1) & (points[:, 0] < x2)
                      & (points[:, 1] > y1) & (points[:, 1] < y2))
            if candidates == 'inside':
                cand = np.flatnonzero(inside)
            elif candidates == 'all_then_mask':
                cand = np.arange(num_n)
            else:
                raise ValueError(candidates)
            if cand.size == 0:
                continue
            prob = np.clip(cls_prob[b, cand, :, gt_labels[b, g]], 0, 1)      # (n, A)
            iou = _iou_one_to_many(gt_bboxes[b, g], boxes[b, cand])           # (n, A)
            q = (prob ** (1.0 - xi) * iou ** xi).max(axis=1)
            order = cand[np.argsort(-q, kind='stable')][:k]
            if candidates == 'all_then_mask':
                order = order[inside[order]]
            if order.size == 0:
                continue
            pts = points[order]
            mu = pts.mean(axis=0)
            d = pts - mu
            sigma = d.T @ d / len(order) + ridge * np.eye(2)
            inv = np.linalg.inv(sigma)
            w = np.exp(-0.5 * np.einsum('ni,ij,nj->n', d, inv, d))
            imp[order] = np.maximum(imp[order], w)
        for lvl in range(num_levels):
            sel = level_index == lvl
            nz = np.count_nonzero(imp[sel])
            if nz:
                out[b, sel] = imp[sel] / nz
    return out
