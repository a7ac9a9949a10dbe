"""``python -m pgd publish-reference --scale S``: make a finished run the committed reference.

The workflow writes a run's outputs to ``results/<scale>/`` (git-ignored) and never touches
``results/reference/<scale>/``; publishing is this explicit step. It copies the *small*
result files of the run -- the ones a reader or the reproduction check needs -- and nothing
that is large, machine-specific or regenerated from them:

=========================  =================================================================
copied                     ``manifests/*.json`` (the row manifests: which run is which
                           table row), ``runs/**/metrics.json`` (one per run, as ``pgd test``
                           wrote it), ``tables/*.{md,tex,csv}``, ``figures/**/*.{png,pdf}``,
                           ``claims.md``, ``report.md`` and other top-level md/csv/json,
                           ``analysis/**/*.json``, ``runs/**/training_log.json``
                           (the compact training scalars) and ``runs/**/resumes.json``
                           (when a run was resumed), ``benchmarks/**/*.tsv``
left out                   checkpoints (``*.pth``, ``last_checkpoint``), per-run config dumps
                           (``runs/**/*.py``), MMEngine's timestamped log folders and
                           ``vis_data/``, job logs, data stamps, and the run's own
                           ``reproduction.{md,json}`` (a comparison with the *previous*
                           reference), a stale ``metrics/`` folder of tagged copies (the
                           layout before the row manifests)
=========================  =================================================================

The relative layout is kept, so the tables, figures and claims can be rebuilt from the
reference tree alone (``python -m pgd tables --rows results/reference/<scale>/manifests/*.json
...``) and ``pgd check-reproduction`` reads it like a run. Publishing refuses a run whose
manifests name a metrics file that is not there.

The new tree replaces the old one as a whole (built next to it, then swapped), so files of
runs that the new DAG no longer has do not linger. A hand-written ``README.md`` of the old
reference is kept when the run has none. ``PUBLISHED.json`` records when, from which
directory and at which git commit the reference was published. Then commit
``results/reference/<scale>/``.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import List

from pgd.errors import UserError
from pgd.io import atomic_copy, atomic_write_json
from pgd.reproduce import REFERENCE_ROOT

KEEP_SUFFIXES = {'.json', '.md', '.csv', '.tex', '.tsv', '.png', '.pdf'}
RUN_FILES = {'metrics.json', 'training_log.json', 'resumes.json'}
SKIP_TOP = {'reproduction.md', 'reproduction.json'}
SKIP_DIRS = {'metrics'}  # tagged copies of the layout before the row manifests
_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')  # MMEngine's per-launch log folder


def selected_files(results) -> List[Path]:
    """Paths (relative to ``results``) that a reference keeps, sorted."""
    results = Path(results)
    out = []
    for p in sorted(results.rglob('*')):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(results)
        parts = rel.parts
        if p.suffix.lower() not in KEEP_SUFFIXES or p.name.startswith('.'):
            continue
        if len(parts) == 1 and p.name in SKIP_TOP:
            continue
        if any(_TIMESTAMP.match(x) or x == 'vis_data' for x in parts[:-1]):
            continue
        if len(parts) > 1 and parts[0] in SKIP_DIRS:
            continue
        if parts[0] == 'runs' and p.name not in RUN_FILES:
            continue
        out.append(rel)
    return out


def _label(path: Path, repo_relative) -> str:
    """``path`` relative to the checkout, or ``results/<scale>`` when it lies elsewhere (a
    scratch ``--directory``): result files never name the machine they were made on."""
    rel = repo_relative(path)
    return rel if not Path(rel).is_absolute() else '/'.join(path.resolve().parts[-2:])


def _check_manifests(results: Path, manifests: List[Path], files: set) -> None:
    """Every metrics file a manifest row names is among the files to publish."""
    for rel in manifests:
        try:
            rows = json.loads((results / rel).read_text(encoding='utf-8'))['rows']
            named = {Path(r['metrics']) for r in rows}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f'{results / rel}: not a row manifest ({exc})') from None
        missing = sorted(str(p) for p in named if p not in files)
        if missing:
            raise UserError(f'{results / rel}: names metrics file(s) that are missing: '
                            f'{", ".join(missing[:3])}{" ..." if len(missing) > 3 else ""}')


def publish(results, reference, force: bool = False) -> dict:
    """Replace the reference tree ``reference`` with the selected files of ``results``."""
    from pgd.provenance import git_commit, repo_relative
    import datetime as dt

    results, reference = Path(results), Path(reference)
    if not results.is_dir():
        raise UserError(f'{results} does not exist: run the workflow for this scale first')
    if not (results / 'report.md').is_file() and not force:
        raise UserError(f'{results}/report.md is missing, so the run is not finished '
                        f'(publish anyway with --force)')
    files = selected_files(results)
    manifests = [f for f in files if f.parts[0] == 'manifests' and len(f.parts) == 2]
    if not manifests:
        raise UserError(f'{results}/manifests/ has no row manifests: nothing to publish')
    _check_manifests(results, manifests, set(files))
    if reference.resolve() == results.resolve():
        raise UserError('the reference and the results are the same folder')
    staging = reference.with_name(f'.{reference.name}.publishing')
    old = reference.with_name(f'.{reference.name}.old')
    for d in (staging, old):
        if d.exists():
            shutil.rmtree(d)
    for rel in files:
        dst = staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(results / rel, dst)
    if not (staging / 'README.md').exists() and (reference / 'README.md').is_file():
        shutil.copy2(reference / 'README.md', staging / 'README.md')
    info = {'published': dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds'),
            'source': _label(results, repo_relative), 'git_commit': git_commit(),
            'files': len(files),
            'left_out': 'checkpoints, per-run config dumps, MMEngine log folders, job logs, '
                        'reproduction.{md,json}'}
    atomic_write_json(staging / 'PUBLISHED.json', info)
    reference.parent.mkdir(parents=True, exist_ok=True)
    if reference.exists():
        reference.rename(old)
    staging.rename(reference)
    if old.exists():
        shutil.rmtree(old)
    return info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--scale', required=True, help='publish results/<scale>/')
    p.add_argument('--results', default=None, help='the run folder (default results/<scale>)')
    p.add_argument('--reference', default=None,
                   help=f'the reference folder (default {REFERENCE_ROOT}/<scale>)')
    p.add_argument('--force', action='store_true', help='publish even without report.md')


def run(args) -> int:
    results = Path(args.results or f'results/{args.scale}')
    reference = Path(args.reference or f'{REFERENCE_ROOT}/{args.scale}')
    info = publish(results, reference, force=args.force)
    print(f"published {info['files']} files of {results} to {reference} "
          f"(commit {info['git_commit'][:12]}); now `git add {reference}` and commit it")
    print(json.dumps(info))
    return 0
