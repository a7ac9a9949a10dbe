"""Tests for the CrowdHuman .odgt -> COCO converter (pgd.data.crowdhuman)."""
import argparse
import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from pgd.data import crowdhuman

IMAGES = {"273271,c9db000d5146c15": (64, 48), "284193,faa9000f2678b5e": (80, 60)}
RECORDS = [
    {"ID": "273271,c9db000d5146c15", "gtboxes": [
        {"tag": "person", "hbox": [12, 5, 6, 6], "fbox": [10, 4, 20, 40], "vbox": [10, 4, 15, 30],
         "extra": {"box_id": 0, "occ": 1}, "head_attr": {"ignore": 0}},
        {"tag": "person", "hbox": [40, 2, 5, 5], "fbox": [50, -5, 30, 40], "vbox": [52, 0, 10, 20],
         "extra": {"box_id": 1, "occ": 0, "ignore": 1}},
        {"tag": "mask", "hbox": [0, 30, 10, 10], "fbox": [0, 30, 10, 10], "vbox": [0, 30, 10, 10],
         "extra": {"box_id": 2, "ignore": 1}},
        {"tag": "person", "fbox": [100, 100, 10, 10], "vbox": [100, 100, 5, 5],
         "extra": {"box_id": 3}},  # entirely outside the 64x48 image -> dropped
    ]},
    {"ID": "284193,faa9000f2678b5e", "gtboxes": [
        {"tag": "person", "hbox": [3, 3, 4, 4], "fbox": [2, 2, 30, 50], "vbox": [2, 10, 25, 30],
         "extra": {"box_id": 0, "occ": 0, "ignore": 0}},
    ]},
]


def _write(tmp_path, records=RECORDS, lines=None):
    img_dir = tmp_path / "Images"
    img_dir.mkdir(exist_ok=True)
    for name, (w, h) in IMAGES.items():
        cv2.imwrite(str(img_dir / f"{name}.jpg"), np.full((h, w, 3), 127, np.uint8))
    odgt = tmp_path / "annotation_train.odgt"
    lines = lines if lines is not None else [json.dumps(r) for r in records]
    odgt.write_text("\n".join(lines) + "\n")
    return odgt, img_dir


def _run(argv):
    parser = argparse.ArgumentParser()
    crowdhuman.add_arguments(parser)
    return crowdhuman.run(parser.parse_args(argv))


def test_convert_full_boxes(tmp_path, capsys):
    odgt, img_dir = _write(tmp_path)
    out = tmp_path / "out" / "train.json"
    assert _run(["--odgt", str(odgt), "--images-dir", str(img_dir), "--out", str(out)]) == 0
    assert "2 images" in capsys.readouterr().out
    coco = COCO(str(out))
    ds = coco.dataset
    assert ds["categories"] == [{"id": 1, "name": "person", "supercategory": "person"}]
    assert [(im["file_name"], im["width"], im["height"]) for im in ds["images"]] == [
        ("273271,c9db000d5146c15.jpg", 64, 48), ("284193,faa9000f2678b5e.jpg", 80, 60)]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=1))
    assert len(anns) == 3  # the box outside the image is dropped
    normal, ignored, mask = anns
    assert normal["bbox"] == [10, 4, 20, 40] and normal["iscrowd"] == 0
    assert normal["area"] == 800 and normal["vbox"] == [10, 4, 15, 30]
    assert normal["fbox"] == [10, 4, 20, 40] and normal["hbox"] == [12, 5, 6, 6]
    # fbox leaves the image -> bbox clipped, fbox kept as in the source; ignore=1 -> iscrowd
    assert ignored["bbox"] == [50, 0, 14, 35] and ignored["fbox"] == [50, -5, 30, 40]
    assert ignored["iscrowd"] == 1
    assert mask["iscrowd"] == 1 and mask["tag"] == "mask"
    (second,) = coco.loadAnns(coco.getAnnIds(imgIds=2))
    assert second["bbox"] == [2, 2, 30, 50] and second["iscrowd"] == 0
    assert len({a["id"] for a in ds["annotations"]}) == len(ds["annotations"]) == 4
    assert ds["info"]["synthetic"] is False


def test_convert_visible_boxes(tmp_path):
    odgt, img_dir = _write(tmp_path)
    out = tmp_path / "val.json"
    summary = crowdhuman.convert_crowdhuman(str(odgt), str(img_dir), str(out), box="visible")
    assert summary["images"] == 2 and summary["dropped"] == 1 and summary["ignore"] == 2
    ds = json.load(open(out))
    by_img = [a for a in ds["annotations"] if a["image_id"] == 1]
    assert by_img[0]["bbox"] == [10, 4, 15, 30]
    assert by_img[1]["bbox"] == [52, 0, 10, 20]
    assert by_img[0]["fbox"] == [10, 4, 20, 40]


def _error(argv):
    with pytest.raises(SystemExit) as e:
        _run(argv)
    msg = str(e.value.code)
    assert msg.startswith("error:") and "\n" not in msg
    return msg


def test_missing_odgt_is_a_clear_error(tmp_path):
    msg = _error(["--odgt", str(tmp_path / "nope.odgt"), "--images-dir", str(tmp_path),
                  "--out", str(tmp_path / "o.json")])
    assert "not found" in msg and "nope.odgt" in msg


def test_malformed_line_names_the_line(tmp_path):
    odgt, img_dir = _write(tmp_path, lines=[json.dumps(RECORDS[0]), '{"ID": "x", "gtboxes": [',
                                            json.dumps(RECORDS[1])])
    out = tmp_path / "o.json"
    msg = _error(["--odgt", str(odgt), "--images-dir", str(img_dir), "--out", str(out)])
    assert "line 2" in msg and "malformed" in msg
    assert not out.exists(), "no partial output on error"


def test_bad_box_and_missing_image(tmp_path):
    bad = {"ID": "273271,c9db000d5146c15", "gtboxes": [{"tag": "person", "fbox": [1, 2, 3],
                                                        "vbox": [1, 2, 3, 4]}]}
    odgt, img_dir = _write(tmp_path, lines=[json.dumps(bad)])
    msg = _error(["--odgt", str(odgt), "--images-dir", str(img_dir), "--out",
                  str(tmp_path / "o.json")])
    assert "line 1" in msg and "fbox" in msg
    missing = {"ID": "no_such_image", "gtboxes": []}
    odgt, img_dir = _write(tmp_path, lines=[json.dumps(RECORDS[1]), json.dumps(missing)])
    msg = _error(["--odgt", str(odgt), "--images-dir", str(img_dir), "--out",
                  str(tmp_path / "o.json")])
    assert "line 2" in msg and "image not found" in msg
