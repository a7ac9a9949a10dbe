"""The job graph behind ``python -m pgd estimate``: every job of a plan's DAG, as the Snakefile
builds it, with the benchmarks of a reference tree (see :mod:`pgd.reproduce.estimate`)."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RULE_RESOURCE = {'make_data': 'data', 'split_holdout': 'local', 'check_data': 'local',
                 'train_teacher': 'teacher', 'train_student': 'student', 'distill': 'distill',
                 'distill_teacher_free': 'distill', 'evaluate': 'evaluate',
                 'mask_out': 'analysis', 'quality_maps': 'analysis',
                 'pretrain_backbone': 'pretrain', 'sanity_check': 'local', 'geometry': 'local',
                 'regime': 'local'}
#: analysis name -> its rule (the teacher analyses are named like their rules)
ANALYSIS_RULES = {'sanity': 'sanity_check'}
TRAIN_RULES = {'teacher': 'train_teacher', 'student': 'train_student', 'distill': 'distill',
               'teacher_free': 'distill_teacher_free'}
ROLE = {'teacher': 'teacher', 'student': 'student', 'distill': 'distill',
        'teacher_free': 'distill'}

@dataclass
class Job:
    """One DAG job: its rule, identity, dependencies and estimated wall seconds."""

    rule: str
    key: str
    deps: List[str] = field(default_factory=list)
    bench: Optional[str] = None          # benchmark path relative to the reference tree
    similar: Tuple[Tuple[str, ...], ...] = ()  # benchmark prefixes of similar jobs, best first
    detector: Optional[str] = None
    role: Optional[str] = None
    dataset: Optional[str] = None
    seconds: Optional[float] = None
    source: str = 'unknown'
    fingerprint: Optional[str] = None    # training jobs: the run's (pgd.workflow.fingerprint)
    threads: int = 1
    gpu: int = 0
    cpus_per_gpu: int = 1

    @property
    def cpu_h(self) -> float:
        cores = self.gpu * self.cpus_per_gpu if self.gpu else self.threads
        return (self.seconds or 0.0) * cores / 3600.0

    @property
    def gpu_h(self) -> float:
        return (self.seconds or 0.0) * self.gpu / 3600.0


# ----------------------------------------------------------------------------- benchmarks

def read_benchmark_columns(path) -> Dict[str, float]:
    """Column -> mean over the repeats of a Snakemake benchmark TSV, for its numeric columns
    (``s``: wall seconds, ``cpu_time``: CPU seconds, ``max_rss``: MB); ``{}`` when unreadable."""
    try:
        lines = Path(path).read_text(encoding='utf-8').strip().splitlines()
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head = lines[0].split('\t')
    vals: Dict[str, List[float]] = {}
    for line in lines[1:]:
        for name, cell in zip(head, line.split('\t')):
            try:
                vals.setdefault(name, []).append(float(cell))
            except ValueError:
                continue
    return {k: statistics.fmean(v) for k, v in vals.items() if v}


def read_benchmark(path) -> Optional[float]:
    """Mean of the ``s`` (wall seconds) column of a Snakemake benchmark TSV."""
    return read_benchmark_columns(path).get('s')


def load_benchmarks(root) -> Dict[str, float]:
    """``relative path without .tsv`` -> wall seconds, for every benchmark under ``root``."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob('*.tsv')) if root.is_dir() else []:
        s = read_benchmark(p)
        if s is not None:
            out[p.relative_to(root).with_suffix('').as_posix()] = s
    return out


def load_fingerprints(runs_root) -> Dict[str, Optional[str]]:
    """``run rel`` -> the run fingerprint its ``metrics.json`` recorded
    (``provenance.run_fingerprint``, from the evaluate rule's ``pgd test --fingerprint``;
    ``None`` for metrics of code that did not record it)."""
    runs_root = Path(runs_root)
    out: Dict[str, Optional[str]] = {}
    for p in sorted(runs_root.rglob('metrics.json')) if runs_root.is_dir() else []:
        try:
            prov = json.loads(p.read_text(encoding='utf-8')).get('provenance') or {}
        except (OSError, ValueError):
            continue
        out[p.parent.relative_to(runs_root).as_posix()] = prov.get('run_fingerprint')
    return out


# ----------------------------------------------------------------------------- the job graph

