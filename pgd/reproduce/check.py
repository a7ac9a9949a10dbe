"""``python -m pgd check-reproduction``: does a run reproduce the committed reference?

Both sides are read from their row manifests (``<root>/manifests/<table>.json`` and the
``runs/<run>/metrics.json`` they name) with the tables' own loader
(:func:`pgd.tables.loading.load_runs`): the unrounded numbers behind every table cell. A
**cell** is (table, detector, setting, metric), e.g. (table1, atss, pgd, AP); its value on each
side is the mean over that side's seeds, with the sample standard deviation ``s`` and the
number of seeds ``n``. A table row with a diverged run (non-finite weights, no detections) has
no numbers: its cells are *diverged* on that side, never 0 AP. Both sides diverged agrees (the
same outcome); one side diverged differs.

Criterion (seed noise), for every cell both sides have::

    |Δ| = |mean_new - mean_ref|  <=  2 * sqrt(s_ref**2 + s_new**2)      -> agrees
                                                                  else -> differs

where a side with a single seed (``n = 1``: no spread to measure) uses the floor
``sd_floor`` as its ``s`` (default :data:`SD_FLOOR` = 0.5 point of AP / MR / JI). The default
is taken from the seed spread of the committed mini reference (published 2026-12-04, commit
f7c34251ac62): over its 16 three-seed AP cells the per-cell sample std ranges from 0.15 to 0.80
AP with median 0.45 and pooled (root mean square) value 0.49 AP, so one training of these
networks moves AP by about half a point from seed alone (the previous regime's reference had
0.99). With that floor two single-seed cells agree when they are within 1.4 AP
(2 * sqrt(2) * 0.5). The report prints the pooled spread of the reference it was run against,
so the floor can be judged against the data at hand. Multi-seed sides use their own measured
std, even when it is smaller than the floor.

The overall verdict is ``agrees`` when every shared cell agrees, ``differs`` otherwise (the
differing cells are listed), ``no reference`` when the reference tree has no metrics for this
scale (not an error: the report says so), and ``no overlap`` when it has metrics but no cell
in common with the run. Git commits and package versions of both sides come from the
``provenance`` block of the metrics files.
"""
from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pgd.io import atomic_write_json, atomic_write_text

#: s used for a single-seed side (points of AP / MR / JI); see the module docstring.
SD_FLOOR = 0.5
#: how many standard deviations of the difference count as seed noise.
K_SIGMA = 2.0

CellKey = Tuple[str, str, str, str]  # table, detector, setting, metric


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_side(root) -> dict:
    """Cells and provenance of one side: ``root`` is ``results/<scale>`` or a reference tree.

    Returns ``{"cells": {CellKey: [values]}, "diverged": {CellKey: [seeds]}, "commits": [...],
    "versions": {pkg: [...]}, "files": n}`` (``files``: distinct metrics files read); an
    absent ``root/manifests`` gives zero files.
    """
    from pgd.tables.loading import load_runs
    root = Path(root)
    mdir = root / 'manifests'
    manifests = sorted(mdir.glob('*.json')) if mdir.is_dir() else []
    df = load_runs(manifests)
    cells: Dict[CellKey, List[float]] = defaultdict(list)
    for rec in df.to_dict('records'):
        cells[(str(rec['table']), str(rec['detector']), str(rec['setting']),
               str(rec['metric']))].append(float(rec['value']))
    diverged: Dict[CellKey, set] = defaultdict(set)
    commits = set(str(c) for c in df['git_commit'] if c) if not df.empty else set()
    paths = set(df['path']) if not df.empty else set()
    for r in df.attrs.get('diverged', []):
        for metric in r['metrics']:
            diverged[(str(r['table']), str(r['detector']), str(r['setting']),
                      str(metric))].add(int(r['seed']))
        paths.add(r['path'])
        if r.get('git_commit'):
            commits.add(str(r['git_commit']))
    versions = defaultdict(set)
    for path in paths:
        for pkg, ver in (df.attrs.get('versions', {}).get(path) or {}).items():
            if ver is not None:
                versions[pkg].add(str(ver))
    return {'cells': dict(cells), 'diverged': {k: sorted(v) for k, v in diverged.items()},
            'commits': sorted(commits),
            'versions': {k: sorted(v) for k, v in sorted(versions.items())},
            'files': len(paths)}


