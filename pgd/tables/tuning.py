"""``python -m pgd tuning-summary``: the per-method loss-scale search as one small CSV.

Input: the row manifests of the ``tune_<method>`` tables (config/tuning.yaml), read with the
tables' loader (:func:`pgd.tables.loading.load_runs`); each row is a run on the HELD-OUT part of
the synthetic TRAIN split, its loss scale the row's ``options["loss_scale"]``. Output, one row
per (method, detector, loss_scale) plus the student baseline::

    method,detector,loss_scale,AP,AP50,gain_vs_student,chosen,run,git_commit

``chosen`` marks, per method, the scale with the highest held-out AP (ties: the scale closest
to 1 on a log scale, i.e. the least change to the published weights). A run that diverged or
made no detections has no AP (empty cells) and is never chosen. Written atomically.
"""
from __future__ import annotations

import argparse
import math
from typing import Dict, List, Sequence

from pgd.errors import UserError
from pgd.io import atomic_write_text

PREFIX = 'tune_'
OPTION = 'loss_scale'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--rows', nargs='+', required=True, metavar='MANIFEST',
                   help='row manifests of the tune_<method> tables')
    p.add_argument('--out', required=True, help='CSV to write')


def load_records(manifests: Sequence[str]) -> List[dict]:
    """One record per (table row, seed): ``table, detector, setting, options, AP, AP50, run,
    git_commit``; AP/AP50 None for a diverged run."""
    from pgd.tables.loading import MetricsFileError, load_runs
    try:
        df = load_runs(manifests)
    except MetricsFileError as exc:
        raise UserError(str(exc)) from None
    out: Dict[tuple, dict] = {}
    for rec in df.to_dict('records'):
        key = (rec['table'], rec['detector'], rec['setting'], rec['seed'])
        r = out.setdefault(key, {'table': rec['table'], 'detector': rec['detector'],
                                 'setting': rec['setting'], 'options': rec['options'],
                                 'AP': None, 'AP50': None, 'run': rec['run'],
                                 'git_commit': rec['git_commit'] or ''})
        if rec['metric'] in ('AP', 'AP50'):
            r[rec['metric']] = rec['value']
    for d in df.attrs.get('diverged', []):
        out.setdefault((d['table'], d['detector'], d['setting'], d['seed']), {
            'table': d['table'], 'detector': d['detector'], 'setting': d['setting'],
            'options': d['options'], 'AP': None, 'AP50': None, 'run': d['run'],
            'git_commit': d.get('git_commit') or ''})
    return list(out.values())


def summarise(records: List[dict]) -> List[dict]:
    """Rows of the CSV (see module docstring), methods in name order, scales ascending.
    ``records``: :func:`load_records` output (a row's loss scale is ``options["loss_scale"]``)."""
    students = {r['detector']: r for r in records if r['setting'] == 'student'}
    rows: Dict[str, List[dict]] = {}
    for r in records:
        scale = (r.get('options') or {}).get(OPTION)
        if not r['table'].startswith(PREFIX) or scale is None:
            continue
        method = r['table'][len(PREFIX):]
        base = students.get(r['detector'])
        ap = r['AP']
        rows.setdefault(method, []).append({
            'method': method, 'detector': r['detector'],
            'loss_scale': float(scale), 'AP': ap, 'AP50': r['AP50'],
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
    rows = summarise(load_records(args.rows))
    if not any(r['chosen'] for r in rows):
        raise UserError('no tune_<method> rows with a loss_scale option and an AP among the '
                        'inputs')
    atomic_write_text(args.out, to_csv(rows))
    for r in rows:
        if r['chosen']:
            print(f"{r['method']:>7s} ({r['detector']}): loss_scale {r['loss_scale']:g} "
                  f"-> held-out AP {r['AP']}")
    return 0
