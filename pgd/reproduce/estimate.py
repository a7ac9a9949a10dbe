"""``python -m pgd estimate [--config F ...] [--cores N | --gpus N]``: the cost before running.

For the DAG a config defines (the same :class:`pgd.workflow.plan.Plan` the Snakefile uses, so
the job counts are Snakemake's), prints per rule and per table the number of jobs, the
estimated CPU-hours and GPU-hours, and the wall time on ``N`` cores or ``N`` GPUs, and says
where every figure comes from. The wall seconds of one job are taken from, in this order:

``measured``
    the job's own ``benchmark:`` file in the reference tree
    (``results/reference/<scale>/benchmarks/...tsv``, column ``s``: Snakemake's wall seconds;
    the mini reference ran two 1-thread jobs side by side on 2 cores);
``stale``
    the job's own benchmark, but the reference's run was trained under other settings (its
    recorded fingerprint differs from the plan's, or it recorded none: code before
    fingerprints were recorded) -- e.g. after a regime change, until a new run is published.
    A run the reference did not evaluate (the zero-weight sanity run) cannot be checked and
    counts as measured;
``similar``
    the mean of the reference's benchmarks of the same rule and detector/network (same rule
    and detector, then same rule), e.g. for a new ablation run;
``assumed``
    the config's ``estimate:`` block (``seconds_per_iter`` x ``iterations`` for training,
    ``seconds_per_job`` otherwise) -- the paper scale, which has no measured GPU figure yet;
    its ``source`` string is printed with the table, and such numbers are assumptions;
``default``
    a built-in guess for cheap local jobs without a benchmark (:data:`DEFAULT_SECONDS`:
    Python start-up of a manifest/table job, synthetic data generation);
``unknown``
    nothing applies; the job is counted but its time is not (the output says how many).

CPU-hours are wall x cores the job occupies (``threads``; ``gpu x cpus_per_gpu`` for a GPU
job), GPU-hours wall x ``gpu``, both from the config's ``resources``. Wall time is a greedy
list schedule of the DAG (longest job first among ready ones) on ``--cores N`` cores (each job
takes its ``threads``) or, with ``--gpus N``, on N GPUs (jobs with ``gpu = 0`` unconstrained);
it is a lower-bound-like estimate: it ignores Snakemake's own overhead and contention.
Per-table figures count every job that table needs (its runs, their teachers, evaluations,
its row manifest and the table itself); shared jobs are counted in each table that needs them, so the
per-table rows do not add up to the total.
"""
from __future__ import annotations

import argparse
import heapq
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from pgd.errors import UserError
from pgd.paths import REPO_ROOT
from pgd.reproduce import REFERENCE_ROOT
from pgd.reproduce.estimate_jobs import (ROLE, RULE_RESOURCE, TRAIN_RULES, Job,  # noqa: F401
                                         build_jobs, load_benchmarks, load_fingerprints,
                                         read_benchmark)

SCALE_FILES = {'mini': 'config/config.yaml', 'smoke': 'config/smoke.yaml',
               'paper': 'config/paper.yaml'}
#: built-in wall seconds of jobs that have no benchmark (assumptions, labelled ``default``).
DEFAULT_SECONDS = {'data': 30.0, 'local': 3.0}


def _similar(prefixes, bench: Dict[str, float]) -> Optional[Tuple[float, int]]:
    for pre in prefixes:
        vals = [s for k, s in bench.items()
                if all(p == '*' or (i < len(k.split('/')) and k.split('/')[i] == p)
                       for i, p in enumerate(pre))]
        if vals:
            return statistics.fmean(vals), len(vals)
    return None


