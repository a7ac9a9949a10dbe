"""The numbers published in the PGD paper (ECCV'22, Tables 1-7), as data.

``paper_values.csv`` (shipped inside this package) is a long-format table with columns
``table, detector, student_backbone, setting, metric, value, source, options``:

* ``table``: ``table1`` .. ``table5``, ``table6a``, ``table6b``, ``table7``.
* ``detector``: ``atss, fcos, gfl, ddod, autoassign``.
* ``student_backbone``: the experiment's student backbone (``r50`` or ``mobilenetv2``); teacher
  rows carry the backbone of the student they were paired with (teachers are R-101).
* ``setting``: methods ``teacher, student, defeat, frs, fgfi, fkd, fgd, ld, pgd``; Table 4's
  "S & T" row (teacher = student) is ``student``; Table 5 strategies ``box, boxgauss, centre,
  quality, topkeq, kde, pgw`` (``pgw`` = the paper's "Ours" row); Table 6a ``k=<K>``; Table 6b
  ``alpha=<repr(float)>`` (e.g. ``alpha=0.07``, ``alpha=0.1``); Table 7 ``student, neck, cls,
  reg, cls+reg``.
* ``metric``: ``AP, AP50, AP75, APS, APM, APL`` (COCO, percent) or ``MR, AP, JI`` (Table 3,
  CrowdHuman, percent).
* ``value``: the absolute value printed in the paper. The paper's bracketed deltas are never
  stored; they are recomputed from the student row by :mod:`pgd.tables.build`.
* ``source``: the paper table and row the value was transcribed from.
* ``options``: the row's method options as JSON, as a row manifest gives them (Table 5
  ``{"fg_strategy": "box"}``, Table 6a ``{"k": 30}``, Table 6b ``{"alpha": 0.07}``, Table 7
  ``{"branches": ["cls", "reg"]}``), empty for the other rows; loaded as dicts. The sweeps
  (:func:`paper_sweep`) read their x values here, never from the setting label.
"""
from __future__ import annotations

import functools
import json
from importlib import resources
from typing import List, Optional, Tuple

import pandas as pd

COLUMNS = ["table", "detector", "student_backbone", "setting", "metric", "value", "source",
           "options"]
_CSV_NAME = "paper_values.csv"


@functools.lru_cache(maxsize=1)
def _load_cached() -> pd.DataFrame:
    with resources.files(__package__).joinpath(_CSV_NAME).open("r", encoding="utf-8") as fh:
        df = pd.read_csv(fh, dtype={c: str for c in COLUMNS if c != "value"})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{_CSV_NAME}: missing columns {missing}")
    df["value"] = df["value"].astype(float)
    df["options"] = [json.loads(o) if isinstance(o, str) and o else {} for o in df["options"]]
    key = ["table", "detector", "student_backbone", "setting", "metric"]
    dup = df[df.duplicated(key, keep=False)]
    if len(dup):
        raise ValueError(f"{_CSV_NAME}: duplicated entries:\n{dup[key]}")
    return df[COLUMNS]


def load_paper_values() -> pd.DataFrame:
    """Return the published numbers as a long DataFrame (a fresh copy, paper row order)."""
    return _load_cached().copy(deep=True)


def paper_sweep(table: str, detector: str, option: str, metric: str = "AP"
                ) -> List[Tuple[float, float]]:
    """``[(option value, published value)]`` of the rows of ``table`` whose options set a
    numeric ``option`` (Table 6a ``k``, Table 6b ``alpha``), sorted by the option value."""
    df = _load_cached()
    sub = df[(df["table"] == table) & (df["detector"] == detector) & (df["metric"] == metric)]
    out = []
    for options, value in zip(sub["options"], sub["value"]):
        v = options.get(option)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((float(v), float(value)))
    return sorted(out)


def paper_value(
    table: str,
    detector: str,
    setting: str,
    metric: str,
    student_backbone: Optional[str] = None,
) -> Optional[float]:
    """Published value for one cell, or ``None`` when the paper has no such cell.

    ``student_backbone=None`` matches any backbone; an ambiguous match raises ``ValueError``.
    """
    df = _load_cached()
    m = (
        (df["table"] == table)
        & (df["detector"] == detector)
        & (df["setting"] == setting)
        & (df["metric"] == metric)
    )
    if student_backbone is not None:
        m &= df["student_backbone"] == student_backbone
    hit = df.loc[m, "value"]
    if len(hit) == 0:
        return None
    if len(hit) > 1:
        raise ValueError(
            f"ambiguous paper value for {table}/{detector}/{setting}/{metric}: "
            "pass student_backbone"
        )
    return float(hit.iloc[0])