def build_jobs(plan) -> Dict[str, Job]:
    """Every job of ``plan``'s DAG (as the Snakefile builds it), keyed by a unique name."""
    cfg = plan.config
    jobs: Dict[str, Job] = {}

    def add(job: Job) -> Job:
        res = cfg['resources'].get(RULE_RESOURCE.get(job.rule, 'local'), {})
        job.threads = int(res.get('threads', 1))
        job.gpu = int(res.get('gpu', 0))
        job.cpus_per_gpu = int(res.get('cpus_per_gpu', 1))
        if job.rule == 'evaluate' or job.rule in ('mask_out', 'quality_maps'):
            job.gpu = min(1, job.gpu)  # single-process (see evaluate.smk)
        jobs[job.key] = job
        return job

    for d in plan.synthetic_datasets():
        add(Job('make_data', f'data:{d}'))
    for d in plan.holdout_datasets():
        add(Job('split_holdout', f'data:{d}', deps=[f"data:{cfg['datasets'][d]['of']}"]))
    for d in plan.external_datasets():
        add(Job('check_data', f'data:{d}'))

    pretrain = bool(cfg.get('pretrain'))
    for run in plan.runs.values():
        deps = [f'data:{run.dataset}']
        for path in (plan.pretrained_checkpoints(run) if pretrain else ()):
            size = Path(path).parent.name  # results/<scale>/pretrain/<size>/backbone.pth
            if f'pretrain:{size}' not in jobs:
                add(Job('pretrain_backbone', f'pretrain:{size}',
                        deps=[f"data:{cfg['pretrain']['dataset']}"], bench=f'pretrain/{size}',
                        similar=(('pretrain', size), ('pretrain',)), role='pretrain'))
            deps.append(f'pretrain:{size}')
        if run.teacher_run:
            deps.append(f'train:{run.teacher_run}')
        det_model = f'{run.detector}_{run.model}'
        add(Job(TRAIN_RULES[run.kind], f'train:{run.rel}', deps=deps, bench=run.rel,
                fingerprint=plan.fingerprint(run),
                similar=((run.kind, run.dataset, det_model), (run.kind, '*', det_model),
                         (run.kind,)),
                detector=run.detector, role=ROLE[run.kind], dataset=run.dataset))
    for run in plan.evaluated_runs():
        det_model = f'{run.detector}_{run.model}'
        add(Job('evaluate', f'eval:{run.rel}', deps=[f'train:{run.rel}'],
                bench=f'evaluate/{run.rel}',
                similar=(('evaluate', run.kind, run.dataset, det_model),
                         ('evaluate', run.kind), ('evaluate',)),
                detector=run.detector, role='evaluate'))
    for a in plan.analyses:
        rule = ANALYSIS_RULES.get(a.name, a.name)
        # a local rule (the sanity check: two checkpoints compared) costs what local jobs do
        role = 'local' if RULE_RESOURCE.get(rule) == 'local' else 'analysis'
        add(Job(rule, f'{a.name}:{a.stem}',
                deps=[f'train:{a.run}'] + ([f'train:{a.baseline}'] if a.baseline else []),
                bench=f'analysis/{a.name}/{a.stem}', similar=(('analysis', a.name),),
                detector=a.detector, role=role))
    for t in plan.tables:  # rule row_manifest: written by the planner after the evaluations
        add(Job('row_manifest', f'manifest:{t}',
                deps=[f'eval:{r.rel}' for r in plan.input_runs([t])]))

    def reads(tables):  # a reader's inputs: the manifests and the run metrics they list
        return ([f'manifest:{t}' for t in tables]
                + [f'eval:{r.rel}' for r in plan.input_runs(tables)])
    for t in plan.tables:
        add(Job('table', f'table:{t}', deps=reads([t])))
    mask = [f'mask_out:{a.stem}' for a in plan.analyses_of('mask_out')]
    if plan.figure_stems():
        add(Job('figures', 'figures', deps=reads(plan.figure_tables()) + mask))
    if plan.tuning_tables():
        add(Job('tuning_summary', 'tuning_summary', deps=reads(plan.tuning_tables())))
    add(Job('claims', 'claims', deps=reads(plan.tables) + mask))
    add(Job('summary', 'summary', deps=[f'table:{t}' for t in plan.tables] + ['claims']
            + (['figures'] if plan.figure_stems() else [])))
    add(Job('reproduction', 'reproduction', deps=reads(plan.tables)))
    return jobs
