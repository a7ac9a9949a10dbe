"""``python -m pgd claims --rows MANIFEST.json ... [--mask-out A.json ...] [--regime R.json]
--out claims.md``.

Checks each quantitative claim of the PGD paper on the measured runs and writes a Markdown
report: per claim whether it **holds**, **does not hold**, was **not measured** in this run or
is **regime invalid** (its table fails a premise gate of ``--regime``), the numbers behind it,
the seed spread, and the paper's own numbers for the same comparison.

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
* A table row with a diverged run (:func:`pgd.tables.loading.failure_reason`: non-finite
  weights, no detections) takes part in no comparison; each claim that would have used it
  names it.
* With ``--regime results/<scale>/regime.json`` the premise gates are printed first and a claim
  whose table fails a gate is *regime invalid* (mapping: :mod:`pgd.analysis.claim_regime`).

Modules: :mod:`~pgd.analysis.claim_model` (terms, comparisons, claims, the run index),
:mod:`~pgd.analysis.claim_defs` (the claims), :mod:`~pgd.analysis.claim_regime` (gates ->
claims), :mod:`~pgd.analysis.claim_report` (the Markdown); this module is the command.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from pgd.analysis.claim_defs import build_claims
from pgd.analysis.claim_model import (  # noqa: F401  (re-exported for callers and tests)
    BASE_SETTINGS,
    HALVING_FRACTION,
    MASK_RATIO,
    REGIME_INVALID,
    Claim,
    Comparison,
    Runs,
    Term,
    compare,
)
from pgd.analysis.claim_regime import apply_regime, load_regime
from pgd.analysis.claim_report import render
from pgd.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--rows', nargs='*', default=[], metavar='MANIFEST',
                   help='row manifests (results/<scale>/manifests/<table>.json)')
    p.add_argument('--mask-out', nargs='*', default=[],
                   help='Fig. 3 mask-out JSON files (python -m pgd mask-out)')
    p.add_argument('--regime', default=None, metavar='FILE',
                   help='premise gates (python -m pgd regime --out): printed first; a claim '
                        'whose table fails a gate is "regime invalid"')
    p.add_argument('--out', required=True, help='Markdown report to write')
    p.add_argument('--scale', default=None,
                   help='scale named in the header (default: taken from results/<scale>/ in '
                        'the paths)')


def infer_scale(paths: Sequence[str]) -> str:
    for p in paths:
        parts = Path(str(p)).parts
        for i, part in enumerate(parts[:-1]):
            if part == 'results' and i + 1 < len(parts) - 1:
                return parts[i + 1]
    return 'unknown'


def check_claims(manifests: Sequence[str], mask_out: Sequence[str] = (),
                 regime: Optional[dict] = None) -> tuple:
    """``(claims, df, mask-out docs)`` for the given row manifests and mask-out files;
    ``regime``: :func:`load_regime` output (claims of failing tables -> regime invalid)."""
    from pgd.analysis.figures import load_mask_out
    from pgd.tables.loading import MetricsFileError, load_runs
    try:
        df = load_runs(list(manifests))
    except MetricsFileError as exc:
        raise UserError(str(exc)) from None
    docs = load_mask_out(list(mask_out))
    claims = apply_regime(build_claims(Runs(df), docs), regime, df)
    return claims, df, docs


def _counts(df) -> tuple:
    """(table rows, distinct metrics files) read, diverged rows included."""
    keys = ['table', 'detector', 'student_backbone', 'setting', 'seed']
    rows = set() if df.empty else set(map(tuple, df[keys].astype(str).values.tolist()))
    paths = set() if df.empty else set(df['path'])
    for r in df.attrs.get('diverged', []):
        rows.add(tuple(str(r[k]) for k in keys))
        paths.add(r['path'])
    return len(rows), len(paths)


def run(args) -> int:
    from pgd.analysis.figures import mask_out_synthetic
    from pgd.io import atomic_write_text
    if not args.rows and not args.mask_out:
        raise UserError('give --rows manifests and/or --mask-out files')
    regime = load_regime(args.regime) if args.regime else None
    claims, df, docs = check_claims(args.rows, args.mask_out, regime)
    scale = args.scale or infer_scale([args.out, *args.rows, *args.mask_out])
    diverged = df.attrs.get('diverged', [])
    synthetic = (bool(df['synthetic'].any()) if not df.empty else False) or \
        any(d.get('synthetic') for d in diverged) or any(mask_out_synthetic(d) for d in docs)
    commits = sorted(set(df['git_commit'])) if not df.empty else []
    n_rows, n_files = _counts(df)
    text = render(claims, scale, synthetic, n_rows, commits, len(docs), regime=regime,
                  n_files=n_files)
    atomic_write_text(args.out, text + '\n')
    for g in (regime or {}).get('gates', []):
        verdict = {True: 'pass', False: 'FAIL', None: 'missing'}[g.get('pass')]
        print(f"[pgd claims] gate {g['gate']} ({g['subject']}): {verdict}", flush=True)
    for c in claims:
        print(f'[pgd claims] {c.verdict:<45} {c.title}', flush=True)
    return 0
