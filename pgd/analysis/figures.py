"""``python -m pgd figures --rows MANIFEST.json ... [--mask-out A.json ...] --out-dir DIR``.

Reads the rows of per-table row manifests with the tables' loader
(:func:`pgd.tables.loading.load_runs`) and Fig. 3 mask-out JSONs (``python -m pgd mask-out``),
and writes -- each as PNG and PDF, only when its data is present -- the figures named by
``pgd.workflow.FIGURES``:

* ``fig_table1_gains``: Table 1 AP gain over the student, per detector and method (mean ± std
  over seeds; gains are paired by seed where the student has the same seed). The paper's gain
  (recomputed from its own student row) is a dashed tick over each bar.
* ``fig_k_sweep``: Table 6a, AP vs K (mean line, ± std band), paper curve dashed.
* ``fig_alpha_sweep``: Table 6b, AP vs alpha per detector (log x axis), paper curves dashed.

The x value of a sweep point is the row's option (``options["k"]``, ``options["alpha"]`` of
the manifest row; the paper's from ``paper_values.csv``'s ``options``), never parsed from the
setting label. Labels and the order of detectors and methods come from :mod:`pgd.catalog`.
* ``fig3_mask_out``: AP vs masked ratio per teacher (Fig. 3).

The paper's curves share the axis with the measured ones when their levels are comparable;
otherwise (synthetic data, mini networks) they go to a right-hand axis labelled as the paper's,
so neither is squashed. Titles say "SYNTHETIC data" when any input run is synthetic.
A table row with a diverged run (``pgd.tables.build.failure_reason``) is left out of every
figure, with a printed line naming the run.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

from pgd.catalog import detector_label, detector_names, method_names, setting_label
from pgd.errors import UserError
from pgd.tables.paper_values import paper_sweep
from pgd.workflow.runs import FIGURES

#: figure stems, in the workflow's naming (pgd.workflow.FIGURES -> figure_stems()).
STEMS = tuple(FIGURES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--rows', nargs='*', default=[], metavar='MANIFEST',
                   help='row manifests (any tables; the figures pick theirs)')
    p.add_argument('--mask-out', nargs='*', default=[],
                   help='mask-out JSON files (python -m pgd mask-out), one per teacher')
    p.add_argument('--out-dir', required=True, help='folder for <stem>.png and <stem>.pdf')


# ----------------------------------------------------------------------------- data helpers

def _order(values, preferred) -> list:
    vals = list(dict.fromkeys(values))
    return [v for v in preferred if v in vals] + sorted(v for v in vals if v not in preferred)


def _stats(values) -> tuple:
    import numpy as np
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return float('nan'), float('nan'), 0
    std = float(v.std(ddof=1)) if v.size > 1 else float('nan')
    return float(v.mean()), std, int(v.size)


def seed_values(df, table: str, detector: str, setting: str,
                metric: str = 'AP') -> Dict[int, float]:
    sub = df[(df['table'] == table) & (df['detector'] == detector) & (df['setting'] == setting)
             & (df['metric'] == metric)]
    return {int(s): float(v) for s, v in zip(sub['seed'], sub['value'])}


def student_values(df, table: str, detector: str, metric: str = 'AP') -> Dict[int, float]:
    """The student row of ``table``, else Table 1's (the deltas' baseline, as the tables do)."""
    for t in (table, 'table1'):
        vals = seed_values(df, t, detector, 'student', metric)
        if vals:
            return vals
    return {}


def gains(method: Dict[int, float], student: Dict[int, float]) -> List[float]:
    """Per-seed gains, paired by seed when possible, else against the student mean."""
    if not method or not student:
        return []
    common = sorted(set(method) & set(student))
    if common:
        return [method[s] - student[s] for s in common]
    base = sum(student.values()) / len(student)
    return [v - base for v in method.values()]


def sweep_points(df, table: str, detector: str, option: str, metric: str = 'AP'):
    """[(x, mean, std, n, setting)] of the rows of ``table`` whose options set ``option``
    (x = that value), sorted by x."""
    from pgd.tables.loading import option_sweep
    sub = df[(df['table'] == table) & (df['detector'] == detector) & (df['metric'] == metric)]
    out = []
    for x, setting in option_sweep(df, table, detector, option).items():
        values = sub[sub['setting'] == setting]['value']
        if len(values):
            out.append((x, *_stats(values), setting))
    return sorted(out)


def _paper_gain(detector: str, method: str) -> Optional[float]:
    from pgd.tables.paper_values import paper_value
    try:
        v = paper_value('table1', detector, method, 'AP')
        s = paper_value('table1', detector, 'student', 'AP')
    except ValueError:
        return None
    return None if v is None or s is None else v - s


# ----------------------------------------------------------------------------- drawing

def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _title(text: str, synthetic: bool) -> str:
    return (f'SYNTHETIC data -- {text}' if synthetic else text)


def _save(fig, out_dir: Path, stem: str) -> List[Path]:
    from pgd.io import atomic_write_bytes_via
    paths = []
    for ext in ('png', 'pdf'):
        path = out_dir / f'{stem}.{ext}'
        atomic_write_bytes_via(path, lambda f, ext=ext: fig.savefig(f, format=ext, dpi=150,
                                                                   bbox_inches='tight'))
        paths.append(path)
    _plt().close(fig)
    return paths


def _paper_axis(ax, measured: List[float], paper: List[float], synthetic: bool, ylabel: str):
    """Axis for the paper's curves: the same one when levels are comparable, else a twin."""
    if not paper:
        return None
    meas = [v for v in measured if not math.isnan(v)]
    close = (not synthetic and meas
             and abs(sum(meas) / len(meas) - sum(paper) / len(paper)) < 5.0)
    if close:
        return ax
    twin = ax.twinx()
    twin.set_ylabel(f'paper {ylabel} (COCO, dashed)', color='0.35')
    twin.tick_params(axis='y', colors='0.35')
    return twin


