"""Hand-computed cases for the CrowdHuman metrics (MR^-2, AP@0.5, JI)."""
import json
import math

import numpy as np
import pytest

from pgd.evaluation.crowd_metrics import (
    FP,
    IGNORED,
    TP,
    average_precision,
    box_ioa,
    box_iou,
    evaluate_crowd,
    image_jaccard,
    jaccard_index,
    log_average_miss_rate,
    match_image,
)

FLOOR_PCT = 1e-8  # 100 * 1e-10


def _gt(images):
    """images: {image_id: [(x, y, w, h, ignore), ...]} -> COCO dict."""
    anns, aid = [], 1
    for iid, boxes in images.items():
        for x, y, w, h, ign in boxes:
            anns.append({"id": aid, "image_id": iid, "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(ign)})
            aid += 1
    return {"images": [{"id": i} for i in images], "annotations": anns,
            "categories": [{"id": 1, "name": "person"}]}


def _det(iid, x, y, w, h, s):
    return {"image_id": iid, "bbox": [x, y, w, h], "score": s, "category_id": 1}


TWO_IMAGES = _gt({1: [(0, 0, 10, 10, 0), (20, 0, 10, 10, 0)], 2: [(0, 0, 10, 20, 0)]})


def test_iou_and_ioa():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]]
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1.0, 0.0]])
    np.testing.assert_allclose(box_ioa([[2, 2, 4, 4]], [[0, 0, 10, 10]]), [[1.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_perfect_detections():
    dets = [_det(a["image_id"], *a["bbox"], 0.9) for a in TWO_IMAGES["annotations"]]
    res = evaluate_crowd(TWO_IMAGES, dets)
    assert res["MR"] == pytest.approx(FLOOR_PCT)
    assert res["AP"] == pytest.approx(100.0)
    assert res["JI"] == pytest.approx(100.0)


def test_no_detections():
    res = evaluate_crowd(TWO_IMAGES, [])
    assert res["MR"] == pytest.approx(100.0)
    assert res["AP"] == pytest.approx(0.0)
    assert res["JI"] == pytest.approx(0.0)


def test_top_scoring_false_positive():
    gt = _gt({1: [(0, 0, 10, 10, 0), (20, 0, 10, 10, 0)]})
    tps = [_det(1, 0, 0, 10, 10, 0.9), _det(1, 20, 0, 10, 10, 0.8)]
    fp = _det(1, 100, 100, 10, 10, 0.95)
    assert evaluate_crowd(gt, tps)["AP"] == pytest.approx(100.0)
    res = evaluate_crowd(gt, tps + [fp])
    # PR points: (r=0, p=0), (0.5, 1/2), (1, 2/3); envelope 2/3 everywhere -> AP = 2/3.
    assert res["AP"] == pytest.approx(200.0 / 3.0)
    # FPPI jumps to 1 before any TP: MR = 1 at the 8 refs < 1 and 0 (floored) at FPPI = 1.
    assert res["MR"] == pytest.approx(100.0 * 1e-10 ** (1.0 / 9.0))
    # The same FP scored below every TP changes neither AP nor MR.
    low = dict(fp, score=0.1)
    res_low = evaluate_crowd(gt, tps + [low])
    assert res_low["AP"] == pytest.approx(100.0)
    assert res_low["MR"] == pytest.approx(FLOOR_PCT)


def test_miss_rate_uses_last_point_with_fppi_at_most_ref():
    # 2 images x 1 GT; scores: TP (img1) 0.9, FP (img2) 0.8, TP (img2) 0.7.
    # Curve (fppi, mr): (0, 1), (0, .5), (.5, .5), (.5, 0). Refs 10**(-2 + i/4): the 7 refs
    # below 0.5 read mr = .5; 0.562 and 1.0 read mr = 0 (floored to 1e-10).
    mr = log_average_miss_rate([0.9, 0.8, 0.7], [TP, FP, TP], n_gt=2, n_images=2)
    expected = math.exp((7 * math.log(0.5) + 2 * math.log(1e-10)) / 9)
    assert mr == pytest.approx(expected)


def test_average_precision_interpolation():
    # TP, FP, TP, FP with 3 GTs: P/R = (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2).
    # Envelope: 1 up to recall 1/3, 2/3 up to recall 2/3 -> AP = 1/3 + 1/3 * 2/3 = 5/9.
    ap = average_precision([0.9, 0.8, 0.7, 0.6], [TP, FP, TP, FP], n_gt=3)
    assert ap == pytest.approx(5.0 / 9.0)
    assert math.isnan(average_precision([0.5], [FP], n_gt=0))


def test_match_image_greedy_and_input_order():
    gts = [[0, 0, 10, 10]]
    dets = [[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]]
    labels = match_image(dets, [0.5, 0.9, 0.7], gts)
    # highest score (index 1) takes the GT; the duplicate (index 0) becomes an FP.
    assert labels.tolist() == [FP, TP, FP]


def test_ignore_region_detections_are_not_false_positives():
    gt = _gt({1: [(0, 0, 10, 10, 0), (100, 100, 100, 100, 1)]})
    tp = _det(1, 0, 0, 10, 10, 0.5)
    inside = _det(1, 110, 110, 40, 40, 0.9)  # IoA with the crowd region = 1, IoU = 0.16
    res = evaluate_crowd(gt, [tp, inside])
    assert res["AP"] == pytest.approx(100.0)
    assert res["JI"] == pytest.approx(100.0)
    assert res["MR"] == pytest.approx(FLOOR_PCT)
    labels = match_image([[0, 0, 10, 10], [110, 110, 150, 150]], [0.5, 0.9],
                         [[0, 0, 10, 10], [100, 100, 200, 200]], [False, True])
    assert labels.tolist() == [TP, IGNORED]
    # Without the ignore flag the region is a GT the detection fails to hit: a miss and an FP.
    gt_plain = _gt({1: [(0, 0, 10, 10, 0), (100, 100, 100, 100, 0)]})
    res_plain = evaluate_crowd(gt_plain, [tp, inside])
    assert res_plain["AP"] == pytest.approx(25.0)  # P/R: (0, 0), (1/2, 1/2)
    assert res_plain["JI"] == pytest.approx(100.0 / 3.0)  # 1 / (2 + 2 - 1)


def test_ji_two_gts_three_dets():
    gts = [[0, 0, 10, 10], [20, 0, 30, 10]]
    dets = [[0, 0, 10, 10], [21, 0, 31, 10], [50, 50, 60, 60]]  # IoU 1, 90/110, 0
    assert image_jaccard(dets, gts) == (2, 2, 3)  # JI = 2 / (2 + 3 - 2)
    ji, thr = jaccard_index([(np.array(dets), np.array([0.9, 0.8, 0.7]), np.array(gts),
                              np.zeros(2, bool))], thresholds=(0.0,))
    assert ji == pytest.approx(2.0 / 3.0) and thr == 0.0


def test_ji_uses_maximum_matching_not_greedy():
    # d1 overlaps g1 (IoU .905) and g2 (.739); d2 overlaps only g1 (.538). Greedy-by-IoU gives
    # d1->g1 and leaves d2 unmatched (JI 1/3); the maximum matching d1->g2, d2->g1 gives 1.
    gts = [[0, 0, 10, 10], [2, 0, 12, 10]]
    dets = [[0.5, 0, 10.5, 10], [-3, 0, 7, 10]]
    assert image_jaccard(dets, gts) == (2, 2, 2)


def test_ji_score_threshold_sweep():
    gt = _gt({1: [(0, 0, 10, 10, 0)]})
    tp = _det(1, 0, 0, 10, 10, 0.95)
    fp = _det(1, 50, 50, 10, 10, 0.05)
    # threshold 0.0 keeps both (JI 1/2); 0.1 drops the FP (JI 1) -> the maximum is reported.
    assert evaluate_crowd(gt, [tp, fp])["JI"] == pytest.approx(100.0)
    per_image = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([0.95, 0.05]),
                  np.array([[0, 0, 10, 10]], float), np.zeros(1, bool))]
    assert jaccard_index(per_image, thresholds=(0.0,))[0] == pytest.approx(0.5)
    assert jaccard_index(per_image) == (pytest.approx(1.0), 0.1)
    # thresholds are strict: a detection scored exactly 0.9 is dropped at t = 0.9
    only = [(np.array([[0, 0, 10, 10]], float), np.array([0.9]),
             np.array([[0, 0, 10, 10]], float), np.zeros(1, bool))]
    assert jaccard_index(only, thresholds=(0.9,))[0] == pytest.approx(0.0)


def test_ji_skips_empty_images_and_averages_per_image():
    # image 1: perfect; image 2: 1 GT, 0 dets -> 0; image 3: empty -> skipped. Mean = 0.5.
    gt = _gt({1: [(0, 0, 10, 10, 0)], 2: [(0, 0, 10, 10, 0)], 3: []})
    res = evaluate_crowd(gt, [_det(1, 0, 0, 10, 10, 0.9)])
    assert res["JI"] == pytest.approx(50.0)
    assert res["AP"] == pytest.approx(50.0)


def test_json_path_and_unknown_image(tmp_path):
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(TWO_IMAGES))
    dets = [_det(a["image_id"], *a["bbox"], 0.9) for a in TWO_IMAGES["annotations"]]
    assert evaluate_crowd(str(p), dets)["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="unknown image_id"):
        evaluate_crowd(p, [_det(99, 0, 0, 1, 1, 0.5)])