def assign_seconds(jobs: Dict[str, Job], bench: Dict[str, float],
                   estimate: Optional[dict],
                   fingerprints: Optional[Dict[str, Optional[str]]] = None) -> None:
    """Fill in ``Job.seconds`` and ``Job.source`` (precedence in the module docstring).
    ``fingerprints``: run -> fingerprint of the reference's runs (training jobs whose own
    benchmark was made under another fingerprint are ``stale``)."""
    est = estimate or {}
    spi = est.get('seconds_per_iter') or {}
    iters = est.get('iterations') or {}
    spj = est.get('seconds_per_job') or {}
    fps = fingerprints or {}
    for job in jobs.values():
        if job.bench is not None and job.bench in bench:
            # a run the reference never evaluated (the sanity run) has nothing to check
            same = (job.fingerprint is None or job.bench not in fps
                    or fps[job.bench] == job.fingerprint)
            job.seconds, job.source = bench[job.bench], 'measured' if same else 'stale'
            continue
        sim = _similar(job.similar, bench) if job.similar else None
        if sim is not None:
            job.seconds, job.source = sim[0], 'similar'
            continue
        if job.role in ('teacher', 'student', 'distill'):
            per = (spi.get(job.detector) or spi.get('default') or {}).get(job.role)
            n_iter = (iters.get(job.dataset) or {}).get(job.role)
            if per is not None and n_iter:
                job.seconds, job.source = per * n_iter, 'assumed'
            continue
        kind = {'evaluate': 'evaluate', 'analysis': 'analysis'}.get(job.role or '')
        if kind is None:
            kind = 'data' if job.rule == 'make_data' else 'local'
        if kind in spj:
            job.seconds, job.source = float(spj[kind]), 'assumed'
        elif kind in DEFAULT_SECONDS:
            job.seconds, job.source = DEFAULT_SECONDS[kind], 'default'


# ----------------------------------------------------------------------------- scheduling

def _order(jobs: Dict[str, Job]) -> List[str]:
    """Topological order (dependencies first)."""
    seen, out = set(), []

    def visit(k):
        stack = [(k, iter(jobs[k].deps))]
        seen.add(k)
        while stack:
            node, it = stack[-1]
            nxt = next((d for d in it if d not in seen and d in jobs), None)
            if nxt is None:
                stack.pop()
                out.append(node)
            else:
                seen.add(nxt)
                stack.append((nxt, iter(jobs[nxt].deps)))
    for k in jobs:
        if k not in seen:
            visit(k)
    return out


def critical_path(jobs: Dict[str, Job]) -> float:
    finish: Dict[str, float] = {}
    for k in _order(jobs):
        j = jobs[k]
        finish[k] = (j.seconds or 0.0) + max((finish[d] for d in j.deps if d in finish),
                                             default=0.0)
    return max(finish.values(), default=0.0)


def simulate(jobs: Dict[str, Job], capacity: int, unit: str = 'cores') -> float:
    """Greedy list schedule of the DAG on ``capacity`` cores or GPUs; returns the makespan."""
    capacity = max(1, int(capacity))
    need = {k: (min(max(j.threads, 1), capacity) if unit == 'cores'
                else min(j.gpu, capacity)) for k, j in jobs.items()}
    waiting = {k: {d for d in j.deps if d in jobs} for k, j in jobs.items()}
    children = defaultdict(list)
    for k, deps in waiting.items():
        for d in deps:
            children[d].append(k)
    ready = [k for k, deps in waiting.items() if not deps]
    running: List[Tuple[float, str]] = []
    now, free = 0.0, capacity
    done = 0
    while done < len(jobs):
        ready.sort(key=lambda k: -(jobs[k].seconds or 0.0))
        started = True
        while started:
            started = False
            for k in list(ready):
                if need[k] <= free:
                    ready.remove(k)
                    free -= need[k]
                    heapq.heappush(running, (now + (jobs[k].seconds or 0.0), k))
                    started = True
        if not running:  # cannot happen with need <= capacity; guard against a cycle
            break
        now, k = heapq.heappop(running)
        free += need[k]
        done += 1
        for c in children[k]:
            waiting[c].discard(k)
            if not waiting[c]:
                ready.append(c)
    return now


# ----------------------------------------------------------------------------- the report

def table_jobs(plan, jobs: Dict[str, Job], table: str) -> List[str]:
    """Every job ``table`` needs (transitively), the table job included."""
    out, stack = set(), [f'table:{table}']
    while stack:
        k = stack.pop()
        if k in out or k not in jobs:
            continue
        out.add(k)
        stack.extend(jobs[k].deps)
    return sorted(out)