def fig_table1_gains(df, out_dir: Path, synthetic: bool) -> Optional[List[Path]]:
    t1 = df[(df['table'] == 'table1') & (df['metric'] == 'AP')]
    if t1.empty:
        return None
    dets = [d for d in _order(t1['detector'], detector_names()) if student_values(df, 'table1', d)]
    methods = [m for m in _order(t1['setting'], method_names()) if m not in ('teacher', 'student')]
    cells = {}
    for d in dets:
        st = student_values(df, 'table1', d)
        for m in methods:
            g = gains(seed_values(df, 'table1', d, m), st)
            if g:
                cells[(d, m)] = _stats(g)
    if not cells:
        return None
    methods = [m for m in methods if any((d, m) in cells for d in dets)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(13.0, max(6.0, 0.35 * len(dets) * len(methods) + 2)),
                                    4.4))
    width = 0.8 / max(1, len(methods))
    cmap = plt.get_cmap('tab10')
    drew_paper = False
    for j, m in enumerate(methods):
        xs, means, errs = [], [], []
        for i, d in enumerate(dets):
            if (d, m) not in cells:
                continue
            mean, std, _ = cells[(d, m)]
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x), means.append(mean), errs.append(0.0 if math.isnan(std) else std)
            pg = _paper_gain(d, m)
            if pg is not None:
                ax.hlines(pg, x - width / 2, x + width / 2, colors='black', linestyles='dashed',
                          linewidth=1.2)
                drew_paper = True
        ax.bar(xs, means, width=width * 0.95, yerr=errs, capsize=3, color=cmap(j % 10),
               label=setting_label(m))
    if drew_paper:
        ax.plot([], [], color='black', linestyle='dashed', label='paper gain (COCO)')
    ax.axhline(0.0, color='0.3', linewidth=0.8)
    ax.set_xticks(range(len(dets)))
    ax.set_xticklabels([detector_label(d) for d in dets])
    ax.set_ylabel('AP gain over the student (AP points)')
    ax.set_title(_title('Table 1: AP gain over the student (mean ± std over seeds)', synthetic),
                 fontsize=10)
    ax.legend(fontsize=8, ncol=2, loc='best')
    ax.grid(axis='y', alpha=0.3)
    return _save(fig, out_dir, 'fig_table1_gains')


def _sweep_figure(df, out_dir: Path, synthetic: bool, table: str, option: str, stem: str,
                  xlabel: str, title: str, logx: bool) -> Optional[List[Path]]:
    import numpy as np

    sub = df[df['table'] == table]
    if sub.empty:
        return None
    dets = _order(sub['detector'], detector_names())
    curves = {d: sweep_points(df, table, d, option) for d in dets}
    curves = {d: c for d, c in curves.items() if c}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap('tab10')
    measured_all = [p[1] for c in curves.values() for p in c]
    papers = {d: paper_sweep(table, d, option) for d in curves}
    paper_all = [v for c in papers.values() for _, v in c]
    pax = _paper_axis(ax, measured_all, paper_all, synthetic, 'AP')
    for i, (d, pts) in enumerate(curves.items()):
        color = cmap(i % 10)
        xs = np.array([p[0] for p in pts])
        mean = np.array([p[1] for p in pts])
        std = np.array([0.0 if math.isnan(p[2]) else p[2] for p in pts])
        ns = sorted({p[3] for p in pts})
        ntxt = f'n={ns[0]}' if len(ns) == 1 else f'n={ns[0]}-{ns[-1]}'
        ax.plot(xs, mean, marker='o', color=color,
                label=f'{detector_label(d)} (ours, {ntxt})')
        if (std > 0).any():
            ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        st = student_values(df, table, d)
        if st:
            ax.axhline(sum(st.values()) / len(st), color=color, linestyle=':', linewidth=1,
                       label=f'{detector_label(d)} student (ours)')
        if papers.get(d) and pax is not None:
            px = [p[0] for p in papers[d]]
            py = [p[1] for p in papers[d]]
            pax.plot(px, py, linestyle='--', marker='x', color=color, alpha=0.8,
                     label=f'{detector_label(d)} (paper)')
    if logx:
        ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('AP (ours, mean ± std band)')
    ax.set_title(_title(title, synthetic), fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if pax is not None and pax is not ax:
        h2, l2 = pax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc='best')
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, stem)


