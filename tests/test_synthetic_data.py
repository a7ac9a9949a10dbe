"""Tests for the SYNTHETIC dataset generator (pgd.data.synthetic) and `pgd make-data`."""
import argparse
import glob
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from pgd.data import make_data, synthetic


@pytest.fixture(scope="module")
def shapes_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    return make_data.make_dataset("shapes", str(out), num_train=100, num_val=10, seed=3)


@pytest.fixture(scope="module")
def crowd_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("crowd")
    return make_data.make_dataset("crowd", str(out), num_train=40, num_val=5, seed=3)


def _load(path):
    coco = COCO(path)
    return coco, coco.dataset


def _iou_matrix(b):
    b = np.asarray(b, np.float64)
    x1 = np.maximum(b[:, None, 0], b[None, :, 0])
    y1 = np.maximum(b[:, None, 1], b[None, :, 1])
    x2 = np.minimum(b[:, None, 0] + b[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(b[:, None, 1] + b[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = b[:, 2] * b[:, 3]
    iou = inter / (area[:, None] + area[None, :] - inter)
    np.fill_diagonal(iou, 0.0)
    return iou


def test_class_constants():
    assert len(synthetic.SHAPES_CLASSES) >= 8
    assert len(set(synthetic.SHAPES_CLASSES)) == len(synthetic.SHAPES_CLASSES)
    assert synthetic.CROWD_CLASSES == ("person",)


@pytest.mark.parametrize("kind", ["shapes", "crowd"])
def test_deterministic_same_seed_different_seed(tmp_path, kind):
    runs = [make_data.make_dataset(kind, str(tmp_path / f"r{i}"), 6, 3, seed=s)
            for i, s in enumerate((7, 7, 8))]
    for split in ("train", "val"):
        a, b, c = (open(r[split]["ann_file"], "rb").read() for r in runs)
        assert a == b, "same seed must give byte-identical json"
        assert a != c, "different seed must give different json"
        names = sorted(os.listdir(runs[0][split]["img_dir"]))
        assert names == sorted(os.listdir(runs[1][split]["img_dir"]))
        for name in names:
            pa, pb = (os.path.join(r[split]["img_dir"], name) for r in runs[:2])
            assert open(pa, "rb").read() == open(pb, "rb").read()
    # Arrays: identical for the same (seed, split, index), regardless of generation order.
    later, _ = synthetic.generate_image(kind, 7, "train", 4)
    for i in range(5):
        synthetic.generate_image(kind, 7, "train", i)
    again, objs = synthetic.generate_image(kind, 7, "train", 4)
    assert np.array_equal(later, again)
    other, _ = synthetic.generate_image(kind, 8, "train", 4)
    assert not np.array_equal(later, other)
    val, _ = synthetic.generate_image(kind, 7, "val", 4)
    assert not np.array_equal(later, val)


def test_shapes_coco_validity(shapes_ds):
    for split in ("train", "val"):
        coco, ds = _load(shapes_ds[split]["ann_file"])
        assert ds["info"]["description"].startswith("SYNTHETIC")
        assert len(ds["categories"]) >= 8
        assert [c["name"] for c in ds["categories"]] == list(synthetic.SHAPES_CLASSES)
        cat_ids = {c["id"] for c in ds["categories"]}
        img_ids = [im["id"] for im in ds["images"]]
        ann_ids = [a["id"] for a in ds["annotations"]]
        assert len(set(img_ids)) == len(img_ids) == shapes_ds[split]["num_images"]
        assert len(set(ann_ids)) == len(ann_ids)
        images = {im["id"]: im for im in ds["images"]}
        for im in ds["images"]:
            path = os.path.join(shapes_ds[split]["img_dir"], im["file_name"])
            assert os.path.isfile(path)
        h, w = cv2.imread(path).shape[:2]
        assert (w, h) == (im["width"], im["height"]) == (256, 256)
        for a in ds["annotations"]:
            im = images[a["image_id"]]
            x, y, bw, bh = a["bbox"]
            assert bw > 0 and bh > 0
            assert x >= 0 and y >= 0 and x + bw <= im["width"] and y + bh <= im["height"]
            assert a["area"] == bw * bh and a["iscrowd"] == 0
            assert a["category_id"] in cat_ids


def test_shapes_size_buckets_and_counts(shapes_ds):
    ds = json.load(open(shapes_ds["train"]["ann_file"]))
    areas = np.array([a["area"] for a in ds["annotations"]])
    small, large = (areas < 32 ** 2).sum(), (areas >= 96 ** 2).sum()
    medium = len(areas) - small - large
    print(f"buckets over {len(ds['images'])} images: small {small} medium {medium} large {large}")
    for n in (small, medium, large):
        assert n >= 0.05 * len(areas), (small, medium, large)
    counts = np.bincount([a["image_id"] for a in ds["annotations"]],
                         minlength=len(ds["images"]) + 1)[1:]
    assert counts.min() >= 1 and counts.max() <= 20
    assert counts.std() > 2, "object count per image should vary"
    # Every class occurs; colour is not a class cue (same class, widely different colours).
    assert len({a["category_id"] for a in ds["annotations"]}) == len(synthetic.SHAPES_CLASSES)


def test_shapes_occlusion_limit_respected():
    d = synthetic.make_difficulty("shapes", occlusion_limit=0.3)
    for i in range(20):
        _, objs = synthetic.generate_image("shapes", 0, "train", i, difficulty=d)
        vis = [o["visibility"] for o in objs]
        assert len(objs) == 1 or min(vis) >= 0.7 - 1e-6


def test_crowd_boxes_and_overlap(crowd_ds):
    coco, ds = _load(crowd_ds["train"]["ann_file"])
    assert [c["name"] for c in ds["categories"]] == ["person"]
    assert ds["info"]["description"].startswith("SYNTHETIC")
    max_ious, per_image = [], []
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        per_image.append(len(anns))
        for a in anns:
            f, v, b = (np.array(a[k], float) for k in ("fbox", "vbox", "bbox"))
            assert v[2] > 0 and v[3] > 0 and b[2] > 0 and b[3] > 0
            # vbox inside bbox inside fbox (bbox = fbox clipped to the 256 px image)
            assert v[0] >= b[0] and v[1] >= b[1]
            assert v[0] + v[2] <= b[0] + b[2] and v[1] + v[3] <= b[1] + b[3]
            assert b[0] >= max(f[0], 0) and b[1] >= max(f[1], 0)
            assert b[0] + b[2] <= min(f[0] + f[2], 256) and b[1] + b[3] <= min(f[1] + f[3], 256)
            assert a["visibility"] >= 0.1 and a["iscrowd"] == 0
        if len(anns) >= 2:
            max_ious.extend(_iou_matrix([a["fbox"] for a in anns]).max(1))
    assert np.mean(per_image) >= 5
    mean_max_iou = float(np.mean(max_ious))
    print(f"crowd: mean max-IoU between full boxes {mean_max_iou:.3f}")
    assert mean_max_iou > 0.25, "crowd scenes must overlap heavily"
    vis = np.array([a["visibility"] for a in ds["annotations"]])
    assert (vis < 0.5).mean() > 0.2, "a good share of persons should be heavily occluded"


def test_cli_writes_expected_files(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    make_data.add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(["--kind", "shapes", "--out", str(out), "--num-train", "8",
                              "--num-val", "4", "--seed", "5", "--difficulty", "max_objects=3",
                              "noise=2"])
    assert make_data.run(args) == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "SYNTHETIC" in printed
    assert len(glob.glob(str(out / "train" / "*.jpg"))) == 8
    assert len(glob.glob(str(out / "val" / "*.jpg"))) == 4
    for split in ("train", "val"):
        ds = json.load(open(out / "annotations" / f"synthetic_shapes_{split}.json"))
        counts = np.bincount([a["image_id"] for a in ds["annotations"]])
        assert counts.max() <= 3
    meta = json.load(open(out / "meta.json"))
    assert meta["synthetic"] is True and meta["seed"] == 5
    assert meta["generator_version"] == synthetic.GENERATOR_VERSION
    assert meta["difficulty"]["max_objects"] == 3 and meta["difficulty"]["noise"] == 2.0
    assert "SYNTHETIC" in (out / "DATASET.md").read_text()
    assert not glob.glob(str(out / "**" / "*.tmp-*"), recursive=True)


@pytest.mark.parametrize("bad", [["foo=1"], ["noise=abc"], ["max_objects"],
                                 ["min_objects=5", "max_objects=2"]])
def test_cli_rejects_bad_difficulty(tmp_path, bad):
    parser = argparse.ArgumentParser()
    make_data.add_arguments(parser)
    args = parser.parse_args(["--kind", "shapes", "--out", str(tmp_path), "--num-train", "1",
                              "--num-val", "1", "--difficulty", *bad])
    with pytest.raises(SystemExit) as e:
        make_data.run(args)
    msg = str(e.value.code)
    assert msg.startswith("error:") and "\n" not in msg


def test_largest_elongated_shapes_fit_inside_small_images():
    # With max_size at its limit, elongated shapes (arrows, ellipses) used to come out longer
    # than the image side and made placement fail ("high <= 0") at small image sizes.
    d = synthetic.make_difficulty("shapes", min_size=0.6, max_size=0.7, max_objects=10)
    for i in range(60):
        img, objs = synthetic.generate_image("shapes", 0, "train", i, 96, d)
        for o in objs:
            x, y, w, h = o["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96, o["bbox"]
