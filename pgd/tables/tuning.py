"""``python -m pgd tuning-summary``: the per-method loss-scale search as one small CSV.

Input: the tagged metrics files of the ``tune_<method>`` tables (config/tuning.yaml), each a
run on the HELD-OUT part of the synthetic TRAIN split. Output, one row per (method, detector,
loss_scale) plus the student baseline::

    method,detector,loss_scale,AP,AP50,gain_vs_student,chosen,run,git_commit

``chosen`` marks, per method, the scale with the highest held-out AP (ties: the scale closest
to 1 on a log scale, i.e. the least change to the published weights). Written atomically.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List

from pgd.errors import UserError
from pgd.io import atomic_write_text

PREFIX = 'tune_'
SCALE_SETTING = 'loss_scale='


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--metrics', nargs='+', required=True,
                   help='tagged metrics files of the tune_<method> tables')
    p.add_argument('--out', required=True, help='CSV to write')


def _load(path: str) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
        return {'table': doc['run']['table'], 'detector': doc['run']['detector'],
                'setting': doc['run']['setting'], 'AP': doc['metrics']['AP'],
                'AP50': doc['metrics']['AP50'], 'run': doc['run']['evaluated_as']['run'],
                'git_commit': doc['provenance'].get('git_commit', '')}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f'{path}: not a tagged metrics file ({exc})') from None


def summarise(records: List[dict]) -> List[dict]:
    """Rows of the CSV (see module docstring), methods in name order, scales ascending."""
    students = {r['detector']: r for r in records if r['setting'] == 'student'}
    rows: Dict[str, List[dict]] = {}
    for r in records:
        if not r['table'].startswith(PREFIX) or not r['setting'].startswith(SCALE_SETTING):
            continue
        method = r['table'][len(PREFIX):]
        base = students.get(r['detector'])
        ap = r['AP']
        rows.setdefault(method, []).append({
            'method': method, 'detector': r['detector'],
            'loss_scale': float(r['setting'][len(SCALE_SETTING):]), 'AP': ap, 'AP50': r['AP50'],
            'gain_vs_student': (None if base is None or ap is None or base['AP'] is None
                                else round(ap - base['AP'], 2)),
            'chosen': False, 'run': r['run'], 'git_commit': r['git_commit']})
    out = []
    for method in sorted(rows):
        group = sorted(rows[method], key=lambda x: x['loss_scale'])
        scored = [g for g in group if g['AP'] is not None]
        if scored:
            best = max(scored, key=lambda g: (g['AP'], -abs(math.log(g['loss_scale']))))
            best['chosen'] = True
        out.extend(group)
    for det, r in sorted(students.items()):
        out.append({'method': 'student', 'detector': det, 'loss_scale': None, 'AP': r['AP'],
                    'AP50': r['AP50'], 'gain_vs_student': 0.0, 'chosen': False,
                    'run': r['run'], 'git_commit': r['git_commit']})
    return out


def to_csv(rows: List[dict]) -> str:
    cols = ['method', 'detector', 'loss_scale', 'AP', 'AP50', 'gain_vs_student', 'chosen',
            'run', 'git_commit']
    lines = ['# SYNTHETIC data: per-method global loss scale chosen on HELD-OUT TRAIN images '
             '(never val); see config/tuning.yaml', ','.join(cols)]
    for r in rows:
        lines.append(','.join('' if r[c] is None else str(r[c]) for c in cols))
    return '\n'.join(lines) + '\n'


def run(args) -> int:
    rows = summarise([_load(p) for p in args.metrics])
    if not any(r['chosen'] for r in rows):
        raise UserError('no tune_<method> loss_scale=<s> rows with an AP among the inputs')
    atomic_write_text(args.out, to_csv(rows))
    for r in rows:
        if r['chosen']:
            print(f"{r['method']:>7s} ({r['detector']}): loss_scale {r['loss_scale']:g} "
                  f"-> held-out AP {r['AP']}")
    return 0
