"""Reading results: per-table row manifests -> one validated long DataFrame.

The planner writes one **row manifest** per table, ``results/<scale>/manifests/<table>.json``::

    {"table": "table6a", "scale": "mini",
     "rows": [{"table": "table6a", "detector": "atss", "setting": "k=9", "seed": 0,
               "student_backbone": "r18",
               "run": "distill/shapes/atss_r18_student/r34_teacher/pgd/k=9/seed0",
               "metrics": "runs/distill/shapes/atss_r18_student/r34_teacher/pgd/k=9/seed0/metrics.json",
               "options": {"k": 9}}, ...]}

A ROW gives the table identity (table, detector, setting, seed, student backbone) and the
row's structured options (``{}`` for teacher / student / method rows); ``metrics`` is relative
to the manifest's parent's parent (``results/<scale>/``). The metrics file is the run's own
``metrics.json`` as ``python -m pgd test`` wrote it (one file per run, however many rows read
it)::

    {"metrics": {"AP": 39.6, "AP50": ..., ...}          # crowd runs: {"MR", "AP", "JI"}
     "provenance": {"config": ..., "seed": 0, "git_commit": "...",
                    "dataset": {"name": ..., "synthetic": true}},
     "run": {"run": "<run dir>", "kind": ..., ...}}     # the run identity, not a table row

A table that borrows another table's rows (Tables 5-7 take Table 1's student rows for their
deltas) lists them in its own manifest with their own ``table``; the same row listed by two
manifests is read once.

A run whose model diverged (``"diverged": true``: non-finite weights) or detected nothing
(``"no_detections": true``) has no meaningful metrics: :func:`load_runs` keeps its table row out
of the numbers (every seed of it) and lists it in ``df.attrs["diverged"]``; the tables show the
row's cells as ``diverged (seed s)``, the figures leave it out, the claim check excludes it
from its comparisons and the reproduction check compares it as *diverged*, never as 0 AP.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import pandas as pd

RUN_KEYS = ("table", "detector", "setting", "seed")
ROW_KEYS = ("table", "detector", "setting", "seed", "student_backbone", "run", "metrics",
            "options")
GROUP_KEYS = ["table", "detector", "student_backbone", "setting", "metric"]
COLUMNS = GROUP_KEYS[:4] + ["seed", "metric", "value", "synthetic", "dataset", "git_commit",
                            "config", "path", "run", "options", "manifest"]


class MetricsFileError(ValueError):
    """A manifest or metrics file is unreadable or malformed, or a row duplicates another."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ----------------------------------------------------------------------------- manifests

def _row_name(manifest: str, i: int, row) -> str:
    if isinstance(row, dict) and all(k in row for k in RUN_KEYS):
        return (f"{manifest}: row {i} ({row['table']} {row['detector']} {row['setting']} "
                f"seed {row['seed']})")
    return f"{manifest}: row {i}"


def _validate_row(where: str, row) -> None:
    def fail(msg: str):
        raise MetricsFileError(f"{where}: {msg}")

    if not isinstance(row, dict):
        fail("a row must be a JSON object")
    for key in ROW_KEYS:
        if key not in row:
            fail(f"missing key {key!r}")
    for key in ("table", "detector", "setting", "run", "metrics"):
        if not isinstance(row[key], str) or not row[key]:
            fail(f"{key!r} must be a non-empty string")
    if not isinstance(row["seed"], int) or isinstance(row["seed"], bool):
        fail("'seed' must be an integer")
    if row["student_backbone"] is not None and not isinstance(row["student_backbone"], str):
        fail("'student_backbone' must be a string")
    if not isinstance(row["options"], dict):
        fail("'options' must be a JSON object")


