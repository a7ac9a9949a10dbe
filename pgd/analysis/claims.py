"""``python -m pgd claims --metrics M.json ... [--mask-out A.json ...] --out claims.md``.

Checks each quantitative claim of the PGD paper on the measured runs and writes a Markdown
report: per claim whether it **holds**, **does not hold** or was **not measured** in this run,
the numbers behind it, the seed spread, and the paper's own numbers for the same comparison.

Rules (stated in the report too):

* A claim is a set of directed comparisons "A > B" (e.g. PGD AP > FGD AP, one per detector).
  It **holds** only if every measured comparison has ``mean(A) - mean(B) > 0`` (means over
  seeds); it is **not measured** when no comparison could be formed from the inputs.
* Seed noise of a comparison is ``sqrt(std_A^2 + std_B^2)`` with the sample std over seeds
  (ddof = 1). "holds, beyond seed noise" means every difference exceeds its noise; "holds,
  within noise" means at least one does not. With a single seed on either side the spread is
  unknown and the verdict says so.
* For MR (CrowdHuman miss rate) lower is better, so the comparison is oriented accordingly.
* The paper's numbers come from :mod:`pgd.tables.paper_values` (COCO / CrowdHuman); on
  SYNTHETIC data they are context, not a target.
* A table row with a diverged run (``pgd.tables.build.failure_reason``: non-finite weights,
  no detections) takes part in no comparison; each claim that would have used it names it.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from pgd.errors import UserError

# `inherit` is a control (teacher-initialised student, no distillation loss), not a competitor
BASE_SETTINGS = ('teacher', 'student', 'inherit')
SWEEP_RE = re.compile(r'^\s*(?P<opt>[A-Za-z_]+)\s*=\s*(?P<val>[-+0-9.eE]+)\s*$')
#: "roughly halves": AP with the top-1% masked is at most this fraction of the unmasked AP.
HALVING_FRACTION = 0.6
MASK_RATIO = 0.01


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--metrics', nargs='*', default=[], help='tagged metrics JSON files')
    p.add_argument('--mask-out', nargs='*', default=[],
                   help='Fig. 3 mask-out JSON files (python -m pgd mask-out)')
    p.add_argument('--out', required=True, help='Markdown report to write')
    p.add_argument('--scale', default=None,
                   help='scale named in the header (default: taken from results/<scale>/ in '
                        'the paths)')


# ----------------------------------------------------------------------------- data model

@dataclass
class Term:
    """One measured quantity: its value per seed."""

    values: Dict[int, float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values.values()) / len(self.values)

    @property
    def std(self) -> Optional[float]:
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values.values()) / (self.n - 1))


@dataclass
class Comparison:
    """``a > b`` is the claimed direction."""

    label: str
    a_name: str
    b_name: str
    a: Term
    b: Term
    paper_a: Optional[float] = None
    paper_b: Optional[float] = None

    @property
    def diff(self) -> float:
        return self.a.mean - self.b.mean

    @property
    def noise(self) -> Optional[float]:
        if self.a.std is None or self.b.std is None:
            return None
        return math.sqrt(self.a.std ** 2 + self.b.std ** 2)

    @property
    def paper_diff(self) -> Optional[float]:
        if self.paper_a is None or self.paper_b is None:
            return None
        return self.paper_a - self.paper_b


@dataclass
class Claim:
    title: str
    source: str
    criterion: str
    comparisons: List[Comparison] = field(default_factory=list)
    missing: str = ''
    notes: List[str] = field(default_factory=list)
    paper_note: str = ''

    @property
    def status(self) -> str:
        """``holds`` / ``does not hold`` / ``not measured``."""
        if not self.comparisons:
            return 'not measured'
        return 'holds' if all(c.diff > 0 for c in self.comparisons) else 'does not hold'

    @property
    def verdict(self) -> str:
        status = self.status
        if status == 'not measured':
            return status
        rel = self.comparisons if status == 'holds' else \
            [c for c in self.comparisons if c.diff <= 0]
        if any(c.noise is None for c in rel):
            return f'{status} (single seed: spread unknown)'
        if status == 'holds':
            if all(c.diff > c.noise for c in rel):
                return 'holds, beyond seed noise'
            return 'holds, within noise'
        if all(abs(c.diff) <= c.noise for c in rel):
            return 'does not hold, within noise'
        return 'does not hold, beyond seed noise'

    @property
    def worst(self) -> Optional[Comparison]:
        return min(self.comparisons, key=lambda c: c.diff) if self.comparisons else None

    @property
    def paper_status(self) -> Optional[str]:
        diffs = [c.paper_diff for c in self.comparisons]
        if not diffs or any(d is None for d in diffs):
            return None
        return 'holds' if all(d > 0 for d in diffs) else 'does not hold'


# ----------------------------------------------------------------------------- lookups

class Runs:
    """Index over ``pgd.tables.build.load_runs`` output."""

    def __init__(self, df):
        from pgd.tables.build import diverged_rows
        self.df = df
        self._index: Dict[tuple, Dict[str, Dict[int, float]]] = {}
        for rec in df.to_dict('records'):
            key = (rec['table'], rec['detector'], rec['setting'])
            self._index.setdefault(key, {}).setdefault(rec['metric'], {})[int(rec['seed'])] = \
                float(rec['value'])
        #: rows with a diverged run (no numbers) and those a claim asked for since reset
        self.diverged = diverged_rows(df)
        self.excluded: Dict[tuple, None] = {}

    def _rows(self):
        return [*self._index, *(k for k in self.diverged if k not in self._index)]

    def detectors(self, table: str) -> List[str]:
        from pgd.analysis.figures import DETECTOR_ORDER, _order
        return _order([d for (t, d, _) in self._rows() if t == table], DETECTOR_ORDER)

    def settings(self, table: str, detector: str) -> List[str]:
        return [s for (t, d, s) in self._rows() if t == table and d == detector]

    def term(self, table: str, detector: str, setting: str,
             weights: Mapping[str, float]) -> Optional[Term]:
        """Per-seed ``sum_m w_m * metric_m`` (seeds having every metric); None if none or if
        the row diverged (then remembered in :attr:`excluded`)."""
        if (table, detector, setting) in self.diverged:
            self.excluded[(table, detector, setting)] = None
            return None
        row = self._index.get((table, detector, setting))
        if not row or any(m not in row for m in weights):
            return None
        seeds = set.intersection(*(set(row[m]) for m in weights))
        if not seeds:
            return None
        return Term({s: sum(w * row[m][s] for m, w in weights.items()) for s in sorted(seeds)})

    def student(self, table: str, detector: str, weights) -> Optional[Term]:
        return self.term(table, detector, 'student', weights) or \
            self.term('table1', detector, 'student', weights)


def paper(table: str, detector: str, setting: str, weights: Mapping[str, float]
          ) -> Optional[float]:
    from pgd.tables.paper_values import paper_value
    total = 0.0
    for metric, w in weights.items():
        try:
            v = paper_value(table, detector, setting, metric)
        except ValueError:
            return None
        if v is None:
            return None
        total += w * v
    return total


def _label(setting: str) -> str:
    from pgd.tables.build import SETTING_LABELS
    return {'pgd': 'PGD', 'pgw': 'Ours (pgw)'}.get(setting, SETTING_LABELS.get(setting, setting))


def _det(detector: str) -> str:
    from pgd.tables.build import DETECTOR_LABELS
    return DETECTOR_LABELS.get(detector, detector)


def compare(runs: Runs, table: str, detector: str, a: str, b: str, metric: str = 'AP',
            lower_is_better: bool = False, label: Optional[str] = None
            ) -> Optional[Comparison]:
    """Comparison "setting a better than setting b" on ``metric``, or None if unmeasured."""
    w = {metric: 1.0}
    ta, tb = runs.term(table, detector, a, w), runs.term(table, detector, b, w)
    if ta is None or tb is None:
        return None
    pa, pb = paper(table, detector, a, w), paper(table, detector, b, w)
    name_a, name_b = f'{_label(a)} {metric}', f'{_label(b)} {metric}'
    text = label or f'{_det(detector)}: {_label(a)} vs {_label(b)} ({metric})'
    if lower_is_better:  # a better <=> b's value - a's value > 0
        return Comparison(text + ', lower is better', name_b, name_a, tb, ta, pb, pa)
    return Comparison(text, name_a, name_b, ta, tb, pa, pb)


# ----------------------------------------------------------------------------- the claims

def _pairwise(runs: Runs, table: str, a: str, b: str, title: str, source: str,
              metric: str = 'AP') -> Claim:
    claim = Claim(title, source, f'{_label(a)} {metric} > {_label(b)} {metric} on every '
                                 f'detector of {source} that has both rows')
    for det in runs.detectors(table):
        c = compare(runs, table, det, a, b, metric)
        if c:
            claim.comparisons.append(c)
    if not claim.comparisons:
        claim.missing = f'no detector of {source} has both the {_label(a)} and {_label(b)} rows'
    return claim


def _best_of(runs: Runs, table: str, ours: str, title: str, source: str,
             exclude: Sequence[str] = BASE_SETTINGS, metric: str = 'AP') -> Claim:
    claim = Claim(title, source, f'{_label(ours)} {metric} > every other measured setting '
                                 f'(except {", ".join(exclude)}) on each detector of {source}')
    for det in runs.detectors(table):
        others = [s for s in runs.settings(table, det) if s not in exclude and s != ours]
        for other in others:
            c = compare(runs, table, det, ours, other, metric)
            if c:
                claim.comparisons.append(c)
    if not claim.comparisons:
        claim.missing = (f'{source} lacks the {_label(ours)} row or any other setting to '
                         f'compare it with')
    return claim


def claim_improves_over_student(runs: Runs) -> Claim:
    claim = Claim('PGD improves over the student on every detector (Table 1)', 'Table 1',
                  'PGD AP > student AP on every detector of Table 1')
    for det in runs.detectors('table1'):
        c = compare(runs, 'table1', det, 'pgd', 'student')
        if c:
            claim.comparisons.append(c)
    if not claim.comparisons:
        claim.missing = 'no detector of Table 1 has both the PGD and student rows'
    return claim


def claim_localisation(runs: Runs) -> Claim:
    claim = Claim('PGD improves AP75 more than AP50 (localisation)', 'Table 1',
                  'on every detector of Table 1: (PGD AP75 - student AP75) - (PGD AP50 - student'
                  ' AP50) > 0, i.e. PGD widens the AP75 - AP50 gap of the student')
    w = {'AP75': 1.0, 'AP50': -1.0}
    for det in runs.detectors('table1'):
        ta = runs.term('table1', det, 'pgd', w)
        tb = runs.student('table1', det, w)
        if ta is None or tb is None:
            continue
        claim.comparisons.append(Comparison(
            f'{_det(det)}: AP75 - AP50 gap, PGD vs student', 'PGD AP75-AP50',
            'student AP75-AP50', ta, tb, paper('table1', det, 'pgd', w),
            paper('table1', det, 'student', w)))
    if not claim.comparisons:
        claim.missing = 'no detector of Table 1 has PGD and student rows with AP50 and AP75'
    return claim


def claim_crowd(runs: Runs) -> Claim:
    claim = Claim('PGD best on crowd MR/AP/JI (Table 3)', 'Table 3',
                  'PGD better than every other measured non-teacher row (student and '
                  'competitors) on MR (lower), AP and JI')
    for det in runs.detectors('table3'):
        for other in runs.settings('table3', det):
            if other in ('teacher', 'pgd'):
                continue
            for metric, lower in (('MR', True), ('AP', False), ('JI', False)):
                c = compare(runs, 'table3', det, 'pgd', other, metric, lower_is_better=lower)
                if c:
                    claim.comparisons.append(c)
    if not claim.comparisons:
        claim.missing = 'Table 3 lacks the PGD row or any row to compare it with'
    else:
        others = sorted({c.label.split(' vs ')[1].split(' (')[0] for c in claim.comparisons})
        claim.notes.append(f'compared with: {", ".join(others)}')
    return claim


def _sweep(runs: Runs, table: str, det: str, option: str) -> Dict[float, str]:
    out = {}
    for s in runs.settings(table, det):
        m = SWEEP_RE.match(s)
        if m and m.group('opt').lower() == option:
            try:
                out[float(m.group('val'))] = s
            except ValueError:
                pass
    return dict(sorted(out.items()))


def claim_best_k(runs: Runs) -> Claim:
    claim = Claim('K = 30 is the best K (Table 6a)', 'Table 6a',
                  'AP(K=30) > AP(K) for every other measured K, on each detector')
    for det in runs.detectors('table6a'):
        sweep = _sweep(runs, 'table6a', det, 'k')
        if 30.0 not in sweep:
            continue
        for k, setting in sweep.items():
            if k != 30.0:
                c = compare(runs, 'table6a', det, sweep[30.0], setting)
                if c:
                    claim.comparisons.append(c)
    if not claim.comparisons:
        claim.missing = 'Table 6a needs the K = 30 row and at least one other K'
    return claim


def claim_alpha_interior(runs: Runs) -> Claim:
    from pgd.analysis.figures import paper_sweep
    claim = Claim('too small/large alpha hurts (Table 6b: the best alpha is interior)',
                  'Table 6b', 'per detector: the best interior alpha (highest mean AP among '
                              'the measured alphas other than the smallest and largest) beats '
                              'both end points; needs >= 3 alphas')
    for det in runs.detectors('table6b'):
        sweep = _sweep(runs, 'table6b', det, 'alpha')
        if len(sweep) < 3:
            if sweep:
                claim.notes.append(f'{_det(det)}: only {len(sweep)} alpha value(s) measured')
            continue
        alphas = list(sweep)
        interior = alphas[1:-1]
        means = {a: runs.term('table6b', det, sweep[a], {'AP': 1.0}) for a in alphas}
        if any(means[a] is None for a in alphas):
            continue
        best = max(interior, key=lambda a: means[a].mean)
        for end in (alphas[0], alphas[-1]):
            c = compare(runs, 'table6b', det, sweep[best], sweep[end])
            if c:
                claim.comparisons.append(c)
    if not claim.comparisons:
        claim.missing = 'Table 6b needs at least 3 alpha values on a detector'
    parts = []
    from pgd.tables.paper_values import load_paper_values
    for det in sorted(set(load_paper_values().query("table == 'table6b'")['detector'])):
        pts = paper_sweep('table6b', det, 'alpha')
        if len(pts) >= 3:
            best_a, best_v = max(pts, key=lambda p: p[1])
            where = 'interior' if pts[0][0] < best_a < pts[-1][0] else 'an end point'
            parts.append(f'{_det(det)}: best alpha {best_a:g} (AP {best_v:.1f}, {where}; ends '
                         f'{pts[0][1]:.1f} / {pts[-1][1]:.1f})')
    claim.paper_note = '; '.join(parts)
    return claim


def claim_reg_worst(runs: Runs) -> Claim:
    claim = Claim('reg-only is the worst branch setting (Table 7)', 'Table 7',
                  'AP(reg) < AP of every other distilled-branch row (neck, cls, cls+reg ...; '
                  'the student row is excluded)')
    for det in runs.detectors('table7'):
        if 'reg' not in runs.settings('table7', det):
            continue
        for other in runs.settings('table7', det):
            if other in ('teacher', 'student', 'reg'):
                continue
            c = compare(runs, 'table7', det, other, 'reg')
            if c:
                claim.comparisons.append(c)
    if not claim.comparisons:
        claim.missing = 'Table 7 needs the reg row and another branch row'
    return claim


def claim_mask_out(docs: List[dict]) -> Claim:
    claim = Claim('teacher top-1% masking roughly halves AP (Fig. 3)', 'Fig. 3',
                  f'per teacher: AP with the top-{100 * MASK_RATIO:g}% quality locations masked '
                  f'<= {HALVING_FRACTION:g} x the unmasked AP ("roughly halves"), i.e. '
                  f'{HALVING_FRACTION:g} x AP(0%) - AP(1%) > 0')
    claim.paper_note = ('Fig. 3 of the paper: masking the top 1% of the teacher\'s predictions '
                        'by quality roughly halves its AP (no numeric values published in '
                        'pgd.tables.paper_values)')
    if not docs:
        claim.missing = 'no mask-out results given (--mask-out)'
        return claim
    from pgd.analysis.figures import mask_out_label
    for doc in docs:
        ratios = [float(r) for r in doc['ratios']]
        aps = dict(zip(ratios, [float(a) for a in doc['AP']]))
        name = mask_out_label(doc)
        if 0.0 not in aps or not any(math.isclose(r, MASK_RATIO) for r in ratios):
            claim.notes.append(f'{name}: ratios {", ".join(f"{r:g}" for r in ratios)} do not '
                               f'include both 0 and {MASK_RATIO:g}')
            continue
        ap0 = aps[0.0]
        ap1 = next(a for r, a in aps.items() if math.isclose(r, MASK_RATIO))
        if ap0 <= 0:
            claim.notes.append(f'{name}: unmasked AP is 0, nothing to halve')
            continue
        claim.comparisons.append(Comparison(
            f'{name}: {HALVING_FRACTION:g} x AP(0%) vs AP(1%)',
            f'{HALVING_FRACTION:g} x AP(0%)', 'AP(1% masked)',
            Term({0: HALVING_FRACTION * ap0}), Term({0: ap1})))
        claim.notes.append(f'{name}: AP {ap0:.2f} -> {ap1:.2f} with the top 1% masked '
                           f'(drop {100 * (1 - ap1 / ap0):.0f}%); single evaluation of one '
                           f'trained teacher, no seed spread')
    if not claim.comparisons:
        claim.missing = 'the mask-out results lack ratio 0 and/or 0.01 (or the unmasked AP is 0)'
    return claim


def _noting_diverged(runs: Runs, build) -> Claim:
    """``build()``, with a note naming the diverged runs it had to leave out."""
    from pgd.tables.build import describe_diverged
    runs.excluded.clear()
    claim = build()
    if runs.excluded:
        text = 'excluded, diverged: ' + '; '.join(
            describe_diverged(r) for key in runs.excluded for r in runs.diverged[key])
        claim.notes.append(text)
        if not claim.comparisons:
            claim.missing = f'{claim.missing} ({text})'
    return claim


def build_claims(runs: Runs, mask_out_docs: List[dict]) -> List[Claim]:
    builders = [
        lambda: _pairwise(runs, 'table1', 'pgd', 'fgd',
                          'PGD beats FGD on every detector (Table 1)', 'Table 1'),
        lambda: _best_of(runs, 'table1', 'pgd', 'PGD beats every competitor on each detector '
                                                '(Table 1 AP)', 'Table 1'),
        lambda: _pairwise(runs, 'table1', 'pgd', 'ld', 'PGD beats LD on GFL', 'Table 1'),
        lambda: claim_improves_over_student(runs),
        lambda: claim_localisation(runs),
        lambda: _pairwise(runs, 'table2', 'pgd', 'fgd', 'PGD > FGD with MobileNetV2 (Table 2)',
                          'Table 2'),
        lambda: claim_crowd(runs),
        lambda: _pairwise(runs, 'table4', 'pgd', 'fgd',
                          'self-distillation: PGD > FGD (Table 4)', 'Table 4'),
        lambda: _pairwise(runs, 'table5', 'pgw', 'box', 'Ours (pgw) > Box (Table 5)',
                          'Table 5'),
        lambda: _best_of(runs, 'table5', 'pgw', 'Ours is best of the Table-5 strategies',
                         'Table 5'),
        lambda: claim_best_k(runs),
        lambda: claim_alpha_interior(runs),
        lambda: _pairwise(runs, 'table7', 'cls+reg', 'neck',
                          'decoupled cls+reg beats neck-only (Table 7)', 'Table 7'),
        lambda: claim_reg_worst(runs),
        lambda: claim_mask_out(mask_out_docs),
    ]
    claims = [_noting_diverged(runs, build) for build in builders]
    # LD is only defined for GFL: say so instead of "no detector has both rows"
    ld = claims[2]
    ld.criterion = 'PGD AP > LD AP on GFL (Table 1)'
    ld.comparisons = [c for c in ld.comparisons if c.label.startswith(_det('gfl') + ':')]
    if not ld.comparisons:
        ld.missing = 'Table 1 has no GFL row pair PGD + LD'
    return claims


# ----------------------------------------------------------------------------- rendering

def _f(x: Optional[float], d: int = 2) -> str:
    return '\u2014' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.{d}f}'


def _s(x: Optional[float], d: int = 2) -> str:
    if x is None:
        return '\u2014'
    r = round(x, d)
    return f'{(0.0 if r == 0 else r):+.{d}f}'


def _term(t: Term) -> str:
    return _f(t.mean) + (f' \u00b1 {_f(t.std)}' if t.std is not None else '')


def _spread(claim: Claim) -> str:
    terms = [t for c in claim.comparisons for t in (c.a, c.b)]
    if not terms:
        return '\u2014'
    ns = sorted({t.n for t in terms})
    n = f'n = {ns[0]}' if len(ns) == 1 else f'n = {ns[0]}-{ns[-1]}'
    stds = [t.std for t in terms if t.std is not None]
    if not stds:
        return f'{n} (no spread)'
    return f'{n}, std \u2264 {max(stds):.2f}'


def _worst_text(c: Comparison) -> str:
    return f'{c.label}: {_f(c.a.mean)} vs {_f(c.b.mean)} ({_s(c.diff)})'


def _paper_text(claim: Claim) -> str:
    if claim.paper_status is not None:
        w = min(claim.comparisons, key=lambda c: c.paper_diff)
        return (f'{claim.paper_status} on the paper\'s numbers; closest: {_f(w.paper_a, 1)} vs '
                f'{_f(w.paper_b, 1)} ({_s(w.paper_diff, 1)})')
    pairs = [c for c in claim.comparisons if c.paper_diff is not None]
    if pairs:
        w = min(pairs, key=lambda c: c.paper_diff)
        return (f'partly in the paper; closest: {_f(w.paper_a, 1)} vs {_f(w.paper_b, 1)} '
                f'({_s(w.paper_diff, 1)})')
    return claim.paper_note or '\u2014'


def _cell(text: str) -> str:
    return text.replace('|', '\\|').replace('\n', ' ')


def render(claims: List[Claim], scale: str, synthetic: bool, n_files: int,
           commits: Sequence[str], mask_out_files: int) -> str:
    counts = {k: sum(c.status == k for c in claims)
              for k in ('holds', 'does not hold', 'not measured')}
    within = sum(c.verdict == 'holds, within noise' for c in claims)
    lines = [f'# Claim check -- scale `{scale}`', '']
    if synthetic:
        lines += ['> **SYNTHETIC DATA.** These runs use procedurally generated images and small '
                  'networks; whether a claim holds here says nothing about COCO/CrowdHuman. The '
                  'paper columns are the published COCO/CrowdHuman numbers.', '']
    lines += [
        f'Inputs: {n_files} metrics file(s), {mask_out_files} mask-out file(s); git commit(s) of '
        f'the runs: {", ".join(c[:12] for c in commits) or "unknown"}.', '',
        'A claim **holds** only if every measured comparison in the claimed direction has a '
        'mean difference > 0 (means over seeds). *Beyond seed noise*: every difference exceeds '
        'sqrt(std_A^2 + std_B^2) (sample std over seeds); *within noise*: at least one does not. '
        'With one seed the spread is unknown. MR: lower is better.', '',
        f'**Summary:** {counts["holds"]} hold ({within} within noise), '
        f'{counts["does not hold"]} do not hold, {counts["not measured"]} not measured '
        f'(of {len(claims)}).', '',
        '| # | Claim | Verdict | Measured (closest comparison) | Paper | Seeds |',
        '|---:|:---|:---|:---|:---|:---|',
    ]
    for i, c in enumerate(claims, 1):
        measured = _worst_text(c.worst) if c.worst else c.missing
        lines.append(f'| {i} | {_cell(c.title)} | **{_cell(c.verdict)}** | {_cell(measured)} | '
                     f'{_cell(_paper_text(c))} | {_cell(_spread(c))} |')
    lines += ['', '## Details', '']
    for i, c in enumerate(claims, 1):
        lines += [f'### {i}. {c.title}', '', f'- Verdict: **{c.verdict}**',
                  f'- Source: {c.source}', f'- Criterion: {c.criterion}']
        if c.missing and not c.comparisons:
            lines.append(f'- Not measured: {c.missing}')
        for note in c.notes:
            lines.append(f'- {note}')
        if c.paper_note:
            lines.append(f'- Paper: {c.paper_note}')
        if c.comparisons:
            lines += ['', '| Comparison | A | B | A (ours) | B (ours) | A - B | seed noise '
                          '| n (A/B) | paper A | paper B | paper A - B |',
                      '|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|']
            for k in c.comparisons:
                lines.append(
                    f'| {_cell(k.label)} | {_cell(k.a_name)} | {_cell(k.b_name)} | '
                    f'{_term(k.a)} | {_term(k.b)} | {_s(k.diff)} | {_f(k.noise)} | '
                    f'{k.a.n}/{k.b.n} | {_f(k.paper_a, 1)} | {_f(k.paper_b, 1)} | '
                    f'{_s(k.paper_diff, 1)} |')
        lines.append('')
    return '\n'.join(lines)


def infer_scale(paths: Sequence[str]) -> str:
    for p in paths:
        parts = Path(str(p)).parts
        for i, part in enumerate(parts[:-1]):
            if part == 'results' and i + 1 < len(parts) - 1:
                return parts[i + 1]
    return 'unknown'


def check_claims(metrics: Sequence[str], mask_out: Sequence[str] = ()) -> tuple:
    """``(claims, df, mask-out docs)`` for the given files."""
    from pgd.analysis.figures import load_mask_out
    from pgd.tables.build import MetricsFileError, load_runs
    try:
        df = load_runs(list(metrics))
    except MetricsFileError as exc:
        raise UserError(str(exc)) from None
    docs = load_mask_out(list(mask_out))
    return build_claims(Runs(df), docs), df, docs


def run(args) -> int:
    from pgd.analysis.figures import mask_out_synthetic
    from pgd.io import atomic_write_text
    if not args.metrics and not args.mask_out:
        raise UserError('give --metrics and/or --mask-out files')
    claims, df, docs = check_claims(args.metrics, args.mask_out)
    scale = args.scale or infer_scale([args.out, *args.metrics, *args.mask_out])
    synthetic = (bool(df['synthetic'].any()) if not df.empty else False) or \
        any(mask_out_synthetic(d) for d in docs)
    commits = sorted(set(df['git_commit'])) if not df.empty else []
    text = render(claims, scale, synthetic, len(args.metrics), commits, len(docs))
    atomic_write_text(args.out, text + '\n')
    for c in claims:
        print(f'[pgd claims] {c.verdict:<45} {c.title}', flush=True)
    return 0
