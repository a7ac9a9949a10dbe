"""Paper layout of the result tables: which rows, in which order, with which labels, and the
cells (``mean ± std (+delta)``, ``diverged (seed s)``, published values side by side).

:func:`build_table` takes :func:`pgd.tables.loading.aggregate` output. Deltas are always
``mean(setting) - mean(student baseline of the same detector)``, with the sign as is (so MR
improvements show as negative deltas, like the paper's ``(-1.7)``). The paper column's delta is
computed the same way from the paper's own student row, never copied. Detector and setting
labels come from :mod:`pgd.catalog` (per-table overrides in :class:`TableSpec`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from pgd.catalog import control_names, detector_label, setting_label
from pgd.tables.loading import diverged_rows
from pgd.tables.paper_values import load_paper_values

MISSING = "\u2014"  # em dash
DIVERGED = "diverged"
PM = "\u00b1"
COCO_METRICS = ("AP", "AP50", "AP75", "APS", "APM", "APL")
CROWD_METRICS = ("MR", "AP", "JI")

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
        setting_labels: per-table overrides of :func:`pgd.catalog.setting_label`.
    """

    rows: Tuple[Tuple[str, str], ...]
    metrics: Tuple[str, ...]
    baseline: str = "student"
    no_delta: Tuple[str, ...] = ("teacher", "student")
    baseline_tables: Tuple[str, ...] = ()
    setting_labels: Mapping[str, str] = field(default_factory=dict)


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


#: Control rows (not methods, pgd.catalog): shown right after their detector's student row.
CONTROL_SETTINGS = control_names()


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

    out, commits, seeds_n, synthetic, failed_rows = [], set(), [], False, 0
    for det, setting in rows:
        got = measured.get((table_id, det, setting), {})
        backbone = next((r["student_backbone"] for r in got.values()), None)
        base = _baseline(measured, tables, det, spec, backbone)
        pbase = _baseline(papers, tables, det, spec)
        ns = sorted({int(r["n"]) for r in got.values()})
        label = spec.setting_labels.get(setting) or setting_label(setting)
        row = {"Detector": detector_label(det), "Setting": label,
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