def _stats(values: List[float]) -> Tuple[float, Optional[float], int]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return mean, sd, len(values)


def pooled_sd(cells: Dict[CellKey, List[float]], metric: str = 'AP') -> Optional[dict]:
    """Root-mean-square of the per-cell sample std over the multi-seed ``metric`` cells."""
    sds = [statistics.stdev(v) for k, v in cells.items() if k[3] == metric and len(v) > 1]
    if not sds:
        return None
    return {'metric': metric, 'cells': len(sds), 'pooled': math.sqrt(statistics.fmean(
        [s * s for s in sds])), 'median': statistics.median(sds), 'min': min(sds),
        'max': max(sds)}


def _side(side: dict, key: CellKey) -> dict:
    """One side of a cell with a diverged row: its diverged seeds, or its numbers."""
    if key in side.get('diverged', {}):
        return {'diverged': True, 'seeds': side['diverged'][key]}
    mean, sd, n = _stats(side['cells'][key])
    return {'mean': mean, 'std': sd, 'n': n}


def compare(ref: dict, new: dict, sd_floor: float = SD_FLOOR, k_sigma: float = K_SIGMA) -> dict:
    """Compare two sides (from :func:`load_side`); returns the report dict (see module doc)."""
    ref_div, new_div = ref.get('diverged', {}), new.get('diverged', {})
    ref_keys, new_keys = set(ref['cells']) | set(ref_div), set(new['cells']) | set(new_div)
    rows = []
    for key in sorted(ref_keys & new_keys):
        row = {'table': key[0], 'detector': key[1], 'setting': key[2], 'metric': key[3]}
        if key in ref_div or key in new_div:
            both = key in ref_div and key in new_div
            rows.append({**row, 'reference': _side(ref, key), 'reproduced': _side(new, key),
                         'delta': None, 'threshold': None, 'agrees': both,
                         'diverged': 'both' if both else
                         ('reference' if key in ref_div else 'reproduced')})
            continue
        rm, rs, rn = _stats(ref['cells'][key])
        nm, ns, nn = _stats(new['cells'][key])
        s_ref = rs if rs is not None else sd_floor
        s_new = ns if ns is not None else sd_floor
        threshold = k_sigma * math.sqrt(s_ref ** 2 + s_new ** 2)
        delta = nm - rm
        rows.append({**row, 'reference': {'mean': rm, 'std': rs, 'n': rn},
                     'reproduced': {'mean': nm, 'std': ns, 'n': nn},
                     'delta': delta, 'threshold': threshold,
                     'agrees': abs(delta) <= threshold + 1e-9, 'diverged': None})
    if not ref['files']:
        verdict = 'no reference'
    elif not rows:
        verdict = 'no overlap'
    else:
        verdict = 'agrees' if all(r['agrees'] for r in rows) else 'differs'
    return {
        'verdict': verdict,
        'criterion': {'rule': '|delta| <= k_sigma * sqrt(s_ref^2 + s_new^2)', 'k_sigma': k_sigma,
                      'sd_floor': sd_floor,
                      'single_seed': 'a side with n = 1 uses s = sd_floor',
                      'reference_seed_spread': pooled_sd(ref['cells'])},
        'cells': rows,
        'differing': [r for r in rows if not r['agrees']],
        'only_in_reference': len(ref_keys - new_keys),
        'only_in_reproduction': len(new_keys - ref_keys),
        'provenance': {side: {'metrics_files': d['files'], 'git_commits': d['commits'],
                              'versions': d['versions']}
                       for side, d in (('reference', ref), ('reproduced', new))},
    }


