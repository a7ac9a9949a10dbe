"""Per-image, per-GT loop references of PGW (Eq. 1-4), for tests and benchmarks.

Test code, kept out of the ``pgd`` package: ``tests/test_pgw.py`` imports it as a plain
module (pytest puts ``tests/`` on ``sys.path``), ``benchmarks/bench_pgw.py`` adds ``tests/`` to
``sys.path`` itself.

Two references, both following the conventions of the batched :mod:`pgd.distill.pgw` (strict
inside test, ties -> lower location index, ridge added to the MLE covariance, IoU with mmdet's
``union >= 1e-6`` clamp):

* :func:`pgw_reference` -- float64 NumPy, written to be obviously correct. It only evaluates
  the quality of the locations *inside* each box (``np.flatnonzero(inside)`` first), so it is
  already a sparse, fairly fast loop. Used for the exactness tests in ``tests/test_pgw.py``.
* :func:`pgw_loop_torch` / :func:`pgw_loop_torch_multi` -- the plain per-image, per-GT torch
  loop a researcher would write (and that the public PGD code is close to: its
  ``PGWAnchorModule.assign`` runs per image, computes the quality of every location for every GT
  with torch ops and scatters per GT in a Python loop): for every image and every GT, torch
  ops over *all* N locations and A predictions (inside mask, quality, top-K, Gaussian fit,
  importance), then max over GTs and per-level normalisation. Same dtypes as the batched code
  (quality in float32 for float32 inputs, Gaussian in float64), so its masks match the batched
  ones. This is the speed baseline the ">= 20x faster than a per-GT loop" target of
  ``benchmarks/bench_pgw.py`` refers to. The IoU and the class probabilities of a GT are shared
  between the ``xi`` values (``pgw_loop_torch_multi``), as the batched code shares them.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch

from pgd.distill.pgw import DEFAULT_RIDGE


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
            if order.size == 0:
                continue
            pts = points[order]                   # the fit uses every candidate
            mu = pts.mean(axis=0)
            d = pts - mu
            sigma = d.T @ d / len(order) + ridge * np.eye(2)
            inv = np.linalg.inv(sigma)
            w = np.exp(-0.5 * np.einsum('ni,ij,nj->n', d, inv, d))
            keep = inside[order]                  # all_then_mask: weights inside the box only
            imp[order[keep]] = np.maximum(imp[order[keep]], w[keep])
        for lvl in range(num_levels):
            sel = level_index == lvl
            nz = np.count_nonzero(imp[sel])
            if nz:
                out[b, sel] = imp[sel] / nz
    return out


@torch.no_grad()
def pgw_loop_torch_multi(cls_prob, boxes, points, level_index, num_levels, gt_bboxes, gt_labels,
                         gt_valid, xis: Sequence[float] = (0.8, 0.6), k: int = 30,
                         candidates: str = 'inside', ridge: float = DEFAULT_RIDGE
                         ) -> List[torch.Tensor]:
    """Plain torch loop over images and GTs; same contract and result as
    :func:`pgd.distill.pgw.pgw_masks` (one (B, N) mask per ``xi``, float32, or float64 for
    float64 inputs)."""
    from mmdet.structures.bbox import bbox_overlaps
    if candidates not in ('inside', 'all_then_mask'):
        raise ValueError(candidates)
    dt = torch.float64 if cls_prob.dtype == torch.float64 else torch.float32
    num_b, num_n, num_a = cls_prob.shape[:3]
    points = points.to(cls_prob.device)
    pts64 = points.to(torch.float64)
    level_index = level_index.to(cls_prob.device)
    outs = [cls_prob.new_zeros((num_b, num_n), dtype=dt) for _ in xis]
    for b in range(num_b):
        imps = [cls_prob.new_zeros(num_n, dtype=dt) for _ in xis]
        pred = boxes[b].reshape(-1, 4).to(dt)                                  # (N*A, 4)
        for g in range(gt_bboxes.shape[1]):
            if not bool(gt_valid[b, g]):
                continue
            gt = gt_bboxes[b, g]
            x = points[:, 0].to(gt.dtype)
            y = points[:, 1].to(gt.dtype)
            inside = (x > gt[0]) & (x < gt[2]) & (y > gt[1]) & (y < gt[3])      # (N,)
            n_inside = int(inside.sum())
            if candidates == 'inside' and n_inside == 0:
                continue
            prob = cls_prob[b, :, :, int(gt_labels[b, g])].to(dt).clamp(0, 1)   # (N, A)
            iou = bbox_overlaps(gt.to(dt)[None], pred).reshape(num_n, num_a)   # (N, A)
            for imp, xi in zip(imps, xis):
                q = (prob.pow(1.0 - xi) * iou.pow(xi)).amax(dim=-1)            # (N,)
                if candidates == 'inside':
                    key, kk = q.masked_fill(~inside, -1.0), min(k, n_inside)
                else:
                    key, kk = q, min(k, num_n)
                if kk <= 0:
                    continue
                # top-K with ties broken towards the lower location index
                thr = key.topk(kk).values[-1]
                above = (key > thr).nonzero().squeeze(1)
                at = (key == thr).nonzero().squeeze(1)[:kk - above.numel()]
                sel = torch.cat([above, at])
                # Gaussian MLE (Eq. 2) + ridge, importance (Eq. 3), max over GTs
                # (closed-form 2x2 inverse, as in the public code's ``mle_2d_gaussian_2``)
                xy = pts64[sel]
                d = xy - xy.mean(dim=0)
                sxx, sxy, syy = (d.T @ d / sel.numel()).flatten()[[0, 1, 3]]
                a, c = sxx + ridge, syy + ridge
                det = a * c - sxy * sxy
                dx, dy = d[:, 0], d[:, 1]
                m = (c * dx * dx - 2.0 * sxy * dx * dy + a * dy * dy) / det
                w = torch.exp(-0.5 * m).to(dt)
                if candidates == 'all_then_mask':          # fitted on all K, kept inside
                    w, sel = w[inside[sel]], sel[inside[sel]]
                imp[sel] = torch.maximum(imp[sel], w)
        for out, imp in zip(outs, imps):
            for lvl in range(num_levels):                                      # Eq. 4
                on = level_index == lvl
                nz = int(torch.count_nonzero(imp[on]))
                if nz:
                    out[b, on] = imp[on] / nz
    return outs


def pgw_loop_torch(cls_prob, boxes, points, level_index, num_levels, gt_bboxes, gt_labels,
                   gt_valid, xi=0.8, k=30, candidates='inside', ridge=DEFAULT_RIDGE):
    """:func:`pgw_loop_torch_multi` for one ``xi``: (B, N) tensor."""
    return pgw_loop_torch_multi(cls_prob, boxes, points, level_index, num_levels, gt_bboxes,
                                gt_labels, gt_valid, xis=(xi, ), k=k, candidates=candidates,
                                ridge=ridge)[0]
