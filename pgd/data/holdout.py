"""``python -m pgd split-holdout``: cut a dataset's TRAIN split into a fit part and a held-out
part, for choosing hyper-parameters (the per-method loss scales) without ever looking at val.

The output is a dataset directory every other command reads unchanged (``--data-root OUT``)::

    OUT/annotations/<stem>_train.json   the fit images (training)
    OUT/annotations/<stem>_val.json     the held-out images (evaluation)
    OUT/train -> SRC/train              both point at the source's TRAIN images
    OUT/val   -> SRC/train
    OUT/meta.json                       the source's meta plus ``holdout_of`` / ``holdout``

``<stem>`` is taken from the source's ``*_train.json`` (``synthetic_shapes`` for the shapes
data), so the dataset configs find the files under their usual names. The split is a
deterministic function of the image ids and ``--seed`` (a seeded permutation), never of the
annotation content. Files are written atomically; the image folders are relative symlinks, so
OUT can move together with SRC.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Dict, List

import numpy as np

from pgd.errors import UserError
from pgd.io import atomic_write_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--src', required=True, help='dataset directory (annotations/*_train.json)')
    p.add_argument('--out', required=True, help='output dataset directory')
    p.add_argument('--fraction', type=float, default=0.2,
                   help='fraction of the train images held out (default 0.2)')
    p.add_argument('--seed', type=int, default=0)


def _train_annotation(src: Path) -> Path:
    found = sorted((src / 'annotations').glob('*_train.json'))
    if len(found) != 1:
        raise UserError(f'{src}: expected exactly one annotations/*_train.json, found '
                        f'{len(found)}')
    return found[0]


def _subset(coco: Dict, image_ids: List[int], description: str) -> Dict:
    keep = set(image_ids)
    out = {k: v for k, v in coco.items() if k not in ('images', 'annotations')}
    out['images'] = [im for im in coco['images'] if im['id'] in keep]
    out['annotations'] = [a for a in coco['annotations'] if a['image_id'] in keep]
    info = dict(coco.get('info') or {})
    info['description'] = f"{info.get('description', '')} [{description}]".strip()
    out['info'] = info
    return out


def split_holdout(src: str, out: str, fraction: float = 0.2, seed: int = 0) -> Dict:
    """Write the fit / held-out dataset; return the counts."""
    src_p, out_p = Path(src), Path(out)
    if not 0 < fraction < 1:
        raise UserError(f'--fraction must be in (0, 1), got {fraction}')
    ann = _train_annotation(src_p)
    stem = ann.name[:-len('_train.json')]
    try:
        coco = json.loads(ann.read_text())
        ids = sorted(int(im['id']) for im in coco['images'])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f'corrupt annotation file {ann}: {exc}') from None
    num_held = int(round(fraction * len(ids)))
    if num_held < 1 or num_held >= len(ids):
        raise UserError(f'{len(ids)} train images cannot be split with fraction {fraction}')
    order = np.random.default_rng(seed).permutation(len(ids))
    held = sorted(ids[i] for i in order[:num_held])
    fit = sorted(ids[i] for i in order[num_held:])

    (out_p / 'annotations').mkdir(parents=True, exist_ok=True)
    tag = f'train images held out for tuning: fraction {fraction}, seed {seed}'
    atomic_write_text(out_p / 'annotations' / f'{stem}_train.json',
                      json.dumps(_subset(coco, fit, f'fit part; {tag}')))
    atomic_write_text(out_p / 'annotations' / f'{stem}_val.json',
                      json.dumps(_subset(coco, held, f'HELD-OUT part; {tag}')))
    for name in ('train', 'val'):
        link = out_p / name
        target = os.path.relpath(src_p / 'train', out_p)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink():
            link.unlink()
        tmp = out_p / f'.{name}.tmp-link'
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    meta_src = src_p / 'meta.json'
    meta = json.loads(meta_src.read_text()) if meta_src.is_file() else {}
    meta.update(holdout_of=str(src_p), holdout=dict(fraction=fraction, seed=seed,
                                                      num_fit=len(fit), num_held_out=len(held)))
    result = {'out_dir': str(out_p), 'num_fit': len(fit), 'num_held_out': len(held)}
    # meta.json last: the workflow's output marker appears only once everything is in place
    atomic_write_text(out_p / 'meta.json', json.dumps(meta, indent=1))
    return result


def run(args) -> int:
    res = split_holdout(args.src, args.out, args.fraction, args.seed)
    print(f"held out {res['num_held_out']} of {res['num_fit'] + res['num_held_out']} train "
          f"images -> {res['out_dir']} (fit: annotations/*_train.json, held out: *_val.json)")
    return 0