# ----------------------------------------------------------------------------- rendering

def _fmt(stat: dict) -> str:
    if stat.get('diverged'):
        seeds = stat['seeds']
        return f"diverged (seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))})"
    sd = '—' if stat['std'] is None else f"{stat['std']:.2f}"
    return f"{stat['mean']:.2f} ± {sd} ({stat['n']})"


def _cell_name(r: dict) -> str:
    return f"{r['table']} / {r['detector']} / {r['setting']} / {r['metric']}"


def render_markdown(report: dict, scale: str, reference_label: str, results_label: str,
                    synthetic: bool) -> str:
    v = report['verdict']
    crit = report['criterion']
    lines = [f'# Reproduction check -- scale `{scale}`', '']
    if synthetic:
        lines += ['> **SYNTHETIC DATA** on both sides: this compares two runs of this pipeline, '
                  'not this pipeline with the paper.', '']
    lines += [f'Reference: `{reference_label}/` (committed; `python -m pgd publish-reference`). '
              f'Reproduced: `{results_label}/` (this run).', '']
    if v == 'no reference':
        lines += [f'**No reference for scale `{scale}`**: `{reference_label}/` has no row '
                  f'manifests, so there is nothing to compare with. Publish this run as the '
                  f'reference with `python -m pgd publish-reference --scale {scale}`.', '']
        return '\n'.join(lines)
    cells = report['cells']
    n_ok = sum(r['agrees'] for r in cells)
    if v == 'no overlap':
        lines += ['**No overlap**: the reference has metrics, but no table cell in common '
                  'with this run (different tables, detectors or settings).', '']
    else:
        lines += [f'**Verdict: {v}** -- {n_ok} of {len(cells)} shared table cells agree '
                  f'within seed noise; {len(cells) - n_ok} differ.', '']
    spread = crit['reference_seed_spread']
    spread_txt = (f"The reference's own seed spread: over its {spread['cells']} multi-seed "
                  f"{spread['metric']} cells the sample std has median {spread['median']:.2f} "
                  f"and pooled (RMS) value {spread['pooled']:.2f} (range {spread['min']:.2f}-"
                  f"{spread['max']:.2f}).") if spread else (
        'The reference has no multi-seed cells to measure seed spread on.')
    lines += ['Criterion: a cell *agrees* when |Δ| ≤ '
              f"{crit['k_sigma']:g}·√(s_ref² + s_new²), s being the sample std over seeds; a "
              f"side with a single seed has no measured spread and uses s = "
              f"{crit['sd_floor']:g} point (so two single-seed cells agree within "
              f"{crit['k_sigma'] * math.sqrt(2) * crit['sd_floor']:.1f}). {spread_txt} "
              'Cells are mean ± std (n seeds) of the metrics behind each table cell (the rows of '
              'the row manifests), unrounded; a row with a diverged run (no detections, '
              'non-finite weights) is *diverged*, not 0: both sides diverged agrees, one side '
              'differs.', '']
    if report['only_in_reference'] or report['only_in_reproduction']:
        lines += [f"Not compared: {report['only_in_reference']} cells only in the reference, "
                  f"{report['only_in_reproduction']} only in this run.", '']
    prov = report['provenance']
    lines += ['## Provenance', '', '| | reference | reproduced |', '|---|---|---|',
              f"| metrics files | {prov['reference']['metrics_files']} | "
              f"{prov['reproduced']['metrics_files']} |",
              '| git commits | ' + ', '.join(c[:12] + ('-dirty' if c.endswith('-dirty') else '')
                                             for c in prov['reference']['git_commits'])
              + ' | ' + ', '.join(c[:12] + ('-dirty' if c.endswith('-dirty') else '')
                                  for c in prov['reproduced']['git_commits']) + ' |']
    pkgs = sorted(set(prov['reference']['versions']) | set(prov['reproduced']['versions']))
    for pkg in pkgs:
        a = ', '.join(prov['reference']['versions'].get(pkg, [])) or '—'
        b = ', '.join(prov['reproduced']['versions'].get(pkg, [])) or '—'
        lines.append(f'| {pkg} | {a} | {b}{" (differs)" if a != b else ""} |')
    lines.append('')
    if report['differing']:
        lines += ['## Differing cells', '']
        lines += [f"- {_cell_name(r)}: reference {_fmt(r['reference'])}, reproduced "
                  f"{_fmt(r['reproduced'])}, " + (f"diverged on the {r['diverged']} side"
                                                 if r['diverged'] else
                                                 f"Δ {r['delta']:+.2f} (threshold "
                                                 f"{r['threshold']:.2f})")
                  for r in report['differing']]
        lines.append('')
    if cells:
        lines += ['## All shared cells', '',
                  '| table | detector | setting | metric | reference mean ± std (n) | '
                  'reproduced mean ± std (n) | Δ | threshold | |',
                  '|---|---|---|---|---|---|---|---|---|']
        for r in cells:
            lines.append(f"| {r['table']} | {r['detector']} | {r['setting']} | {r['metric']} | "
                         f"{_fmt(r['reference'])} | {_fmt(r['reproduced'])} | "
                         + ('— | — | ' if r['delta'] is None else
                            f"{r['delta']:+.2f} | {r['threshold']:.2f} | ")
                         + f"{'agrees' if r['agrees'] else '**differs**'} |")
        lines.append('')
    return '\n'.join(lines)


