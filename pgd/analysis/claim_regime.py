"""Premise gates in the claim check: which gate concerns which claim.

``--regime results/<scale>/regime.json`` (``python -m pgd regime``; format in
:mod:`pgd.analysis.regime`: ``{"gates": [{"gate", "subject", "measured", "threshold",
"pass"}], "all_pass": bool}``) makes the report print the gates first and mark every claim
whose table fails a gate **regime invalid** instead of holds / does not hold. The mapping is
deliberately coarse:

* Every gate of ``pgd regime`` is measured on **Table 1's** runs (its teachers' Fig. 3 mask-out,
  its teacher/student AP ratio and gap, the geometry of its detectors, the students' learning
  curves). A failing gate (``"pass": false``) therefore concerns **every table on Table 1's
  dataset** (the datasets of Table 1's metrics files, ``provenance.dataset.name``): Tables 1, 2,
  4, 5, 6a, 6b, 7 and LGD at the mini scale, so the geometry gate covers PGW's Tables 5 / 6a
  too. Tables on another dataset (Table 3, CrowdHuman) are not concerned. When Table 1 has no
  runs, a failing gate concerns every table.
* The Fig. 3 claim is itself the measurement behind the ``fig3_top1pct_drop`` gate, not a
  comparison that rests on the premises, so it is never marked regime invalid.
* A *missing* gate (``"pass": null``: its input was not produced) is printed as missing and
  invalidates nothing.
* A claim that measured nothing stays *not measured*.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set

from pgd.analysis.claim_model import Claim
from pgd.errors import UserError

#: claims never marked regime invalid (the premise measurements themselves)
UNGATED = ('fig3',)


def load_regime(path) -> dict:
    """Read and check a ``regime.json``; :class:`UserError` naming the file if malformed."""
    try:
        doc = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise UserError(f'{path}: cannot read regime JSON ({exc})') from None
    gates = doc.get('gates') if isinstance(doc, dict) else None
    if not isinstance(gates, list) or not all(
            isinstance(g, dict) and {'gate', 'subject', 'threshold', 'pass'} <= set(g)
            for g in gates):
        raise UserError(f'{path}: not a regime file (needs "gates": [{{"gate", "subject", '
                        f'"measured", "threshold", "pass"}}, ...])')
    return {'gates': gates, 'all_pass': bool(doc.get('all_pass', False))}


def table_datasets(df) -> Dict[str, Set[str]]:
    """``table -> {dataset name}`` of the loaded rows (diverged rows included)."""
    out: Dict[str, Set[str]] = {}
    if not df.empty:
        for table, ds in zip(df['table'], df['dataset']):
            if isinstance(ds, str):
                out.setdefault(table, set()).add(ds)
    for r in df.attrs.get('diverged', []):
        if isinstance(r.get('dataset'), str):
            out.setdefault(r['table'], set()).add(r['dataset'])
    return out


def gated_tables(tables: Sequence[str], datasets: Mapping[str, Set[str]]) -> Set[str]:
    """The tables a failing gate concerns (see the module docstring)."""
    base = datasets.get('table1')
    if not base:
        return set(tables)
    return {t for t in tables if datasets.get(t, set()) & base}


def failing(regime: Optional[Mapping]) -> List[dict]:
    return [g for g in (regime or {}).get('gates', []) if g.get('pass') is False]


def apply_regime(claims: List[Claim], regime: Optional[Mapping], df) -> List[Claim]:
    """Set :attr:`Claim.regime_failures` of each claim whose table a failing gate concerns."""
    bad = failing(regime)
    if not bad:
        return claims
    datasets = table_datasets(df)
    concerned = gated_tables(sorted({c.table for c in claims} | set(datasets)), datasets)
    names = [f"{g['gate']} ({g['subject']})" for g in bad]
    for c in claims:
        if c.table in concerned and c.table not in UNGATED:
            c.regime_failures = list(names)
    return claims


def gates_markdown(regime: Mapping) -> str:
    """The gates section printed first (:func:`pgd.analysis.regime.to_markdown`)."""
    from pgd.analysis.regime import to_markdown
    return to_markdown(dict(regime))
