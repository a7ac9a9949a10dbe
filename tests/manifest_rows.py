"""Test helper: a run's metrics.json plus a one-row manifest naming it as a table row, in the
layout the planner writes (``<root>/manifests/*.json``, ``<root>/runs/<run>/metrics.json``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

from pgd.tables.loading import write_manifest


def write_row(root: Path, table: str, detector: str, setting: str, seed: int, doc: Mapping,
              backbone: Optional[str] = 'r18', options: Optional[Mapping] = None,
              run: Optional[str] = None) -> Path:
    """Write ``doc`` as ``runs/<run>/metrics.json`` (``run`` defaults to one run per row) and
    ``manifests/<table>_<detector>_<setting>_<seed>.json`` with that single row; returns the
    manifest."""
    root = Path(root)
    run = run or f'fake/{table}/{detector}/{setting}/seed{seed}'
    metrics = root / 'runs' / run / 'metrics.json'
    metrics.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(doc)
    doc.setdefault('run', {'run': run, 'seed': seed})
    metrics.write_text(json.dumps(doc))
    manifest = root / 'manifests' / f'{table}_{detector}_{setting}_{seed}.json'.replace('/', '_')
    write_manifest(manifest, table, 'test', [{
        'table': table, 'detector': detector, 'setting': setting, 'seed': seed,
        'student_backbone': backbone, 'run': run, 'metrics': f'runs/{run}/metrics.json',
        'options': dict(options or {})}])
    return manifest
