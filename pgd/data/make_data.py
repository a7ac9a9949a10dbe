"""``python -m pgd make-data``: write a SYNTHETIC COCO-format detection dataset.

The images are procedurally drawn by :mod:`pgd.data.synthetic` -- they are not real photos.
Everything written says so: the annotation files are ``synthetic_<kind>_<split>.json`` with
``info.description`` starting with ``"SYNTHETIC"``, images are ``synthetic_<kind>_NNNNNN.jpg``,
and ``DATASET.md`` / ``meta.json`` record the generator version, seed and difficulty knobs.

Layout of ``--out DIR``::

    DIR/train/synthetic_<kind>_000000.jpg ...
    DIR/val/synthetic_<kind>_000000.jpg ...
    DIR/annotations/synthetic_<kind>_train.json
    DIR/annotations/synthetic_<kind>_val.json
    DIR/meta.json
    DIR/DATASET.md

Output is a deterministic function of the arguments: the same seed gives byte-identical json
and identical pixels. Every file is written to a temporary name first and moved into place
with ``os.replace``, so an interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List, Optional

import cv2
import numpy as np

from pgd.data import synthetic as syn

#: smallest image side the generator draws (px); detector configs are held to it too
MIN_IMAGE_SIZE = 64

# COCO's area ranges (pycocotools COCOeval.Params.areaRng), used for the stats in meta.json.
SMALL_MAX, MEDIUM_MAX = 32 ** 2, 96 ** 2


def make_dataset(kind: str, out_dir: str, num_train: int = 1000, num_val: int = 200,
                 image_size: int = 256, seed: int = 0, image_format: str = "jpg",
                 jpeg_quality: int = 90, log=None, **difficulty) -> Dict:
    """Generate and write a SYNTHETIC dataset; return paths, counts, stats and the speed.

    ``difficulty`` overrides fields of :class:`pgd.data.synthetic.ShapesDifficulty` or
    :class:`~pgd.data.synthetic.CrowdDifficulty` (strings are cast). ``log`` is an optional
    ``print``-like callable for progress lines.
    """
    diff = syn.make_difficulty(kind, **difficulty)
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")

    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    result = {"out_dir": out_dir, "kind": kind, "seed": int(seed), "image_size": int(image_size)}
    n_images, started, cpu_started = 0, time.perf_counter(), time.process_time()
    for split, count in (("train", int(num_train)), ("val", int(num_val))):
        img_dir = os.path.join(out_dir, split)
        os.makedirs(img_dir, exist_ok=True)
        coco = _generate_split(kind, split, count, int(image_size), int(seed), diff, img_dir,
                               image_format, int(jpeg_quality), log)
        ann_file = os.path.join(ann_dir, f"synthetic_{kind}_{split}.json")
        _atomic_write(ann_file, json.dumps(coco, separators=(",", ":")).encode())
        result[split] = {"img_dir": img_dir, "ann_file": ann_file,
                         "num_images": len(coco["images"]),
                         "num_annotations": len(coco["annotations"]),
                         "stats": _stats(coco)}
        n_images += count
    # Wall-clock rate is what a user waits for; the CPU-time rate is the single-core speed and
    # does not depend on how busy a shared machine is.
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    result["seconds"] = seconds
    result["images_per_s"] = n_images / seconds if seconds > 0 else float("inf")
    result["cpu_seconds"] = cpu_seconds
    result["images_per_cpu_s"] = n_images / cpu_seconds if cpu_seconds > 0 else float("inf")

    meta = _meta(kind, int(seed), int(image_size), diff, result, image_format)
    result["meta"] = os.path.join(out_dir, "meta.json")
    result["dataset_md"] = os.path.join(out_dir, "DATASET.md")
    _atomic_write(result["meta"], (json.dumps(meta, indent=2) + "\n").encode())
    _atomic_write(result["dataset_md"], _dataset_md(meta).encode())
    return result


def coco_skeleton(kind: str, split: str, seed: int, image_size: int,
                  diff: syn.Difficulty) -> Dict:
    """The ``info``/``categories`` part of a synthetic COCO file (no images yet)."""
    return {
        "info": {
            "description": f"SYNTHETIC {kind} detection dataset ({split}) drawn by "
                           f"pgd.data.synthetic v{syn.GENERATOR_VERSION}, seed {seed}; "
                           "not real images",
            "version": syn.GENERATOR_VERSION,
            "synthetic": True,
            "kind": kind,
            "split": split,
            "seed": seed,
            "image_size": image_size,
            "difficulty": _asdict(diff),
        },
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name, "supercategory": f"synthetic_{kind}"}
                       for i, name in enumerate(syn.classes_for(kind))],
    }


def _generate_split(kind, split, count, size, seed, diff, img_dir, image_format, quality, log):
    coco = coco_skeleton(kind, split, seed, size, diff)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if image_format == "jpg" else \
        [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ann_id = 1
    for index in range(count):
        img, objects = syn.generate_image(kind, seed, split, index, size, diff)
        file_name = f"synthetic_{kind}_{index:06d}.{image_format}"
        ok, buf = cv2.imencode(f".{image_format}", img, params)
        if not ok:
            raise RuntimeError(f"cv2 failed to encode {file_name}")
        _atomic_write(os.path.join(img_dir, file_name), buf.tobytes())
        image_id = index + 1
        coco["images"].append({"id": image_id, "file_name": file_name,
                               "width": size, "height": size})
        for obj in objects:
            x, y, w, h = obj["bbox"]
            ann = {"id": ann_id, "image_id": image_id, "category_id": obj["category_id"],
                   "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            for key in ("fbox", "vbox", "hbox", "visibility"):
                if key in obj:
                    ann[key] = obj[key]
            coco["annotations"].append(ann)
            ann_id += 1
        if log is not None and (index + 1) % 1000 == 0:
            log(f"  {split}: {index + 1}/{count} images")
    return coco


def _stats(coco: Dict) -> Dict:
    """Object counts per image and per COCO area bucket (by the ``area`` field, as COCOeval)."""
    areas = np.array([a["area"] for a in coco["annotations"]], np.float64)
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]],
                            minlength=len(coco["images"]) + 1)[1:]
    return {
        "small": int((areas < SMALL_MAX).sum()),
        "medium": int(((areas >= SMALL_MAX) & (areas < MEDIUM_MAX)).sum()),
        "large": int((areas >= MEDIUM_MAX).sum()),
        "objects_per_image_min": int(per_image.min()) if per_image.size else 0,
        "objects_per_image_max": int(per_image.max()) if per_image.size else 0,
        "objects_per_image_mean": round(float(per_image.mean()), 3) if per_image.size else 0.0,
    }


def _asdict(diff) -> Dict:
    return {f: getattr(diff, f) for f in diff.__dataclass_fields__}


def _meta(kind, seed, size, diff, result, image_format) -> Dict:
    return {
        "synthetic": True,
        "note": "SYNTHETIC data drawn procedurally by pgd.data.synthetic; not real images.",
        "generator": "pgd.data.synthetic",
        "generator_version": syn.GENERATOR_VERSION,
        "kind": kind,
        "classes": list(syn.classes_for(kind)),
        "seed": seed,
        "image_size": size,
        "image_format": image_format,
        "difficulty": _asdict(diff),
        "splits": {s: {"num_images": result[s]["num_images"],
                       "num_annotations": result[s]["num_annotations"],
                       "ann_file": os.path.relpath(result[s]["ann_file"], result["out_dir"]),
                       "img_dir": os.path.relpath(result[s]["img_dir"], result["out_dir"]),
                       "stats": result[s]["stats"]} for s in ("train", "val")},
    }


def _dataset_md(meta: Dict) -> str:
    knobs = "\n".join(f"| `{k}` | {v} |" for k, v in meta["difficulty"].items())
    default = _asdict(syn.make_difficulty(meta["kind"]))
    changed = [f"{k}={v}" for k, v in meta["difficulty"].items() if default[k] != v]
    fmt = " --format png" if meta["image_format"] == "png" else ""
    extra = (" --difficulty " + " ".join(changed) if changed else "") + fmt
    splits = "\n".join(
        f"| {s} | {v['num_images']} | {v['num_annotations']} | {v['stats']['small']} | "
        f"{v['stats']['medium']} | {v['stats']['large']} | `{v['ann_file']}` |"
        for s, v in meta["splits"].items())
    return f"""# SYNTHETIC dataset: `{meta['kind']}`

