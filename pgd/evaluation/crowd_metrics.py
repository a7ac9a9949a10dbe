"""CrowdHuman-style crowd-detection metrics: MR^-2, AP@0.5 and JI.

All three metrics are computed class-agnostically (CrowdHuman has one class, ``person``) on
boxes given as ``(x1, y1, x2, y2)`` arrays. Low-level functions return fractions in [0, 1];
:func:`evaluate_crowd` reports percentages, like the paper (MR 46.0, AP 88.0, JI 79.0).

Ignore regions. A GT with ``iscrowd`` or ``ignore`` set is an *ignore region*. Following the
Caltech / CrowdHuman protocol (Dollar et al., PAMI 2012; CrowdDet's evaluation code), a detection
is first matched to a regular GT; only if that fails and its intersection-over-*detection*-area
(IoA) with some ignore region is >= the threshold is it marked *ignored*: it is then neither a
true positive nor a false positive, and it is dropped from the curves and from the JI count.
Ignore regions can absorb any number of detections and never count as misses.

Matching for MR and AP (:func:`match_image`). Per image, detections are visited in decreasing
score order (stable for ties); each one takes the still-unmatched regular GT with the highest
IoU if that IoU >= ``iou_thr`` (true positive), otherwise it is ignored (IoA rule above) or a
false positive.

MR^-2 (:func:`log_average_miss_rate`). Over the detections of the whole set sorted by score, the
miss rate ``1 - TP/n_gt`` is plotted against false positives per image ``FP/n_images``. The curve
starts at (FPPI 0, MR 1) before any detection. At each of the 9 reference FPPIs
``10**linspace(-2, 0, 9)`` we take the miss rate of the *last curve point with FPPI <= ref*
(Dollar's toolbox convention; CrowdDet instead takes the first point with FPPI >= ref, which can
only differ by one step of the curve). MR^-2 = ``exp(mean(log(max(mr, 1e-10))))``. A detector
with every GT found and no false positive therefore scores the floor 1e-10 (1e-8 percent).

AP (:func:`average_precision`). All-point interpolated area under the precision/recall curve
(VOC 2010+ style: precision is replaced by its running maximum from the right and integrated
over recall steps). Note CrowdDet's ``compute_APMR`` integrates the raw curve with the trapezoid
rule; the two agree for monotone curves and differ by at most the interpolation gaps.

JI (:func:`image_jaccard`, :func:`jaccard_index`). Per image and score threshold ``t``, keep the
detections with ``score > t`` (strict, as in CrowdDet) and compute a maximum bipartite matching
between them and the regular GTs on pairs with IoU >= ``iou_thr``
(:func:`scipy.optimize.linear_sum_assignment`; maximum cardinality first, ties broken by the
largest total IoU; CrowdDet maximises total IoU alone, which can differ only in rare
configurations). Unmatched detections with IoA >= ``iou_thr`` against an ignore region are then
dropped (not counted in ``n_det``). ``JI_img = k / (n_gt + n_det - k)`` with ``k`` matches. The dataset JI
is the mean of ``JI_img`` over images that have at least one regular GT or one kept detection
(images with neither are skipped, as in CrowdDet), and the reported JI is the maximum over the
thresholds ``0.0, 0.1, ..., 0.9`` (CrowdDet's sweep).
"""
from __future__ import annotations

import json
from os import PathLike
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

TP, FP, IGNORED = 1, 0, -1
FPPI_REFS = np.logspace(-2.0, 0.0, 9)
JI_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))
MR_FLOOR = 1e-10


def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return arr


