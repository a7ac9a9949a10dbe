"""Writers of a built table (:func:`pgd.tables.layout.build_table`): Markdown, LaTeX and CSV,
each with the caption (SYNTHETIC DATA first when any run is synthetic) and a provenance
footer (seeds per row, git commits), written atomically by :func:`write_table`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pandas as pd

from pgd.io import atomic_write_text
from pgd.tables.layout import MISSING, PM


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
