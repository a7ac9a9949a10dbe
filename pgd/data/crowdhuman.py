"""``python -m pgd convert-crowdhuman``: CrowdHuman ``.odgt`` annotations -> COCO json.

This converts the REAL CrowdHuman dataset (not synthetic). An ``.odgt`` file is JSON lines, one
image per line::

    {"ID": "273271,c9db000d5146c15", "gtboxes": [
        {"tag": "person" | "mask", "hbox": [x, y, w, h], "fbox": [...], "vbox": [...],
         "extra": {"box_id": 0, "occ": 0, "ignore": 0 | 1}, "head_attr": {...}}, ...]}

and the image is ``<ID>.jpg`` in the images directory. The output is one COCO json with a
single category ``person`` (id 1):

* ``bbox`` is the chosen box (``full`` = ``fbox`` by default, or ``visible`` = ``vbox``) clipped
  to the image -- CrowdHuman full boxes often extend past the border; boxes with nothing left
  inside the image are dropped (and counted). ``area`` is the clipped ``w * h``.
* ``fbox``/``vbox``/``hbox`` are kept unclipped as in the source, for crowd-specific metrics.
* ``tag == "mask"`` (crowds, reflections, statues...) or ``extra.ignore == 1`` -> ``iscrowd=1``,
  which MMDetection and COCOeval treat as ignore regions rather than objects to detect.
* Image width/height are read from the image file header (so the images must be present).

This is the same layout that ``python -m pgd make-data --kind crowd`` writes for its SYNTHETIC
stand-in, so training configs work on either.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, Iterator, List, Optional, Tuple

from pgd.io import atomic_write_text

BOX_KEYS = {"full": "fbox", "visible": "vbox"}


def iter_odgt(path: str) -> Iterator[Tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; ValueError names the bad line."""
    if not os.path.isfile(path):
        raise ValueError(f"odgt file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: malformed JSON ({e.msg} at column "
                                 f"{e.colno})") from None
            _check_record(record, path, lineno)
            yield lineno, record


def convert_crowdhuman(odgt: str, images_dir: str, out_json: str, box: str = "full") -> Dict:
    """Convert ``odgt`` (+ image sizes from ``images_dir``) to COCO json at ``out_json``.

    Returns a summary: ``images``, ``annotations``, ``ignore`` (iscrowd=1 annotations) and
    ``dropped`` (boxes entirely outside their image or of zero size), plus ``out_json``.
    """
    if box not in BOX_KEYS:
        raise ValueError(f"box must be one of {sorted(BOX_KEYS)}, got {box!r}")
    if not os.path.isdir(images_dir):
        raise ValueError(f"images directory not found: {images_dir}")
    coco = {
        "info": {"description": f"CrowdHuman (real data) converted from "
                                f"{os.path.basename(odgt)} by pgd.data.crowdhuman; bbox = "
                                f"{box} box ({BOX_KEYS[box]}) clipped to the image",
                 "source": "CrowdHuman", "synthetic": False, "box": box},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    seen = {}
    dropped = 0
    for lineno, rec in iter_odgt(odgt):
        image_id = len(coco["images"]) + 1
        if rec["ID"] in seen:
            raise ValueError(f"{odgt}: line {lineno}: duplicate ID {rec['ID']!r} "
                             f"(first on line {seen[rec['ID']]})")
        seen[rec["ID"]] = lineno
        file_name = f"{rec['ID']}.jpg"
        width, height = _image_size(os.path.join(images_dir, file_name), odgt, lineno)
        coco["images"].append({"id": image_id, "file_name": file_name, "width": width,
                               "height": height, "crowdhuman_id": rec["ID"]})
        for gt in rec["gtboxes"]:
            ann = _annotation(gt, box, width, height)
            if ann is None:
                dropped += 1
                continue
            ann.update(id=len(coco["annotations"]) + 1, image_id=image_id)
            coco["annotations"].append(ann)
    # tmp + replace: never a half-written json
    atomic_write_text(out_json, json.dumps(coco, separators=(",", ":")))
    return {"out_json": out_json, "images": len(coco["images"]),
            "annotations": len(coco["annotations"]),
            "ignore": sum(a["iscrowd"] for a in coco["annotations"]), "dropped": dropped}


def _annotation(gt: dict, box: str, width: int, height: int) -> Optional[dict]:
    x, y, w, h = gt[BOX_KEYS[box]]
    x0, y0 = max(float(x), 0.0), max(float(y), 0.0)
    x1, y1 = min(float(x) + float(w), float(width)), min(float(y) + float(h), float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    ignore = gt.get("tag") != "person" or int((gt.get("extra") or {}).get("ignore", 0)) == 1
    ann = {"category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
           "iscrowd": int(ignore), "tag": gt.get("tag")}
    for key in ("fbox", "vbox", "hbox"):
        if key in gt:
            ann[key] = [float(v) for v in gt[key]]
    return ann


def _check_record(rec, path: str, lineno: int) -> None:
    where = f"{path}: line {lineno}"
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if not isinstance(rec.get("ID"), str) or not rec["ID"]:
        raise ValueError(f"{where}: missing or empty string field 'ID'")
    if not isinstance(rec.get("gtboxes"), list):
        raise ValueError(f"{where}: missing list field 'gtboxes'")
    for i, gt in enumerate(rec["gtboxes"]):
        if not isinstance(gt, dict):
            raise ValueError(f"{where}: gtboxes[{i}] is not an object")
        for key in ("fbox", "vbox"):
            b = gt.get(key)
            if not (isinstance(b, list) and len(b) == 4 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
                raise ValueError(f"{where}: gtboxes[{i}].{key} must be 4 numbers [x, y, w, h], "
                                 f"got {b!r}")


def _image_size(path: str, odgt: str, lineno: int) -> Tuple[int, int]:
    """(width, height) from the image header (PIL reads only the header; cv2 as fallback)."""
    if not os.path.isfile(path):
        raise ValueError(f"{odgt}: line {lineno}: image not found: {path}")
    try:
        from PIL import Image
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except ImportError:
        pass
    except Exception as e:  # PIL's errors are varied; report them on one line
        raise ValueError(f"{odgt}: line {lineno}: cannot read image {path}: {e}") from None
    import cv2
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{odgt}: line {lineno}: cannot read image {path}")
    return int(img.shape[1]), int(img.shape[0])


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Convert CrowdHuman .odgt annotations (real data) to COCO json."
    parser.add_argument("--odgt", required=True, help="annotation_train.odgt / _val.odgt")
    parser.add_argument("--images-dir", required=True, help="directory holding <ID>.jpg")
    parser.add_argument("--out", required=True, help="output COCO json path")
    parser.add_argument("--box", choices=sorted(BOX_KEYS), default="full",
                        help="which CrowdHuman box becomes 'bbox' (default: full)")


def run(args: argparse.Namespace) -> int:
    try:
        s = convert_crowdhuman(args.odgt, args.images_dir, args.out, args.box)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"CrowdHuman -> COCO: {s['images']} images, {s['annotations']} boxes "
          f"({s['ignore']} ignore regions, {s['dropped']} dropped outside the image) -> "
          f"{s['out_json']}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pgd convert-crowdhuman")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