def read_manifest(path) -> List[Tuple[dict, Path, str]]:
    """``[(row, metrics file path, "<manifest>: row i (...)"), ...]`` of one manifest, each row
    validated; raises :class:`MetricsFileError` naming the manifest (and row)."""
    path = str(path)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise MetricsFileError(f"{path}: cannot read manifest JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise MetricsFileError(f"{path}: not a row manifest (needs a 'rows' list)")
    base = Path(path).resolve().parent.parent
    out = []
    for i, row in enumerate(doc["rows"]):
        where = _row_name(path, i, row)
        _validate_row(where, row)
        out.append((row, base / row["metrics"], where))
    return out


def write_manifest(path, table: str, scale: str, rows: Iterable[Mapping]) -> dict:
    """Write a row manifest (the planner's format, see the module docstring); returns it."""
    from pgd.io import atomic_write_json
    doc = {"table": table, "scale": scale, "rows": [dict(r) for r in rows]}
    for i, row in enumerate(doc["rows"]):
        _validate_row(_row_name(str(path), i, row), row)
    atomic_write_json(path, doc)
    return doc


# ----------------------------------------------------------------------------- metrics files

def _validate(where: str, doc) -> None:
    def fail(msg: str):
        raise MetricsFileError(f"{where}: {msg}")

    if not isinstance(doc, dict):
        fail("top level must be a JSON object")
    for key in ("metrics", "provenance"):
        if not isinstance(doc.get(key), dict):
            fail(f"missing or non-object key {key!r}")
    metrics, prov = doc["metrics"], doc["provenance"]
    if not metrics:
        fail("'metrics' is empty")
    # None: not defined for this val set (pycocotools' -1, e.g. no large objects); shown as
    # missing, never as a number
    bad = [k for k, v in metrics.items() if v is not None and not _is_number(v)]
    if bad:
        fail(f"non-numeric metric value(s) for {bad}")
    if all(v is None for v in metrics.values()) and not doc.get("diverged"):
        fail("every metric is undefined (None)")
    if "git_commit" not in prov:
        fail("missing key 'provenance.git_commit'")
    ds = prov.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("synthetic"), bool):
        fail("missing or non-boolean 'provenance.dataset.synthetic'")


