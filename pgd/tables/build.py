"""Turn per-run metrics files into the paper's tables (Markdown, LaTeX, CSV).

Only metrics files are read: each is the JSON written by ``python -m pgd test``::

    {"metrics": {"AP": 39.6, "AP50": ..., ...}          # crowd runs: {"MR", "AP", "JI"}
     "provenance": {"config": ..., "seed": 0, "git_commit": "...",
                    "dataset": {"name": ..., "synthetic": true}},
     "run": {"table": "table1", "detector": "atss", "setting": "pgd", "seed": 0,
             "student_backbone": "r18"}}

Pipeline: :func:`load_runs` (long format, validated) -> :func:`aggregate` (mean/std/n over
seeds) -> :func:`build_table` (paper layout, deltas, published values side by side) ->
:func:`write_table` (atomic ``.md``/``.tex``/``.csv``). :func:`build_all` chains them; the module
is also a CLI: ``python -m pgd.tables.build --out DIR metrics1.json metrics2.json ...``.

A run whose model diverged (``"diverged": true``: non-finite weights) or detected nothing
(``"no_detections": true``) has no meaningful metrics: :func:`load_runs` keeps its row out of
the numbers (every seed of that table row) and lists it in ``df.attrs["diverged"]``; the
tables show the row's cells as ``diverged (seed s)``, the figures leave it out and the claim
check excludes it from its comparisons and says so.

Deltas are always ``mean(setting) - mean(student baseline of the same detector)``, with the sign
as is (so MR improvements show as negative deltas, like the paper's ``(-1.7)``). The paper
column's delta is computed the same way from the paper's own student row, never copied.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from pgd.io import atomic_write_text
from pgd.tables.paper_values import load_paper_values

MISSING = "\u2014"  # em dash
DIVERGED = "diverged"
PM = "\u00b1"
COCO_METRICS = ("AP", "AP50", "AP75", "APS", "APM", "APL")
CROWD_METRICS = ("MR", "AP", "JI")
RUN_KEYS = ("table", "detector", "setting", "seed")
GROUP_KEYS = ["table", "detector", "student_backbone", "setting", "metric"]

DETECTOR_LABELS = {"atss": "ATSS", "fcos": "FCOS", "gfl": "GFL", "ddod": "DDOD",
                   "autoassign": "AutoAssign"}
SETTING_LABELS = {"teacher": "Teacher", "student": "Student", "defeat": "DeFeat", "frs": "FRS",
                  "fgfi": "FGFI", "fkd": "FKD", "fgd": "FGD", "ld": "LD", "pgd": "Ours (PGD)",
                  "inherit": "Teacher-init student (control)",
                  "box": "Box", "boxgauss": "BoxGauss", "centre": "Centre", "quality": "Quality",
                  "topkeq": "TopkEq", "kde": "KDE", "pgw": "Ours", "neck": "neck",
                  "cls": "cls", "reg": "reg", "cls+reg": "cls + reg"}

CAPTIONS = {
    "table1": "Comparison with state-of-the-art distillation methods on COCO mini-val "
              "(R-101 teacher, R-50 student).",
    "table2": "Distillation with a MobileNetV2 student backbone on COCO mini-val.",
    "table3": "Distillation on the CrowdHuman validation set with DDOD (MR: lower is better).",
    "table4": "Self-distillation on COCO mini-val (teacher = student, R-50, 1x).",
    "table5": "Foreground distillation strategies on COCO mini-val with ATSS.",
    "table6a": "Number K of top-scoring pixels, ATSS, COCO mini-val.",
    "table6b": "Distillation loss weight alpha, FCOS and ATSS, COCO mini-val.",
    "table7": "Distillation branches (neck / cls / reg), ATSS, COCO mini-val.",
}


class MetricsFileError(ValueError):
    """A metrics file is unreadable, malformed, or duplicates another run."""


@dataclass(frozen=True)
class TableSpec:
    """Layout of one paper table.

    Attributes:
        rows: ``(detector, setting)`` pairs in display order.
        metrics: metric columns in display order.
        baseline: setting the deltas are taken against (per detector).
        no_delta: settings shown without a delta.
        baseline_tables: other tables searched, in order, for the baseline row when this table
            has none (measured and paper alike), e.g. Table 6 takes the student from Table 1.
        setting_labels: per-table overrides of :data:`SETTING_LABELS`.
    """

    rows: Tuple[Tuple[str, str], ...]
    metrics: Tuple[str, ...]
    baseline: str = "student"
    no_delta: Tuple[str, ...] = ("teacher", "student")
    baseline_tables: Tuple[str, ...] = ()
    setting_labels: Mapping[str, str] = field(default_factory=dict)


COCO_METRICS = ("AP", "AP50", "AP75", "APS", "APM", "APL")


def default_spec(table_id: str) -> TableSpec:
    """Spec of ``table_id`` following the paper's row order (from ``paper_values.csv``).

    Tables the paper has no numbers for (e.g. the extra LGD table) list the student first and
    take the rest of their rows from the measured runs, with COCO metrics."""
    pv = load_paper_values()
    sub = pv[pv["table"] == table_id]
    if sub.empty:
        return TableSpec(rows=(), metrics=COCO_METRICS)
    rows = tuple(dict.fromkeys(zip(sub["detector"], sub["setting"])))
    metrics = tuple(dict.fromkeys(sub["metric"]))
    fallback = ("table1",) if table_id in ("table5", "table6a", "table6b", "table7") else ()
    labels = {"student": "S & T"} if table_id == "table4" else {}
    if table_id == "table7":
        labels = {"student": "student (no KD)"}
    return TableSpec(rows=rows, metrics=metrics, baseline_tables=fallback, setting_labels=labels)


# ----------------------------------------------------------------------------- loading

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate(path: str, doc) -> None:
    def fail(msg: str):
        raise MetricsFileError(f"{path}: {msg}")

    if not isinstance(doc, dict):
        fail("top level must be a JSON object")
    for key in ("metrics", "run", "provenance"):
        if not isinstance(doc.get(key), dict):
            fail(f"missing or non-object key {key!r}")
    metrics, run, prov = doc["metrics"], doc["run"], doc["provenance"]
    if not metrics:
        fail("'metrics' is empty")
    # None: not defined for this val set (pycocotools' -1, e.g. no large objects); shown as
    # missing, never as a number
    bad = [k for k, v in metrics.items() if v is not None and not _is_number(v)]
    if bad:
        fail(f"non-numeric metric value(s) for {bad}")
    if all(v is None for v in metrics.values()) and not doc.get("diverged"):
        fail("every metric is undefined (None)")
    for key in RUN_KEYS:
        if key not in run:
            fail(f"missing key 'run.{key}'")
    for key in ("table", "detector", "setting"):
        if not isinstance(run[key], str) or not run[key]:
            fail(f"'run.{key}' must be a non-empty string")
    if not isinstance(run["seed"], int) or isinstance(run["seed"], bool):
        fail("'run.seed' must be an integer")
    if "git_commit" not in prov:
        fail("missing key 'provenance.git_commit'")
    ds = prov.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("synthetic"), bool):
        fail("missing or non-boolean 'provenance.dataset.synthetic'")


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


def load_runs(paths: Iterable) -> pd.DataFrame:
    """Read metrics files into a long DataFrame, one row per (run, metric).

    Columns: ``table, detector, student_backbone, setting, seed, metric, value, synthetic,
    dataset, git_commit, config, path``. Raises :class:`MetricsFileError` naming the file on
    unreadable JSON, missing/ill-typed keys, or two files describing the same run. Diverged
    runs (:func:`failure_reason`) and the other seeds of their table row are left out and
    listed in ``attrs["diverged"]`` (dicts with the run keys, ``reason`` and ``path``).
    """
    records: List[dict] = []
    diverged: List[dict] = []
    seen: Dict[tuple, str] = {}
    for p in paths:
        path = str(p)
        try:
            with open(path, "r", encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise MetricsFileError(f"{path}: cannot read metrics JSON ({exc})") from exc
        _validate(path, doc)
        run, prov = doc["run"], doc["provenance"]
        backbone = run.get("student_backbone")
        key = (run["table"], run["detector"], backbone, run["setting"], run["seed"])
        if key in seen:
            raise MetricsFileError(f"{path}: same run {key} as {seen[key]}")
        seen[key] = path
        reason = failure_reason(doc)
        if reason:
            diverged.append({"table": run["table"], "detector": run["detector"],
                             "student_backbone": backbone, "setting": run["setting"],
                             "seed": run["seed"], "reason": reason, "path": path,
                             "synthetic": bool((prov.get("dataset") or {}).get("synthetic")),
                             "git_commit": prov.get("git_commit")})
            continue
        for metric, value in doc["metrics"].items():
            if value is None:
                continue
            records.append({
                "table": run["table"], "detector": run["detector"],
                "student_backbone": backbone, "setting": run["setting"], "seed": run["seed"],
                "metric": metric, "value": float(value),
                "synthetic": prov["dataset"]["synthetic"],
                "dataset": prov["dataset"].get("name"),
                "git_commit": prov["git_commit"], "config": prov.get("config"), "path": path,
            })
    cols = GROUP_KEYS[:4] + ["seed", "metric", "value", "synthetic", "dataset", "git_commit",
                             "config", "path"]
    return _drop_diverged(pd.DataFrame.from_records(records, columns=cols), diverged)


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


# ----------------------------------------------------------------------------- building

def _signed(x: float, decimals: int) -> str:
    r = round(x, decimals)
    if r == 0:
        r = 0.0  # no "-0.0"
    return f"{r:+.{decimals}f}"


def _cell(mean, std, n, delta, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    s = f"{mean:.{decimals}f}"
    if n is not None and n > 1 and std is not None and not math.isnan(std):
        s += f" {PM} {std:.{decimals}f}"
    if delta is not None:
        s += f" ({_signed(delta, decimals)})"
    return s


def _diverged_cell(runs: Sequence[Mapping]) -> str:
    seeds = sorted({int(r["seed"]) for r in runs})
    return f"{DIVERGED} (seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))})"


def _measured_index(df_agg: pd.DataFrame) -> Dict[tuple, dict]:
    """(table, detector, setting) -> {metric: row}, refusing mixed student backbones."""
    index: Dict[tuple, dict] = {}
    backbones: Dict[tuple, object] = {}
    for rec in df_agg.to_dict("records"):
        key = (rec["table"], rec["detector"], rec["setting"])
        bb = rec["student_backbone"]
        if key in backbones and backbones[key] != bb:
            raise ValueError(f"runs of {key} use several student backbones "
                             f"({backbones[key]!r}, {bb!r}); filter them before build_table")
        backbones[key] = bb
        index.setdefault(key, {})[rec["metric"]] = rec
    return index


def _paper_index() -> Dict[tuple, Dict[str, float]]:
    index: Dict[tuple, Dict[str, float]] = {}
    for rec in load_paper_values().to_dict("records"):
        index.setdefault((rec["table"], rec["detector"], rec["setting"]), {})[rec["metric"]] = \
            rec["value"]
    return index


def _baseline(index: Mapping, tables: Sequence[str], detector: str, spec: TableSpec,
              backbone=None) -> Optional[Mapping]:
    for t in tables:
        row = index.get((t, detector, spec.baseline))
        if not row:
            continue
        if backbone is not None:
            bbs = {r.get("student_backbone") for r in row.values() if isinstance(r, dict)}
            if bbs and backbone not in bbs:
                continue
        return row
    return None


def _value(entry) -> Optional[float]:
    if entry is None:
        return None
    return entry["mean"] if isinstance(entry, dict) else float(entry)


#: Control rows (not methods): shown right after their detector's student row.
CONTROL_SETTINGS = ("inherit",)


def _with_extra_rows(rows: List[Tuple[str, str]], measured: Sequence[Tuple[str, str]]
                     ) -> List[Tuple[str, str]]:
    """``rows`` plus the measured (detector, setting) pairs it lacks, each kept in its
    detector's block: a control right after the student row, anything else at the block's end
    (a detector without a block gets one at the end)."""
    out = list(rows)
    for det, setting in measured:
        if (det, setting) in out:
            continue
        block = [i for i, (d, _) in enumerate(out) if d == det]
        student = [i for i in block if out[i][1] == "student"]
        if setting in CONTROL_SETTINGS and student:
            at = student[0] + 1
        else:
            at = block[-1] + 1 if block else len(out)
        out.insert(at, (det, setting))
    return out


def build_table(df_agg: pd.DataFrame, table_id: str, spec: Optional[TableSpec] = None,
                paper: bool = True, decimals: int = 1) -> pd.DataFrame:
    """Paper-layout table for ``table_id`` from :func:`aggregate` output.

    Rows follow ``spec.rows`` (default: the paper's order); measured (detector, setting) pairs
    the spec does not list join their detector's block (:func:`_with_extra_rows`). Columns:
    ``Detector, Setting, n`` (seeds; min-max when the metrics differ), one column per metric
    with ``"mean ± std (+delta)"`` (std only for n > 1, delta only outside ``spec.no_delta``
    and when the baseline was measured), and, if ``paper``,
    ``"<metric> (paper)"`` columns with the published value and its delta to the paper's own
    student row. Missing cells are ``"—"``; a row with a diverged run shows
    ``"diverged (seed s)"`` in every measured cell (and gives no baseline for deltas). ``attrs`` carries ``table_id``, ``synthetic``,
    ``git_commits`` and ``seeds`` (n per row) for the writers.
    """
    spec = spec or default_spec(table_id)
    tables = (table_id,) + tuple(spec.baseline_tables)
    measured = _measured_index(df_agg)
    diverged = diverged_rows(df_agg)
    papers = _paper_index() if paper else {}
    rows = _with_extra_rows(list(spec.rows),
                            sorted({(d, s) for (t, d, s) in [*measured, *diverged]
                                    if t == table_id}))
    labels = {**SETTING_LABELS, **spec.setting_labels}

    out, commits, seeds_n, synthetic, failed_rows = [], set(), [], False, 0
    for det, setting in rows:
        got = measured.get((table_id, det, setting), {})
        backbone = next((r["student_backbone"] for r in got.values()), None)
        base = _baseline(measured, tables, det, spec, backbone)
        pbase = _baseline(papers, tables, det, spec)
        ns = sorted({int(r["n"]) for r in got.values()})
        row = {"Detector": DETECTOR_LABELS.get(det, det), "Setting": labels.get(setting, setting),
               "n": (MISSING if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}")}
        with_delta = setting not in spec.no_delta
        failed = diverged.get((table_id, det, setting))
        if failed:
            row["n"] = str(len(failed))
            # a failed row still says what data it ran on and from which commit
            synthetic = synthetic or any(f.get("synthetic") for f in failed)
            commits.update(str(f["git_commit"]) for f in failed if f.get("git_commit"))
            failed_rows += 1
        for m in spec.metrics:
            r = got.get(m)
            b = _value(base.get(m)) if (base and with_delta) else None
            delta = r["mean"] - b if (r is not None and b is not None) else None
            row[m] = _diverged_cell(failed) if failed else \
                _cell(r["mean"], r["std"], r["n"], delta, decimals) if r else MISSING
        if paper:
            pv = papers.get((table_id, det, setting), {})
            for m in spec.metrics:
                v = pv.get(m)
                b = (pbase or {}).get(m) if with_delta else None
                delta = v - b if (v is not None and b is not None) else None
                row[f"{m} (paper)"] = _cell(v, None, 1, delta, decimals) if v is not None \
                    else MISSING
        for r in got.values():
            commits.update(c for c in str(r["git_commits"]).split(",") if c)
            synthetic = synthetic or bool(r["synthetic"])
        if ns:
            seeds_n.extend(ns)
        out.append(row)
    columns = ["Detector", "Setting", "n", *spec.metrics]
    if paper:
        columns += [f"{m} (paper)" for m in spec.metrics]
    table = pd.DataFrame(out, columns=columns)
    table.attrs.update(table_id=table_id, synthetic=synthetic, git_commits=sorted(commits),
                       seeds=seeds_n, failed_rows=failed_rows)
    return table


# ----------------------------------------------------------------------------- writing

def _full_caption(table_df: pd.DataFrame, caption: str) -> str:
    if table_df.attrs.get("synthetic"):
        return ("SYNTHETIC DATA: the reproduced columns come from runs on a synthetic dataset "
                "and are not comparable to the paper's numbers. " + caption)
    return caption


def _footer(table_df: pd.DataFrame) -> str:
    commits = table_df.attrs.get("git_commits") or []
    seeds = table_df.attrs.get("seeds") or []
    if not seeds and table_df.attrs.get("failed_rows"):
        shas = ", ".join(c[:12] for c in commits) if commits else "unknown"
        return ("Provenance: every run of this table diverged or made no detections (see the "
                f"cells); git commit(s) of the runs: {shas}.")
    if not seeds:
        return "Provenance: no runs found for this table; reproduced cells are empty."
    rng = f"{min(seeds)}" if min(seeds) == max(seeds) else f"{min(seeds)}-{max(seeds)}"
    shas = ", ".join(c[:12] for c in commits) if commits else "unknown"
    tid = table_df.attrs.get("table_id", "")
    return (f"Provenance: seeds per row: {rng}; git commit(s) of the runs: {shas}. "
            f"Paper columns: PGD (ECCV'22) {tid.replace('table', 'Table ')}, deltas recomputed "
            "from the paper's student row.")


def _display_rows(table_df: pd.DataFrame) -> List[List[str]]:
    """Rows as strings, with repeated detector names blanked like the paper."""
    rows, prev = [], None
    for rec in table_df.astype(str).values.tolist():
        det = rec[0]
        rows.append(["" if det == prev else det] + rec[1:])
        prev = det
    return rows


def to_markdown(table_df: pd.DataFrame, caption: str) -> str:
    cols = list(table_df.columns)
    lines = [f"**{_full_caption(table_df, caption)}**", "",
             "| " + " | ".join(cols) + " |",
             "|" + "|".join(":---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
    for r in _display_rows(table_df):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    lines += ["", f"_{_footer(table_df)}_", ""]
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    s = "".join(_TEX.get(ch, ch) for ch in str(s))
    return s.replace(PM, r"$\pm$").replace(MISSING, "--")


def to_latex(table_df: pd.DataFrame, caption: str) -> str:
    cols = list(table_df.columns)
    ours = [c for c in cols[3:] if not c.endswith(" (paper)")]
    paper = [c for c in cols[3:] if c.endswith(" (paper)")]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{_tex(_full_caption(table_df, caption))}}}",
             rf"\label{{tab:{table_df.attrs.get('table_id', 'table')}}}",
             r"\begin{tabular}{ll" + "r" * (len(cols) - 2) + "}", r"\toprule"]
    if paper:
        a, b = 4, 3 + len(ours)
        lines.append(rf" & & & \multicolumn{{{len(ours)}}}{{c}}{{Reproduced}} & "
                     rf"\multicolumn{{{len(paper)}}}{{c}}{{Paper}} \\")
        lines.append(rf"\cmidrule(lr){{{a}-{b}}}\cmidrule(lr){{{b + 1}-{b + len(paper)}}}")
    header = cols[:3] + ours + [c[: -len(" (paper)")] for c in paper]
    lines.append(" & ".join(_tex(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    for i, r in enumerate(_display_rows(table_df)):
        if i and r[0]:
            lines.append(r"\midrule")
        lines.append(" & ".join(_tex(c) for c in r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "",
              rf"\par\smallskip\footnotesize {_tex(_footer(table_df))}", r"\end{table}", ""]
    return "\n".join(lines)


def to_csv(table_df: pd.DataFrame, caption: str) -> str:
    """CSV of the full table, preceded by ``#`` comment lines (caption, provenance).

    Read it back with ``pandas.read_csv(path, comment="#")``.
    """
    head = f"# {_full_caption(table_df, caption)}\n# {_footer(table_df)}\n"
    return head + table_df.to_csv(index=False, lineterminator="\n")


def write_table(table_df: pd.DataFrame, out_dir, name: str, caption: str) -> Dict[str, Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` atomically; return their paths."""
    out = Path(out_dir)
    paths = {"md": out / f"{name}.md", "tex": out / f"{name}.tex", "csv": out / f"{name}.csv"}
    atomic_write_text(paths["md"], to_markdown(table_df, caption))
    atomic_write_text(paths["tex"], to_latex(table_df, caption))
    atomic_write_text(paths["csv"], to_csv(table_df, caption))
    return paths


def build_all(paths: Iterable, out_dir, table_ids: Optional[Sequence[str]] = None,
              paper: bool = True) -> Dict[str, Dict[str, Path]]:
    """Load + aggregate ``paths`` and write every requested table (default: all with runs)."""
    agg = aggregate(load_runs(paths))
    ids = list(table_ids) if table_ids else sorted(set(agg["table"]))
    written = {}
    for tid in ids:
        table = build_table(agg, tid, paper=paper)
        written[tid] = write_table(table, out_dir, tid, CAPTIONS.get(tid, tid))
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+", help="metrics JSON files")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--tables", nargs="*", help="table ids (default: all with runs)")
    args = ap.parse_args(argv)
    for tid, files in build_all(args.metrics, args.out, args.tables).items():
        print(tid, *(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