def _h(seconds: float) -> str:
    m = int(round(seconds / 60.0))
    if m >= 48 * 60:
        return f'{seconds / 86400.0:.1f} days ({m // 60} h)'
    return f'{m // 60} h {m % 60:02d} min' if m >= 60 else (f'{m} min' if m else
                                                              f'{seconds:.0f} s')


def estimate(plan, reference=None, cores: Optional[int] = None,
             gpus: Optional[int] = None, measured: bool = False) -> dict:
    """The estimate as a dict (what :func:`render` prints); with ``measured`` also what the
    reference run cost per rule (:func:`pgd.reproduce.measured.measured_by_rule`), under
    ``'measured'``."""
    ref = Path(reference) if reference else REPO_ROOT / REFERENCE_ROOT / plan.scale
    bench = load_benchmarks(ref / 'benchmarks')
    jobs = build_jobs(plan)
    assign_seconds(jobs, bench, plan.config.get('estimate'), load_fingerprints(ref / 'runs'))
    rules: Dict[str, dict] = {}
    for j in jobs.values():
        r = rules.setdefault(j.rule, {'jobs': 0, 'cpu_h': 0.0, 'gpu_h': 0.0, 'wall_s': 0.0,
                                      'sources': defaultdict(int)})
        r['jobs'] += 1
        r['cpu_h'] += j.cpu_h
        r['gpu_h'] += j.gpu_h
        r['wall_s'] += j.seconds or 0.0
        r['sources'][j.source] += 1
    for r in rules.values():
        r['sources'] = dict(r['sources'])
    tables = {}
    for t in plan.tables:
        keys = table_jobs(plan, jobs, t)
        sub = {k: jobs[k] for k in keys}
        tables[t] = {'jobs': len(keys), 'cpu_h': sum(j.cpu_h for j in sub.values()),
                     'gpu_h': sum(j.gpu_h for j in sub.values()),
                     'training_jobs': sum(j.rule in TRAIN_RULES.values() for j in sub.values())}
    unit, cap = ('gpus', gpus) if gpus else ('cores', cores or 1)
    wall = simulate(jobs, cap, unit)
    for t, info in tables.items():
        sub = {k: jobs[k] for k in table_jobs(plan, jobs, t)}
        info['wall_s'] = simulate(sub, cap, unit)
    try:
        ref_label = ref.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        ref_label = f'{REFERENCE_ROOT}/{plan.scale} (given path)'
    est = plan.config.get('estimate') or {}
    extra = {}
    if measured:
        from pgd.reproduce.measured import measured_by_rule
        extra['measured'] = measured_by_rule(jobs, ref / 'benchmarks')
    return {'scale': plan.scale, 'reference': ref_label, **extra,
            'capacity': {unit: cap}, 'jobs': len(jobs),
            'cpu_h': sum(j.cpu_h for j in jobs.values()),
            'gpu_h': sum(j.gpu_h for j in jobs.values()),
            'wall_s': wall, 'critical_path_s': critical_path(jobs),
            'unknown_jobs': sum(j.seconds is None for j in jobs.values()),
            'rules': rules, 'tables': tables,
            'stale_jobs': sum(j.source == 'stale' for j in jobs.values()),
            'sources': {'measured': f'{ref_label}/benchmarks/ ({len(bench)} benchmark files)',
                        'assumed': est.get('source'),
                        'default': f'built-in guesses {DEFAULT_SECONDS} (s per job)'}}


