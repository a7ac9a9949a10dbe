"""The claim check's data model: measured terms, directed comparisons, claims and their
verdicts, and the index over the loaded runs (:class:`Runs`).

A claim is a set of directed comparisons "A > B"; it **holds** only if every measured
comparison has ``mean(A) - mean(B) > 0`` (means over seeds) and is **not measured** when no
comparison could be formed. Seed noise of a comparison is ``sqrt(std_A^2 + std_B^2)`` (sample
std over seeds, ddof = 1). A claim whose table fails a premise gate
(:mod:`pgd.analysis.claim_regime`) is **regime invalid** instead of holds / does not hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from pgd.catalog import control_names, detector_label, detector_names, setting_label

# the roles and the controls (`inherit`: teacher-initialised student without distillation
# loss; `zero`: the zero-weight sanity run) are not competitors
BASE_SETTINGS = ('teacher', 'student', *control_names())
#: "roughly halves": AP with the top-1% masked is at most this fraction of the unmasked AP.
HALVING_FRACTION = 0.6
MASK_RATIO = 0.01
REGIME_INVALID = 'regime invalid'
#: the claim check's own names for two settings (shorter than the tables' labels)
CLAIM_LABELS = {'pgd': 'PGD', 'pgw': 'Ours (pgw)'}


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
    #: the failing premise gates that concern this claim's table (``gate subject``)
    regime_failures: List[str] = field(default_factory=list)

    @property
    def table(self) -> str:
        """Table id of :attr:`source` (``Table 6a`` -> ``table6a``, ``Fig. 3`` -> ``fig3``)."""
        return self.source.lower().replace('.', '').replace(' ', '')

    @property
    def measured_status(self) -> str:
        """``holds`` / ``does not hold`` / ``not measured``, whatever the premise gates say."""
        if not self.comparisons:
            return 'not measured'
        return 'holds' if all(c.diff > 0 for c in self.comparisons) else 'does not hold'

    @property
    def status(self) -> str:
        """:attr:`measured_status`, or ``regime invalid`` when a premise gate of this claim's
        table failed (then a measured direction tests nothing of the paper)."""
        status = self.measured_status
        if status != 'not measured' and self.regime_failures:
            return REGIME_INVALID
        return status

    @property
    def measured_verdict(self) -> str:
        status = self.measured_status
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
    def verdict(self) -> str:
        if self.status == REGIME_INVALID:
            return REGIME_INVALID
        return self.measured_verdict

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
    """Index over :func:`pgd.tables.loading.load_runs` output."""

    def __init__(self, df):
        from pgd.tables.loading import diverged_rows
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
        """Detectors of ``table``, in the catalog's order (unknown ones after, sorted)."""
        have = list(dict.fromkeys(d for (t, d, _) in self._rows() if t == table))
        known = detector_names()
        return [d for d in known if d in have] + sorted(d for d in have if d not in known)

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
    return CLAIM_LABELS.get(setting) or setting_label(setting)


def _det(detector: str) -> str:
    return detector_label(detector)


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

