"""The paper's quantitative claims, each built from the measured runs (:class:`Runs`).

:func:`build_claims` lists them in report order. Sweep claims (Table 6a K, Table 6b alpha) take
the option values from the manifest rows' ``options`` (:func:`pgd.tables.loading.option_sweep`),
never from the setting labels. A table row with a diverged run takes part in no comparison;
each claim that would have used it names it (:func:`_noting_diverged`).
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

from pgd.analysis.claim_model import (
    BASE_SETTINGS,
    HALVING_FRACTION,
    MASK_RATIO,
    Claim,
    Comparison,
    Runs,
    Term,
    _det,
    _label,
    compare,
    paper,
)


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
    """``option value -> setting`` of the rows of ``table`` (options from the manifests)."""
    from pgd.tables.loading import option_sweep
    return option_sweep(runs.df, table, det, option)


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
    from pgd.tables.paper_values import paper_sweep
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
    from pgd.tables.loading import describe_diverged
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

