"""``python -m pgd estimate --measured``: what a reference run actually cost, per rule.

Sums the Snakemake ``benchmark:`` files of a reference tree (``<reference>/benchmarks/``) over
the jobs of a plan, grouped by rule: number of benchmarked jobs, CPU seconds (column
``cpu_time``: user + system of the job's processes), wall seconds (column ``s``, summed over
jobs -- not the run's wall time, jobs overlap on several cores) and the largest peak resident
memory (``max_rss``, MB). It is the table the README quotes for the published mini run, made
by a command instead of by hand. Jobs without a benchmark (data, manifests, tables, the
local checks) are counted apart; their CPU is not measured per job.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from pgd.reproduce.estimate_jobs import Job, read_benchmark_columns


def measured_by_rule(jobs: Dict[str, Job], bench_root) -> dict:
    """``{'rules': {rule: {jobs, cpu_s, wall_s, max_rss_mb}}, 'total': {...},
    'unbenchmarked': {rule: n}}`` from the benchmarks of ``jobs`` under ``bench_root``."""
    bench_root = Path(bench_root)
    rules: Dict[str, dict] = {}
    missing: Dict[str, int] = {}
    for job in jobs.values():
        cols = (read_benchmark_columns(bench_root / f'{job.bench}.tsv')
                if job.bench is not None else {})
        if 's' not in cols:
            missing[job.rule] = missing.get(job.rule, 0) + 1
            continue
        r = rules.setdefault(job.rule, {'jobs': 0, 'cpu_s': 0.0, 'wall_s': 0.0,
                                        'max_rss_mb': 0.0})
        r['jobs'] += 1
        r['wall_s'] += cols['s']
        r['cpu_s'] += cols.get('cpu_time', 0.0)
        r['max_rss_mb'] = max(r['max_rss_mb'], cols.get('max_rss', 0.0))
    total = {'jobs': sum(r['jobs'] for r in rules.values()),
             'cpu_s': sum(r['cpu_s'] for r in rules.values()),
             'wall_s': sum(r['wall_s'] for r in rules.values()),
             'max_rss_mb': max((r['max_rss_mb'] for r in rules.values()), default=0.0)}
    ordered = dict(sorted(rules.items(), key=lambda kv: -kv[1]['cpu_s']))
    return {'rules': ordered, 'total': total, 'unbenchmarked': missing}


def render_measured(doc: dict, ref_label: str) -> str:
    lines = [f'measured in {ref_label}/benchmarks/ (Snakemake benchmark files of the '
             'reference run, summed per rule):', '',
             f"{'rule':<22}{'jobs':>6}{'CPU s':>10}{'wall s':>10}{'max RSS MB':>12}",
             '-' * 60]
    for rule, r in list(doc['rules'].items()) + [('total', doc['total'])]:
        if rule == 'total':
            lines.append('-' * 60)
        lines.append(f"{rule:<22}{r['jobs']:>6}{r['cpu_s']:>10,.0f}{r['wall_s']:>10,.0f}"
                     f"{r['max_rss_mb']:>12,.0f}")
    lines.append('(wall s is summed over jobs; jobs run side by side, so it is not the '
                 "run's wall time)")
    if doc['unbenchmarked']:
        rest = ', '.join(f'{rule} {n}' for rule, n in sorted(doc['unbenchmarked'].items()))
        lines.append(f"{sum(doc['unbenchmarked'].values())} job(s) have no benchmark "
                     f'file: {rest}')
    return '\n'.join(lines)
