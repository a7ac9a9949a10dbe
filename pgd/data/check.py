"""``python -m pgd check-data``: one check of a COCO-format split, the same for training and
evaluation.

Why: MMDetection's ``CocoDataset`` silently *drops* some annotations while training (boxes
with width or height below 1 px or area <= 0, boxes with no overlap with the image, unknown
category ids), while pycocotools *counts* the very same annotations when it evaluates -- so
the model is scored on objects it was never shown. Other bad inputs fail late and obscurely
(a file without annotations: ``need at least one array to concatenate``; a zero-byte image:
a cv2 error without its file name). This module finds all of them before any work starts:

* reading the annotation JSON only (no image is decoded; image files are checked for
  existence and non-zero size), so it is cheap enough to run before every
  ``pgd train`` / ``pgd distill`` / ``pgd test`` (for the train and the val split alike);
* it refuses (:class:`~pgd.errors.UserError`, exit 2) with counts and example ids / file
  names, or, with an explicit ``--repair OUT``, writes a cleaned annotation file plus a JSON
  report of what was removed (``OUT`` with suffix ``.report.json``).

The rules mirror ``mmdet.datasets.CocoDataset.parse_data_info`` so that what is refused is
exactly what training would have dropped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from pgd.errors import UserError

#: problem key -> what it means (order = order of the report).
PROBLEMS = {
    'bad_image_entry': 'image entries without an integer id, a file_name or a positive '
                       'width/height',
    'duplicate_image_id': 'image ids listed more than once',
    'missing_image_file': 'image files that do not exist',
    'empty_image_file': 'image files of zero bytes',
    'unknown_image_id': 'annotations of an image id not in images',
    'unknown_category_id': 'annotations with a category_id not in categories',
    'non_finite_box': 'boxes that are not 4 finite numbers (NaN, inf, missing)',
    'degenerate_box': 'boxes with width or height below 1 px (zero or negative)',
    'box_outside_image': 'boxes that do not overlap their image',
    'bad_area': 'annotations whose area is missing or not > 0',
}
#: problems no repair can fix: the split would be empty.
FATAL = {
    'no_images': 'has no images',
    'no_annotations': 'has no annotations',
    'no_categories': 'has no categories',
}
EXAMPLES = 5


@dataclass
class DataReport:
    """What :func:`check_split` found in one annotation file."""

    ann_file: str
    images_dir: Optional[str]
    num_images: int = 0
    num_annotations: int = 0
    problems: Dict[str, List] = field(default_factory=dict)  # key -> offending ids/names
    fatal: List[str] = field(default_factory=list)
    bad_image_ids: set = field(default_factory=set)
    bad_ann_index: set = field(default_factory=set)      # positions in coco['annotations']
    coco: Optional[dict] = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.fatal

    def add(self, key: str, example) -> None:
        self.problems.setdefault(key, []).append(example)

    def lines(self) -> List[str]:
        """One line per problem: count, meaning and examples."""
        out = [f'{self.ann_file} {FATAL[k]}' for k in self.fatal]
        for key in PROBLEMS:
            items = self.problems.get(key)
            if items:
                ex = ', '.join(str(x) for x in items[:EXAMPLES])
                more = ', ...' if len(items) > EXAMPLES else ''
                out.append(f'{len(items)} {PROBLEMS[key]} (e.g. {ex}{more})')
        return out

    def summary(self) -> str:
        """All problems on one line (for a refusing error message)."""
        return f'{self.ann_file}: ' + '; '.join(self.lines())

    def as_dict(self) -> dict:
        return {'ann_file': self.ann_file, 'images_dir': self.images_dir,
                'num_images': self.num_images, 'num_annotations': self.num_annotations,
                'fatal': list(self.fatal),
                'problems': {k: {'count': len(v), 'meaning': PROBLEMS[k],
                                 'items': list(v)} for k, v in self.problems.items()}}


def load_coco(path: Path) -> dict:
    """The annotation JSON, or a one-line :class:`UserError` (missing, corrupt, not COCO)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f'annotation file not found: {path} (create the dataset first, e.g. '
                        '`python -m pgd make-data`, or pass --data-root)')
    try:
        with open(path, encoding='utf-8') as fh:
            coco = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f'corrupt annotation file {path}: not COCO JSON ({exc})') from None
    if not isinstance(coco, dict):
        raise UserError(f'corrupt annotation file {path}: not COCO JSON (not an object)')
    missing = [k for k in ('images', 'annotations', 'categories')
               if not isinstance(coco.get(k), list)]
    if missing:
        raise UserError(f'corrupt annotation file {path}: not COCO JSON (missing or not a '
                        f'list: {", ".join(missing)})')
    return coco


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_split(ann_file, images_dir=None, classes: Optional[Sequence[str]] = None,
                check_images: bool = True) -> DataReport:
    """Check one COCO annotation file (and, if ``images_dir`` is given, its image files).

    ``classes`` (the config's class names), when given, must name at least one of the
    file's categories: MMDetection keeps only annotations of categories named in the config,
    so a file of another dataset would otherwise train on nothing."""
    coco = load_coco(Path(ann_file))
    rep = DataReport(str(ann_file), None if images_dir is None else str(images_dir),
                     len(coco['images']), len(coco['annotations']), coco=coco)
    for key, items in (('no_images', coco['images']), ('no_annotations', coco['annotations']),
                       ('no_categories', coco['categories'])):
        if not items:
            rep.fatal.append(key)
    cat_ids = {c.get('id') for c in coco['categories'] if isinstance(c, dict)}
    if classes is not None and coco['categories']:
        names = {c.get('name') for c in coco['categories'] if isinstance(c, dict)}
        if not names & set(classes):
            have = ', '.join(sorted(map(str, names)))
            raise UserError(f'{ann_file}: none of its categories ({have}) is a class of the '
                            f'config ({", ".join(classes)}); wrong dataset for this config?')
    sizes: Dict[object, tuple] = {}
    for img in coco['images']:
        iid = img.get('id') if isinstance(img, dict) else None
        name = img.get('file_name') if isinstance(img, dict) else None
        w = img.get('width') if isinstance(img, dict) else None
        h = img.get('height') if isinstance(img, dict) else None
        if (not isinstance(iid, int) or isinstance(iid, bool) or not isinstance(name, str)
                or not name or not _number(w) or not _number(h) or w <= 0 or h <= 0):
            rep.add('bad_image_entry', f'image {iid!r}')
            if iid is not None:
                rep.bad_image_ids.add(iid)
            continue
        if iid in sizes:
            rep.add('duplicate_image_id', f'image id {iid}')
            rep.bad_image_ids.add(iid)
            continue
        sizes[iid] = (w, h)
        if check_images and images_dir is not None:
            path = os.path.join(str(images_dir), name)
            try:
                size = os.stat(path).st_size
            except OSError:
                rep.add('missing_image_file', name)
                rep.bad_image_ids.add(iid)
                continue
            if size == 0:
                rep.add('empty_image_file', name)
                rep.bad_image_ids.add(iid)
    for i, ann in enumerate(coco['annotations']):
        if not isinstance(ann, dict):
            rep.add('non_finite_box', f'annotation #{i}')
            rep.bad_ann_index.add(i)
            continue
        ident = f'annotation {ann.get("id", "#" + str(i))}'
        problem = _annotation_problem(ann, sizes, cat_ids)
        if problem:
            rep.add(problem, ident)
            rep.bad_ann_index.add(i)
    return rep