**This is synthetic data.** Every image was drawn procedurally by `pgd.data.synthetic`
(generator version {meta['generator_version']}); none of it is a real photograph, and results
on it say nothing direct about COCO or CrowdHuman. It exists so the Prediction-Guided
Distillation pipeline can be run end to end, quickly and reproducibly, on a CPU.

- kind: `{meta['kind']}`; classes: {', '.join(meta['classes'])}
- seed: {meta['seed']}; image size: {meta['image_size']} px; format: {meta['image_format']}
- regenerate: `python -m pgd make-data --kind {meta['kind']} --out DIR --seed {meta['seed']} \
--image-size {meta['image_size']} --num-train {meta['splits']['train']['num_images']} \
--num-val {meta['splits']['val']['num_images']}{extra}`

| split | images | objects | small | medium | large | annotations |
|---|---|---|---|---|---|---|
{splits}

Area buckets follow COCO (small < 32², medium < 96², large otherwise, by `area` = box w*h).

| difficulty knob | value |
|---|---|
{knobs}
"""


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Write a SYNTHETIC COCO-format detection dataset (shapes or crowd)."
    parser.add_argument("--kind", required=True, choices=syn.KINDS,
                        help="shapes: 10 shape classes; crowd: CrowdHuman-like persons")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--difficulty", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="override difficulty knobs, e.g. "
                        "max_objects=10 noise=5 (see pgd.data.synthetic)")


def run(args: argparse.Namespace) -> int:
    try:
        overrides = syn.parse_difficulty(args.difficulty)
        result = make_dataset(args.kind, args.out, args.num_train, args.num_val,
                              args.image_size, args.seed, args.image_format, log=print,
                              **overrides)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    for split in ("train", "val"):
        r = result[split]
        st = r["stats"]
        print(f"{split}: {r['num_images']} images, {r['num_annotations']} objects "
              f"(small {st['small']} / medium {st['medium']} / large {st['large']}) -> "
              f"{r['ann_file']}")
    print(f"SYNTHETIC {args.kind} dataset written to {args.out} in {result['seconds']:.2f} s: "
          f"{result['images_per_s']:.1f} images/s wall, {result['images_per_cpu_s']:.1f} "
          f"images per CPU-second (incl. encoding and writing)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pgd make-data")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