def read_metrics(path: Path, where: str, row: Mapping) -> dict:
    """The validated metrics JSON of ``row`` (``where`` names the manifest row in errors)."""
    where = f"{where}: metrics file {path}"
    try:
        with open(path, "r", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise MetricsFileError(f"{where}: cannot read metrics JSON ({exc})") from exc
    _validate(where, doc)
    run = doc.get("run")
    if isinstance(run, dict) and isinstance(run.get("run"), str) and run["run"] != row["run"]:
        raise MetricsFileError(f"{where}: is the metrics of run {run['run']!r}, the row names "
                               f"run {row['run']!r}")
    return doc


def failure_reason(doc: Mapping) -> Optional[str]:
    """Why a run's metrics are not a measurement of a trained detector, or None: its model
    diverged (``pgd test`` found non-finite weights), it detected nothing (every AP 0 by
    definition, as a NaN model does), or a metric is NaN/infinite."""
    if doc.get("diverged"):
        return str(doc.get("diverged_reason") or "diverged")
    if doc.get("no_detections"):
        return "no detections"
    if any(_is_number(v) and not math.isfinite(v) for v in doc["metrics"].values()):
        return "non-finite metrics"
    return None


def describe_diverged(run: Mapping) -> str:
    """One phrase naming a diverged run, e.g. ``table1 atss fgd seed 1 (no detections)``."""
    return (f"{run['table']} {run['detector']} {run['setting']} seed {run['seed']} "
            f"({run['reason']})")


def diverged_rows(df: pd.DataFrame) -> Dict[tuple, List[dict]]:
    """``(table, detector, setting) -> [diverged run, ...]`` from :func:`load_runs` output."""
    out: Dict[tuple, List[dict]] = {}
    for run in df.attrs.get("diverged", []):
        out.setdefault((run["table"], run["detector"], run["setting"]), []).append(run)
    return out


def _drop_diverged(df: pd.DataFrame, diverged: List[dict]) -> pd.DataFrame:
    """``df`` without any row (table, detector, setting) that has a diverged run: a mean over
    the surviving seeds would hide the failure. The runs go to ``attrs["diverged"]``."""
    bad = {(r["table"], r["detector"], r["setting"]) for r in diverged}
    if bad and not df.empty:
        keys = list(zip(df["table"], df["detector"], df["setting"]))
        df = df[[k not in bad for k in keys]].reset_index(drop=True)
    df.attrs["diverged"] = diverged
    return df


def load_rows(entries: Iterable[Tuple[Mapping, Path, str]]) -> pd.DataFrame:
    """:func:`load_runs` on ``(row, metrics path, where)`` triples (:func:`read_manifest`)."""
    records: List[dict] = []
    diverged: List[dict] = []
    seen: Dict[tuple, Tuple[str, str]] = {}
    docs: Dict[str, dict] = {}
    for row, mpath, where in entries:
        key = (row["table"], row["detector"], row["student_backbone"], row["setting"],
               row["seed"])
        if key in seen:
            if seen[key][0] == row["run"]:
                continue  # the same row listed by two manifests (a borrowed baseline)
            raise MetricsFileError(f"{where}: same row {key} as {seen[key][1]} but run "
                                   f"{row['run']!r} instead of {seen[key][0]!r}")
        seen[key] = (row["run"], where)
        path = str(mpath)
        if path not in docs:
            docs[path] = read_metrics(mpath, where, row)
        doc = docs[path]
        prov = doc["provenance"]
        ident = {"table": row["table"], "detector": row["detector"],
                 "student_backbone": row["student_backbone"], "setting": row["setting"],
                 "seed": row["seed"]}
        reason = failure_reason(doc)
        if reason:
            diverged.append({**ident, "reason": reason, "path": path, "run": row["run"],
                             "options": dict(row["options"]),
                             "metrics": list(doc["metrics"]),
                             "synthetic": bool((prov.get("dataset") or {}).get("synthetic")),
                             "dataset": (prov.get("dataset") or {}).get("name"),
                             "git_commit": prov.get("git_commit")})
            continue
        for metric, value in doc["metrics"].items():
            if value is None:
                continue
            records.append({
                **ident, "metric": metric, "value": float(value),
                "synthetic": prov["dataset"]["synthetic"],
                "dataset": prov["dataset"].get("name"),
                "git_commit": prov["git_commit"], "config": prov.get("config"), "path": path,
                "run": row["run"], "options": dict(row["options"]),
                "manifest": where.split(": row ")[0],
            })
    df = _drop_diverged(pd.DataFrame.from_records(records, columns=COLUMNS), diverged)
    df.attrs["versions"] = {p: dict(d["provenance"].get("versions") or {})
                            for p, d in docs.items()}
    return df


def load_runs(manifests: Iterable) -> pd.DataFrame:
    """Read the rows of row manifests into a long DataFrame, one row per (table row, metric).

    Columns: ``table, detector, student_backbone, setting, seed, metric, value, synthetic,
    dataset, git_commit, config, path, run, options, manifest`` (``options``: the row's option
    dict, ``path``: its metrics file). Raises :class:`MetricsFileError` naming the manifest and
    the row on an unreadable or malformed manifest or metrics file, or on two rows with the
    same identity but different runs. Diverged runs (:func:`failure_reason`) and the other
    seeds of their table row are left out and listed in ``attrs["diverged"]`` (dicts with the
    row keys, ``reason``, ``path``, ``run``, ``options`` and ``metrics``, the metric names).
    ``attrs["versions"]``: metrics file -> its ``provenance.versions`` (package versions).
    """
    entries: List[Tuple[dict, Path, str]] = []
    for m in manifests:
        entries.extend(read_manifest(m))
    return load_rows(entries)


def row_options(df: pd.DataFrame, table: str, detector: str) -> Dict[str, dict]:
    """``setting -> options`` of ``table``'s rows for ``detector`` (diverged rows included),
    in row order."""
    out: Dict[str, dict] = {}
    if not df.empty:
        sub = df[(df["table"] == table) & (df["detector"] == detector)]
        for setting, options in zip(sub["setting"], sub["options"]):
            out.setdefault(setting, dict(options or {}))
    for r in df.attrs.get("diverged", []):
        if r["table"] == table and r["detector"] == detector:
            out.setdefault(r["setting"], dict(r.get("options") or {}))
    return out


def option_sweep(df: pd.DataFrame, table: str, detector: str, option: str
                 ) -> Dict[float, str]:
    """``value -> setting`` of the rows of ``table`` whose options set a numeric ``option``
    (e.g. ``k`` in Table 6a), sorted by value; diverged rows included."""
    out = {}
    for setting, options in row_options(df, table, detector).items():
        v = options.get(option)
        if _is_number(v):
            out.setdefault(float(v), setting)
    return dict(sorted(out.items()))


def _join(values) -> str:
    return ",".join(sorted({str(v) for v in values if v is not None and v == v}))


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (table, detector, student_backbone, setting, metric).

    Columns added: ``mean``, ``std`` (sample std, ddof=1; NaN when n == 1), ``n``, ``seeds``,
    ``synthetic`` (any run synthetic), ``git_commits`` (comma-joined, sorted).
    """
    cols = GROUP_KEYS + ["mean", "std", "n", "seeds", "synthetic", "git_commits"]
    if df.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["diverged"] = df.attrs.get("diverged", [])
        return out
    g = df.groupby(GROUP_KEYS, dropna=False, sort=False)
    out = g.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
                seeds=("seed", lambda s: ",".join(str(x) for x in sorted(s))),
                synthetic=("synthetic", "any"),
                git_commits=("git_commit", _join)).reset_index()
    out.loc[out["n"] < 2, "std"] = float("nan")
    out["student_backbone"] = out["student_backbone"].astype(object).where(
        out["student_backbone"].notna(), None)
    out = out[cols]
    out.attrs["diverged"] = df.attrs.get("diverged", [])
    return out