def render(doc: dict, config_label: str) -> str:
    unit, cap = next(iter(doc['capacity'].items()))
    lines = [f"pgd estimate -- scale {doc['scale']} ({config_label}), {cap} {unit}", '',
             f"{'rule':<22}{'jobs':>6}{'CPU-h':>9}{'GPU-h':>9}   source of the job times",
             '-' * 78]
    for rule, r in doc['rules'].items():
        src = ', '.join(f'{n} {s}' for s, n in sorted(r['sources'].items()))
        lines.append(f"{rule:<22}{r['jobs']:>6}{r['cpu_h']:>9.2f}{r['gpu_h']:>9.2f}   {src}")
    lines += ['-' * 78, f"{'total':<22}{doc['jobs']:>6}{doc['cpu_h']:>9.2f}{doc['gpu_h']:>9.2f}",
              '(CPU-h: wall x cores the job holds -- threads, or gpu x cpus_per_gpu on a GPU)',
              '', f"wall time on {cap} {unit}: about {_h(doc['wall_s'])} (greedy schedule of "
              f"the DAG; critical path {_h(doc['critical_path_s'])})"]
    if doc['stale_jobs']:
        lines.append(f"{doc['stale_jobs']} training job(s) are timed from a reference run "
                     f"made under other settings (stale): the figure may be far off")
    if doc['unknown_jobs']:
        lines.append(f"{doc['unknown_jobs']} job(s) have no estimate (no benchmark, no "
                     f"`estimate:` entry) and count as 0 s")
    lines += ['', 'per table (every job the table needs; shared jobs count in each table):',
              f"{'table':<22}{'jobs':>6}{'train':>7}{'CPU-h':>9}{'GPU-h':>9}  wall alone"]
    for t, info in doc['tables'].items():
        lines.append(f"{t:<22}{info['jobs']:>6}{info['training_jobs']:>7}{info['cpu_h']:>9.2f}"
                     f"{info['gpu_h']:>9.2f}  {_h(info['wall_s'])}")
    s = doc['sources']
    lines += ['', 'sources:',
              f"  measured: the job's own benchmark in {s['measured']}",
              "  stale:    the job's own benchmark, made under other settings (fingerprint)",
              '  similar:  mean of the reference benchmarks of the same rule and network',
              f"  assumed:  config `estimate:` -- {s['assumed'] or '(none in this config)'}"
              + (' -- ASSUMPTIONS, not measured' if s['assumed']
                 and 'assumed' not in s['assumed'].lower() else ''),
              f"  default:  {s['default']}"]
    return '\n'.join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--config', nargs='+', default=None, metavar='FILE',
                   help='config file, then overlays (default: the --scale file, '
                        'config/config.yaml for mini)')
    p.add_argument('--scale', default=None, help='mini | smoke | paper | <name> '
                   '(config/<name>.yaml) when --config is not given')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--cores', type=int, default=None, help='wall time on N cores (default 1)')
    g.add_argument('--gpus', type=int, default=None, help='wall time on N GPUs')
    p.add_argument('--reference', default=None,
                   help=f'reference tree with benchmarks/ (default {REFERENCE_ROOT}/<scale>)')
    p.add_argument('--measured', action='store_true',
                   help="also print what the reference run cost, per rule (its benchmark "
                        "files: jobs, CPU s, wall s, peak memory)")
    p.add_argument('--json', default=None, help='also write the estimate as JSON')


def run(args) -> int:
    from pgd.workflow.config import ConfigError
    from pgd.workflow.plan import load_plan
    from pgd.io import atomic_write_json
    files: Sequence[str] = args.config or [str(REPO_ROOT / SCALE_FILES.get(
        args.scale or 'mini', f'config/{args.scale}.yaml'))]
    for flag, n in (('--cores', args.cores), ('--gpus', args.gpus)):
        if n is not None and n < 1:
            raise UserError(f'{flag} must be at least 1, got {n}')
    for f in files:
        if not Path(f).is_file():
            raise UserError(f'config file {f} does not exist')
    try:
        plan = load_plan(files[0], files[1:], config_root=REPO_ROOT / 'config' / 'detectors')
    except ConfigError as exc:
        raise UserError(f'config error: {exc}') from None
    doc = estimate(plan, args.reference, cores=args.cores, gpus=args.gpus,
                   measured=args.measured)
    try:
        label = Path(files[0]).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        label = Path(files[0]).name
    print(render(doc, label))
    if args.measured:
        from pgd.reproduce.measured import render_measured
        print()
        print(render_measured(doc['measured'], doc['reference']))
    if args.json:
        atomic_write_json(args.json, doc)
    return 0
