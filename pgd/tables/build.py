"""Turn the rows of per-table row manifests into the paper's tables (Markdown, LaTeX, CSV).

Pipeline: :func:`load_runs` (manifests -> long format, validated; :mod:`pgd.tables.loading`)
-> :func:`aggregate` (mean/std/n over seeds) -> :func:`build_table` (paper layout, deltas,
published values side by side; :mod:`pgd.tables.layout`) -> :func:`write_table` (atomic
``.md``/``.tex``/``.csv``; :mod:`pgd.tables.formatting`). :func:`build_all` chains them; this
module re-exports the pieces, so ``from pgd.tables.build import load_runs, build_table`` keeps
working. CLI: ``python -m pgd tables --rows M.json ... --out-dir DIR [--tables ID ...]``
(:mod:`pgd.tables.cli`).

A diverged run (non-finite weights) or one that detected nothing is never a number: its table
row shows ``diverged (seed s)`` (see :mod:`pgd.tables.loading`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

from pgd.tables.formatting import to_csv, to_latex, to_markdown, write_table
from pgd.tables.layout import (
    CAPTIONS,
    COCO_METRICS,
    CONTROL_SETTINGS,
    CROWD_METRICS,
    DIVERGED,
    MISSING,
    PM,
    TableSpec,
    _with_extra_rows,
    build_table,
    default_spec,
)
from pgd.tables.loading import (
    GROUP_KEYS,
    RUN_KEYS,
    MetricsFileError,
    aggregate,
    describe_diverged,
    diverged_rows,
    failure_reason,
    load_rows,
    load_runs,
    option_sweep,
    read_manifest,
    row_options,
    write_manifest,
)

__all__ = [
    "CAPTIONS", "COCO_METRICS", "CONTROL_SETTINGS", "CROWD_METRICS", "DIVERGED", "GROUP_KEYS",
    "MISSING", "PM", "RUN_KEYS", "MetricsFileError", "TableSpec", "_with_extra_rows",
    "aggregate", "build_all", "build_table", "default_spec", "describe_diverged",
    "diverged_rows", "failure_reason", "load_rows", "load_runs", "option_sweep",
    "read_manifest", "row_options", "to_csv", "to_latex", "to_markdown", "write_manifest",
    "write_table",
]


def build_all(manifests: Iterable, out_dir, table_ids: Optional[Sequence[str]] = None,
              paper: bool = True) -> Dict[str, Dict[str, Path]]:
    """Load + aggregate the rows of ``manifests`` and write every requested table (default:
    every table with measured or diverged rows)."""
    agg = aggregate(load_runs(manifests))
    ids = list(table_ids) if table_ids else sorted(
        set(agg["table"]) | {r["table"] for r in agg.attrs.get("diverged", [])})
    written = {}
    for tid in ids:
        table = build_table(agg, tid, paper=paper)
        written[tid] = write_table(table, out_dir, tid, CAPTIONS.get(tid, tid))
    return written