def check(results, reference, out_md, out_json=None, scale: Optional[str] = None,
          reference_label: Optional[str] = None, results_label: Optional[str] = None,
          sd_floor: float = SD_FLOOR, synthetic: bool = False) -> dict:
    """Compare ``results`` (``results/<scale>``) with ``reference`` and write the report(s)."""
    results, reference = Path(results), Path(reference)
    scale = scale or results.name
    report = compare(load_side(reference), load_side(results), sd_floor=sd_floor)
    report = {'scale': scale, 'reference': reference_label or reference.as_posix(),
              'reproduced': results_label or results.as_posix(), 'synthetic': synthetic,
              **report}
    atomic_write_text(out_md, render_markdown(report, scale, report['reference'],
                                              report['reproduced'], synthetic))
    if out_json:
        atomic_write_json(out_json, report)
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--results', required=True, help='the run: results/<scale>')
    p.add_argument('--reference', required=True,
                   help='the reference tree: results/reference/<scale> (may be absent)')
    p.add_argument('--out', required=True, help='markdown report (results/<scale>/reproduction.md)')
    p.add_argument('--json', default=None, help='the same as JSON')
    p.add_argument('--scale', default=None, help='scale named in the report (default: '
                   'the name of --results)')
    p.add_argument('--reference-label', default=None,
                   help='how the report names the reference (default: --reference as given)')
    p.add_argument('--results-label', default=None,
                   help='how the report names the run (default: --results as given)')
    p.add_argument('--sd-floor', type=float, default=SD_FLOOR,
                   help=f's of a single-seed side (default {SD_FLOOR}; see the module doc)')
    p.add_argument('--synthetic', action='store_true', help='say that the data are synthetic')
    p.add_argument('--fail-on-differ', action='store_true',
                   help='exit 1 when the verdict is "differs" (the DAG does not use this)')


def run(args) -> int:
    from pgd.errors import UserError
    from pgd.tables.loading import MetricsFileError
    try:
        report = check(args.results, args.reference, args.out, args.json, scale=args.scale,
                       reference_label=args.reference_label,
                       results_label=args.results_label, sd_floor=args.sd_floor, synthetic=args.synthetic)
    except MetricsFileError as exc:
        raise UserError(str(exc)) from None
    n = len(report['cells'])
    print(f"reproduction check ({report['scale']}): {report['verdict']}"
          + (f" ({n - len(report['differing'])} of {n} cells agree)" if n else ''))
    return 1 if args.fail_on_differ and report['verdict'] == 'differs' else 0
