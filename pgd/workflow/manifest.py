"""Per-table row manifests: ``results/<scale>/manifests/<table>.json``.

Which run's metrics make which table row is decided here, by the planner, and written once
per table (rule ``row_manifest``) instead of copying each run's ``metrics.json`` once per
row. Format (read by ``pgd.tables``, ``pgd.analysis`` and ``pgd.reproduce`` via ``--rows``)::

    {"table": "table6a", "scale": "mini",
     "rows": [{"table": "table6a", "detector": "atss", "setting": "k=1", "seed": 0,
               "student_backbone": "r18",
               "run": "distill/shapes/atss_r18_student/r34_teacher/pgd/k=1/seed0",
               "metrics": "runs/distill/shapes/atss_r18_student/r34_teacher/pgd/k=1/seed0/metrics.json",
               "options": {"k": 1, "loss_scale": 0.2}}, ...]}

``metrics`` is relative to ``results/<scale>/`` (the manifest's parent's parent); ``options``
are the run's ``--loss-options`` as JSON values plus the options that define the row (a
sweep's ``k: 9`` even where 9 is the method default, so the readers can place every sweep
point), ``{}`` for teacher / student rows (:attr:`pgd.workflow.runs.Row.options`). Rows come
in plan order; a table that borrows Table 1's student rows (Tables 5-7, for their deltas)
lists them with their own ``table`` (:meth:`Plan.table_input_rows`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

MANIFEST_DIR = "manifests"


def manifest_path(results: str, table: str) -> str:
    """``<results>/manifests/<table>.json``."""
    return f"{results}/{MANIFEST_DIR}/{table}.json"


def manifest_rows(plan, table: str) -> List[Dict[str, object]]:
    return [{"table": row.table, "detector": row.detector, "setting": row.setting,
             "seed": int(row.seed), "student_backbone": row.student_backbone,
             "run": row.run, "metrics": f"runs/{row.run}/metrics.json",
             "options": row.options_json()}
            for row in plan.table_input_rows(table)]


def manifest(plan, table: str) -> Dict[str, object]:
    """The manifest document of ``table``."""
    if table not in plan.tables:
        raise KeyError(f"no table {table!r} in the {plan.scale!r} plan")
    return {"table": table, "scale": plan.scale, "rows": manifest_rows(plan, table)}


def manifest_json(plan, table: str) -> str:
    """The manifest as one JSON string (also the rule's rerun trigger)."""
    return json.dumps(manifest(plan, table), sort_keys=False, separators=(",", ":"))


def write_manifest(path, doc, log=None) -> Path:
    """Write a manifest document (a dict or its JSON string) atomically; ``log``: a file that
    gets one line saying what was written."""
    from pgd.io import atomic_write_json
    if isinstance(doc, str):
        doc = json.loads(doc)
    atomic_write_json(path, doc)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(f"{path}: {len(doc.get('rows', []))} rows of table "
                             f"{doc.get('table')}\n", encoding="utf-8")
    return Path(path)
