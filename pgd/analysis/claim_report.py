"""The claim check's Markdown report: premise gates first (when a regime file is given),
then the summary table and one section per claim."""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence

from pgd.analysis.claim_model import REGIME_INVALID, Claim, Comparison, Term


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


def render(claims: List[Claim], scale: str, synthetic: bool, n_rows: int,
           commits: Sequence[str], mask_out_files: int, regime: Optional[Mapping] = None,
           n_files: Optional[int] = None) -> str:
    """The report. ``n_rows``: table rows read (``n_files``: their distinct metrics files);
    ``regime``: :func:`pgd.analysis.claim_regime.load_regime` output, printed first."""
    counts = {k: sum(c.status == k for c in claims)
              for k in ('holds', 'does not hold', 'not measured', REGIME_INVALID)}
    within = sum(c.verdict == 'holds, within noise' for c in claims)
    lines = [f'# Claim check -- scale `{scale}`', '']
    if regime is not None:
        from pgd.analysis.claim_regime import gates_markdown
        lines += gates_markdown(regime).rstrip('\n').split('\n') + ['']
    if synthetic:
        lines += ['> **SYNTHETIC DATA.** These runs use procedurally generated images and small '
                  'networks; whether a claim holds here says nothing about COCO/CrowdHuman. The '
                  'paper columns are the published COCO/CrowdHuman numbers.', '']
    files = f' ({n_files} metrics file(s))' if n_files is not None else ''
    invalid = (f', {counts[REGIME_INVALID]} regime invalid' if regime is not None else '')
    lines += [
        f'Inputs: {n_rows} table row(s){files}, {mask_out_files} mask-out file(s); git '
        f'commit(s) of the runs: {", ".join(c[:12] for c in commits) or "unknown"}.', '',
        'A claim **holds** only if every measured comparison in the claimed direction has a '
        'mean difference > 0 (means over seeds). *Beyond seed noise*: every difference exceeds '
        'sqrt(std_A^2 + std_B^2) (sample std over seeds); *within noise*: at least one does not. '
        'With one seed the spread is unknown. MR: lower is better.', '',
        f'**Summary:** {counts["holds"]} hold ({within} within noise), '
        f'{counts["does not hold"]} do not hold, {counts["not measured"]} not measured'
        f'{invalid} (of {len(claims)}).', '',
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
        if c.regime_failures:
            lines.append(f'- Regime invalid: this table fails the premise gate(s) '
                         f'{", ".join(c.regime_failures)}; measured: {c.measured_verdict} '
                         f'(not a test of the paper at this scale)')
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