def _annotation_problem(ann: dict, sizes: dict, cat_ids: set) -> Optional[str]:
    """The first problem of one annotation (mmdet's ``parse_data_info`` order), or None."""
    if ann.get('image_id') not in sizes:
        return 'unknown_image_id'
    if ann.get('category_id') not in cat_ids:
        return 'unknown_category_id'
    box = ann.get('bbox')
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(map(_number, box))):
        return 'non_finite_box'
    x, y, w, h = box
    if w < 1 or h < 1:
        return 'degenerate_box'
    img_w, img_h = sizes[ann['image_id']]
    if (max(0, min(x + w, img_w) - max(x, 0)) * max(0, min(y + h, img_h) - max(y, 0))) == 0:
        return 'box_outside_image'
    if not _number(ann.get('area')) or ann['area'] <= 0:
        return 'bad_area'
    return None


def require_clean(ann_file, images_dir=None, classes: Optional[Sequence[str]] = None) -> None:
    """Refuse (one-line :class:`UserError`) a split with any problem; the message names the
    repair command."""
    rep = check_split(ann_file, images_dir, classes)
    if not rep.ok:
        fix = (f'; to drop them: python -m pgd check-data --ann {ann_file}'
               + (f' --images {images_dir}' if images_dir is not None else '')
               + ' --repair CLEAN.json' if not rep.fatal else '')
        raise UserError(rep.summary() + fix)