def box_iou(a, b) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes; boxes without area give IoU 0."""
    a, b = _as_boxes(a), _as_boxes(b)
    inter = _intersection(a, b)
    area_a = _area(a)[:, None]
    area_b = _area(b)[None, :]
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_ioa(dets, regions) -> np.ndarray:
    """Intersection over *detection* area, matrix (len(dets), len(regions))."""
    dets, regions = _as_boxes(dets), _as_boxes(regions)
    inter = _intersection(dets, regions)
    area = _area(dets)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, inter / area, 0.0)


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def _ignored_mask(det_boxes: np.ndarray, ign_boxes: np.ndarray, thr: float) -> np.ndarray:
    if len(ign_boxes) == 0 or len(det_boxes) == 0:
        return np.zeros(len(det_boxes), dtype=bool)
    return (box_ioa(det_boxes, ign_boxes) >= thr).any(axis=1)


def match_image(det_boxes, det_scores, gt_boxes, gt_ignore=None, iou_thr: float = 0.5) -> np.ndarray:
    """Greedy Caltech/CrowdHuman matching of one image's detections.

    Returns an int array aligned with the *input* detection order: ``1`` true positive,
    ``0`` false positive, ``-1`` ignored (matched an ignore region by IoA).
    """
    det_boxes = _as_boxes(det_boxes)
    scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    gt_boxes = _as_boxes(gt_boxes)
    ign = np.zeros(len(gt_boxes), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    labels = np.full(len(det_boxes), FP, dtype=np.int64)
    if len(det_boxes) == 0:
        return labels
    order = np.argsort(-scores, kind="stable")
    regular = gt_boxes[~ign]
    iou = box_iou(det_boxes[order], regular)  # (D, G) in score order
    free = np.ones(len(regular), dtype=bool)
    tp_sorted = np.zeros(len(order), dtype=bool)
    for i in range(len(order)):
        if not free.any():
            break
        row = np.where(free, iou[i], -1.0)
        j = int(np.argmax(row))
        if row[j] >= iou_thr:
            free[j] = False
            tp_sorted[i] = True
    ign_sorted = ~tp_sorted & _ignored_mask(det_boxes[order], gt_boxes[ign], iou_thr)
    lab_sorted = np.where(tp_sorted, TP, np.where(ign_sorted, IGNORED, FP))
    labels[order] = lab_sorted
    return labels


def _cumulative(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative TP and FP counts over non-ignored detections sorted by score (desc)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    keep = labels != IGNORED
    scores, labels = scores[keep], labels[keep]
    order = np.argsort(-scores, kind="stable")
    is_tp = labels[order] == TP
    return np.cumsum(is_tp), np.cumsum(~is_tp)


def log_average_miss_rate(scores, labels, n_gt: int, n_images: int,
                          fppi_refs: Sequence[float] = FPPI_REFS) -> float:
    """MR^-2 as a fraction from pooled detection ``scores`` and ``labels`` (see module doc)."""
    if n_gt <= 0:
        return float("nan")
    if n_images <= 0:
        raise ValueError("n_images must be positive")
    tp, fp = _cumulative(scores, labels)
    fppi = np.concatenate([[0.0], fp / n_images])
    mr = np.concatenate([[1.0], 1.0 - tp / n_gt])
    # fppi is non-decreasing, so the last index with fppi <= ref is searchsorted(right) - 1 (>= 0
    # thanks to the (0, 1) starting point).
    idx = np.searchsorted(fppi, np.asarray(fppi_refs, dtype=np.float64), side="right") - 1
    at_ref = np.maximum(mr[idx], MR_FLOOR)
    return float(np.exp(np.mean(np.log(at_ref))))


def average_precision(scores, labels, n_gt: int) -> float:
    """All-point interpolated AP as a fraction (see module doc); NaN when ``n_gt == 0``."""
    if n_gt <= 0:
        return float("nan")
    tp, fp = _cumulative(scores, labels)
    if len(tp) == 0:
        return 0.0
    recall = np.concatenate([[0.0], tp / n_gt])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1)])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


def image_jaccard(det_boxes, gt_boxes, gt_ignore=None, iou_thr: float = 0.5) -> Tuple[int, int, int]:
    """``(k, n_gt, n_det)`` for one image's already score-filtered detections (see module doc)."""
    det_boxes = _as_boxes(det_boxes)
    gt_boxes = _as_boxes(gt_boxes)
    ign = np.zeros(len(gt_boxes), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    regular = gt_boxes[~ign]
    iou = box_iou(det_boxes, regular)
    valid = iou >= iou_thr
    matched = np.zeros(len(det_boxes), dtype=bool)
    if valid.any():
        big = float(min(iou.shape) + 1)  # one more match always outweighs any IoU total
        weight = np.where(valid, big + iou, 0.0)
        rows, cols = linear_sum_assignment(weight, maximize=True)
        ok = valid[rows, cols]
        matched[rows[ok]] = True
    dropped = ~matched & _ignored_mask(det_boxes, gt_boxes[ign], iou_thr)
    return int(matched.sum()), int(len(regular)), int(len(det_boxes) - dropped.sum())


def jaccard_index(images: Iterable[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                  thresholds: Sequence[float] = JI_THRESHOLDS,
                  iou_thr: float = 0.5) -> Tuple[float, float]:
    """Dataset JI as a fraction, maximised over score thresholds.

    ``images`` yields ``(det_boxes, det_scores, gt_boxes, gt_ignore)`` per image. Returns
    ``(best_ji, best_threshold)``; ``(nan, nan)`` if no image has a GT or a detection.
    """
    images = list(images)
    best = (float("nan"), float("nan"))
    for t in thresholds:
        ratios = []
        for det_boxes, det_scores, gt_boxes, gt_ignore in images:
            keep = np.asarray(det_scores, dtype=np.float64).reshape(-1) > t
            k, n, m = image_jaccard(_as_boxes(det_boxes)[keep], gt_boxes, gt_ignore, iou_thr)
            if n + m > 0:
                ratios.append(k / (n + m - k))
        if ratios:
            ji = float(np.mean(ratios))
            if np.isnan(best[0]) or ji > best[0]:  # ties keep the lowest threshold
                best = (ji, float(t))
    return best


GtLike = Union[str, PathLike, Mapping]


def _load_gt(gt: GtLike) -> Mapping:
    if isinstance(gt, Mapping):
        return gt
    with open(gt, "r", encoding="utf-8") as fh:
        return json.load(fh)


def _xywh_to_xyxy(b) -> List[float]:
    x, y, w, h = (float(v) for v in b)
    return [x, y, x + w, y + h]


def evaluate_crowd(gt: GtLike, detections: Sequence[Mapping], iou_thr: float = 0.5,
                   category_id: Optional[int] = None) -> Dict[str, float]:
    """MR^-2, AP@``iou_thr`` and JI in percent for COCO-format GT and COCO-results detections.

    Args:
        gt: path to a COCO annotation JSON or the loaded dict. Every image in ``images`` counts
            (for FPPI and JI), also those without annotations. An annotation with a truthy
            ``iscrowd`` or ``ignore`` is an ignore region.
        detections: ``[{"image_id", "bbox": [x, y, w, h], "score", "category_id"}, ...]``.
        category_id: evaluate only this category (GT and detections); ``None`` = class-agnostic.

    Returns:
        ``{"MR": ..., "AP": ..., "JI": ...}`` in percent (MR: lower is better).
    """
    gt = _load_gt(gt)
    image_ids = [img["id"] for img in gt.get("images", [])]
    if not image_ids:
        raise ValueError("ground truth has no images")
    index = {iid: i for i, iid in enumerate(image_ids)}
    gt_boxes: List[List[List[float]]] = [[] for _ in image_ids]
    gt_ign: List[List[bool]] = [[] for _ in image_ids]
    for ann in gt.get("annotations", []):
        if category_id is not None and ann.get("category_id") != category_id:
            continue
        i = index[ann["image_id"]]
        gt_boxes[i].append(_xywh_to_xyxy(ann["bbox"]))
        gt_ign[i].append(bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0)))
    det_boxes: List[List[List[float]]] = [[] for _ in image_ids]
    det_scores: List[List[float]] = [[] for _ in image_ids]
    for d in detections:
        if category_id is not None and d.get("category_id") != category_id:
            continue
        if d["image_id"] not in index:
            raise ValueError(f"detection for unknown image_id {d['image_id']!r}")
        i = index[d["image_id"]]
        det_boxes[i].append(_xywh_to_xyxy(d["bbox"]))
        det_scores[i].append(float(d["score"]))

    per_image = [
        (_as_boxes(det_boxes[i]), np.asarray(det_scores[i], dtype=np.float64),
         _as_boxes(gt_boxes[i]), np.asarray(gt_ign[i], dtype=bool))
        for i in range(len(image_ids))
    ]
    all_scores, all_labels, n_gt = [], [], 0
    for db, ds, gb, gi in per_image:
        all_scores.append(ds)
        all_labels.append(match_image(db, ds, gb, gi, iou_thr))
        n_gt += int((~gi).sum())
    scores = np.concatenate(all_scores)
    labels = np.concatenate(all_labels)
    mr = log_average_miss_rate(scores, labels, n_gt, len(image_ids))
    ap = average_precision(scores, labels, n_gt)
    ji, _ = jaccard_index(per_image, iou_thr=iou_thr)
    return {"MR": 100.0 * mr, "AP": 100.0 * ap, "JI": 100.0 * ji}