def fig_k_sweep(df, out_dir: Path, synthetic: bool):
    return _sweep_figure(df, out_dir, synthetic, 'table6a', 'k', 'fig_k_sweep',
                         'K (top-K quality locations per GT)', 'Table 6a: AP vs K', logx=False)


def fig_alpha_sweep(df, out_dir: Path, synthetic: bool):
    return _sweep_figure(df, out_dir, synthetic, 'table6b', 'alpha', 'fig_alpha_sweep',
                         'alpha (distillation loss weight)', 'Table 6b: AP vs alpha', logx=True)


def load_mask_out(paths) -> List[dict]:
    docs = []
    for p in paths:
        try:
            with open(p, 'r', encoding='utf-8') as fh:
                doc = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f'{p}: cannot read mask-out JSON ({exc})') from None
        if not isinstance(doc, dict) or not isinstance(doc.get('ratios'), list) or \
                not isinstance(doc.get('AP'), list) or len(doc['ratios']) != len(doc['AP']):
            raise UserError(f'{p}: not a mask-out result (needs equal-length "ratios" and "AP")')
        doc = dict(doc)
        doc['_path'] = str(p)
        docs.append(doc)
    return docs


def mask_out_synthetic(doc: dict) -> bool:
    if 'synthetic' in doc:
        return bool(doc['synthetic'])
    return bool(((doc.get('provenance') or {}).get('dataset') or {}).get('synthetic'))


def mask_out_label(doc: dict) -> str:
    return str(doc.get('label') or Path(doc['_path']).stem)


def fig3_mask_out(docs: List[dict], out_dir: Path) -> Optional[List[Path]]:
    if not docs:
        return None
    synthetic = any(mask_out_synthetic(d) for d in docs)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap('tab10')
    for i, doc in enumerate(docs):
        pts = sorted(zip(doc['ratios'], doc['AP'], doc.get('AP50') or [None] * len(doc['AP'])))
        xs = [100.0 * float(r) for r, _, _ in pts]
        ax.plot(xs, [a for _, a, _ in pts], marker='o', color=cmap(i % 10),
                label=f'{mask_out_label(doc)} AP')
        if all(v is not None for _, _, v in pts):
            ax.plot(xs, [v for _, _, v in pts], marker='.', linestyle=':', color=cmap(i % 10),
                    label=f'{mask_out_label(doc)} AP50')
    ax.set_xlabel('masked: top-X% of in-box locations by quality (X, %)')
    ax.set_ylabel('AP after masking')
    ax.set_ylim(bottom=0)
    ax.set_title(_title('Fig. 3: teacher AP after masking its top-quality predictions',
                        synthetic), fontsize=10)
    ax.legend(fontsize=8, loc='best')
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, 'fig3_mask_out')


# ----------------------------------------------------------------------------- command

def make_figures(manifests: List[str], mask_out: List[str], out_dir) -> Dict[str, List[Path]]:
    """Write every figure whose data is present; returns ``{stem: [png, pdf]}``."""
    from pgd.tables.loading import MetricsFileError, describe_diverged, load_runs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        df = load_runs(manifests)  # without the rows of diverged runs
    except MetricsFileError as exc:
        raise UserError(str(exc)) from None
    for run in df.attrs.get('diverged', []):
        print(f'[pgd figures] left out, diverged: {describe_diverged(run)}', flush=True)
    synthetic = bool(df['synthetic'].any()) if not df.empty else False
    docs = load_mask_out(mask_out)
    written: Dict[str, List[Path]] = {}
    if not df.empty:
        for stem, fn in (('fig_table1_gains', fig_table1_gains), ('fig_k_sweep', fig_k_sweep),
                         ('fig_alpha_sweep', fig_alpha_sweep)):
            paths = fn(df, out_dir, synthetic)
            if paths:
                written[stem] = paths
    paths = fig3_mask_out(docs, out_dir)
    if paths:
        written['fig3_mask_out'] = paths
    return written


def placeholder_figure(out_dir: Path, stem: str, reason: str) -> List[Path]:
    """A figure that says why it has no curves (e.g. every run it plots diverged), so the
    workflow's outputs always exist and nobody mistakes an empty plot for a result."""
    fig, ax = _plt().subplots(figsize=(6, 2))
    ax.axis('off')
    ax.text(0.5, 0.5, f'{stem}: no data\n{reason}', ha='center', va='center', wrap=True)
    return _save(fig, Path(out_dir), stem)


def run(args) -> int:
    if not args.rows and not args.mask_out:
        raise UserError('give --rows manifests and/or --mask-out files')
    written = make_figures(list(args.rows), list(args.mask_out), args.out_dir)
    for stem in STEMS:
        if stem in written:
            print(f'[pgd figures] {stem}: written', flush=True)
            continue
        placeholder_figure(args.out_dir, stem, 'the inputs have no finite measurements for it '
                           '(rows missing, or every run diverged / made no detections)')
        print(f'[pgd figures] {stem}: no data, placeholder written', flush=True)
    return 0