def report_path(out) -> Path:
    """Where the removal report of a repaired file goes: ``clean.json`` ->
    ``clean.report.json``."""
    out = Path(out)
    stem = out.name[:-len('.json')] if out.name.endswith('.json') else out.name
    return out.with_name(stem + '.report.json')


def repair(rep: DataReport, out) -> dict:
    """Write the cleaned annotation file ``out`` (problem annotations and bad images and
    their annotations removed) and the removal report; return the report."""
    from pgd.io import atomic_write_json, atomic_write_text
    if rep.fatal:
        raise UserError(rep.summary() + ' (nothing to repair)')
    coco = rep.coco
    keep_images, seen = [], set()
    for img in coco['images']:
        iid = img.get('id') if isinstance(img, dict) else None
        if iid in rep.bad_image_ids or iid in seen or iid is None:
            continue
        seen.add(iid)
        keep_images.append(img)
    removed_anns, keep_anns = [], []
    for i, ann in enumerate(coco['annotations']):
        if i in rep.bad_ann_index or ann.get('image_id') not in seen:
            removed_anns.append(ann.get('id', f'#{i}') if isinstance(ann, dict) else f'#{i}')
        else:
            keep_anns.append(ann)
    if not keep_anns or not keep_images:
        raise UserError(f'{rep.ann_file}: nothing would be left after removing the problems '
                        f'({"; ".join(rep.lines())})')
    clean = {**coco, 'images': keep_images, 'annotations': keep_anns}
    report = {**rep.as_dict(), 'repaired_file': Path(out).name,
              'removed': {'images': sorted(rep.bad_image_ids, key=str),
                          'annotations': removed_anns},
              'kept': {'images': len(keep_images), 'annotations': len(keep_anns)}}
    atomic_write_text(out, json.dumps(clean, separators=(',', ':'), allow_nan=True))
    atomic_write_json(report_path(out), report)
    return report


def dataset_splits(dataset_dir) -> List[tuple]:
    """``[(annotation file, image folder)]`` of a dataset written by ``pgd make-data`` or
    ``pgd split-holdout``: ``annotations/<stem>_<split>.json`` with images in ``<split>/``."""
    root = Path(dataset_dir)
    out = []
    for split in ('train', 'val'):
        for ann in sorted((root / 'annotations').glob(f'*_{split}.json')):
            out.append((ann, root / split))
    if not out:
        raise UserError(f'{root}: no annotations/*_train.json or *_val.json to check')
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--ann', help='COCO annotation JSON of one split')
    p.add_argument('--images', help='folder the file_name of each image is relative to')
    p.add_argument('--dataset-dir', help='check every split of a dataset folder written by '
                   'make-data / split-holdout (annotations/<stem>_<split>.json + <split>/)')
    p.add_argument('--repair', metavar='OUT', help='write a cleaned copy of --ann to OUT '
                   '(bad annotations and images removed) and OUT.report.json (what was removed) '
                   'instead of refusing')


def run(args) -> int:
    if bool(args.ann) == bool(args.dataset_dir):
        raise UserError('check-data needs exactly one of --ann FILE or --dataset-dir DIR')
    if args.repair and not args.ann:
        raise UserError('--repair needs --ann (one split at a time)')
    splits = [(args.ann, args.images)] if args.ann else dataset_splits(args.dataset_dir)
    failed = []
    for ann, images in splits:
        rep = check_split(ann, images)
        if args.repair:
            report = repair(rep, args.repair)
            print(f'[pgd check-data] {ann}: removed {len(report["removed"]["annotations"])} '
                  f'annotations and {len(report["removed"]["images"])} images -> '
                  f'{args.repair} (what was removed: {report_path(args.repair)})')
            continue
        if rep.ok:
            print(f'[pgd check-data] {ann}: ok ({rep.num_images} images, '
                  f'{rep.num_annotations} annotations'
                  + ('' if images is None else ', image files present and non-empty') + ')')
            continue
        print(f'[pgd check-data] {ann}:')
        for line in rep.lines():
            print(f'  {line}')
        failed.append(rep)
    if failed:
        raise UserError('; '.join(r.summary() for r in failed)
                        + ' -- fix the data, or write a cleaned copy with --repair OUT')
    return 0
