"""``python -m pgd training-log WORK_DIR --out training_log.json``: a run's training scalars.

MMEngine's ``LocalVisBackend`` writes every logged scalar to
``<work_dir>/<YYYYmmdd_HHMMSS>/vis_data/scalars.json`` (one JSON object per line, one folder per
launch; a resumed run has several). Those folders are not results (they are git-ignored and
not published); this command turns them into one compact file next to the run's
``metrics.json``:

``train``
    one entry per logging interval (``LoggerHook.interval``): ``step`` (global iteration),
    ``epoch``, ``iter``, ``lr``, ``grad_norm`` (when the optimizer wrapper clips) and every
    ``loss*`` term, floats rounded to 4 significant digits.
``val``
    one entry per validation (every ``val_interval`` epochs; the mini schedules validate at
    the last epoch): ``step`` and the metrics (``coco/bbox_mAP``, ...).

Launches are concatenated in time order; when a resumed launch logs a step again, the later
entry wins. If there are more than ``max_points`` train entries, an evenly spaced subset is
kept (always including the first and last) and ``subsampled`` says from how many. A run
without any ``scalars.json`` (e.g. a zero-iteration smoke setting) gets empty lists, not an
error, so the DAG does not depend on a logger detail.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List

from pgd.errors import UserError
from pgd.io import atomic_write_json

TRAIN_KEYS = ('lr', 'base_lr', 'grad_norm')
SKIP_KEYS = {'time', 'data_time', 'memory'}
MAX_POINTS = 400


def _round(x, digits: int = 4):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return x
    if isinstance(x, int):
        return x
    if not math.isfinite(x) or x == 0:
        return x if math.isfinite(x) else None
    return float(f'{x:.{digits}g}')


def scalar_files(work_dir) -> List[Path]:
    """``scalars.json`` of every launch in ``work_dir``, oldest first."""
    return sorted(Path(work_dir).glob('*/vis_data/scalars.json'), key=lambda p: p.parts[-3])


def _is_train(entry: dict) -> bool:
    return any(k == 'loss' or k.startswith('loss_') for k in entry)


def collect(work_dir, max_points: int = MAX_POINTS) -> Dict[str, object]:
    """The compact log of ``work_dir`` (see the module docstring)."""
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}
    files = scalar_files(work_dir)
    for f in files:
        for line in f.read_text(encoding='utf-8').splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed job
            if not isinstance(entry, dict) or 'step' not in entry:
                continue
            step = int(entry['step'])
            if _is_train(entry):
                keep = {k: _round(v) for k, v in entry.items()
                        if k in TRAIN_KEYS or k in ('epoch', 'iter') or k == 'loss'
                        or k.startswith('loss_')}
                train[step] = {'step': step, **keep}
            else:
                keep = {k: _round(v) for k, v in entry.items()
                        if k not in SKIP_KEYS and k != 'step' and isinstance(v, (int, float))}
                if keep:
                    val[step] = {'step': step, **keep}
    points = [train[s] for s in sorted(train)]
    total = len(points)
    if total > max_points >= 2:
        idx = sorted({round(i * (total - 1) / (max_points - 1)) for i in range(max_points)})
        points = [points[i] for i in idx]
    return {'source': 'MMEngine vis_data/scalars.json (LoggerHook interval)',
            'launches': len(files), 'train': points,
            'subsampled': total if len(points) < total else None,
            'val': [val[s] for s in sorted(val)]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('work_dir', help='the run folder (pgd train/distill --work-dir)')
    p.add_argument('--out', required=True, help='compact JSON to write (training_log.json)')
    p.add_argument('--max-points', type=int, default=MAX_POINTS,
                   help=f'most train entries kept (default {MAX_POINTS})')


def run(args) -> int:
    if args.max_points < 2:  # the subsample keeps the first and the last entry
        raise UserError(f'--max-points must be at least 2, got {args.max_points}')
    if not Path(args.work_dir).is_dir():
        raise UserError(f'run folder {args.work_dir} does not exist')
    doc = collect(args.work_dir, args.max_points)
    atomic_write_json(args.out, doc, indent=None)
    print(f"training log: {len(doc['train'])} train entries, {len(doc['val'])} validations "
          f"from {doc['launches']} launch(es) -> {args.out}")
    return 0
