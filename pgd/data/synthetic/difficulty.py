"""Scene kinds, their class lists and the difficulty knobs of the SYNTHETIC generator.

Everything a caller chooses before an image is drawn, with the validation of
``--difficulty key=value`` overrides; separate from the drawing code so that listing the
classes or checking a configuration does not depend on how images are drawn.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Tuple, Union

SHAPES_CLASSES: Tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross",
    "ring", "hexagon", "arrow", "crescent", "ellipse",
)
CROWD_CLASSES: Tuple[str, ...] = ("person",)
KINDS = ("shapes", "crowd")


@dataclass(frozen=True)
class ShapesDifficulty:
    """Knobs for the SYNTHETIC ``shapes`` scenes (sizes are fractions of the image side)."""

    min_objects: int = 1
    max_objects: int = 20
    min_size: float = 0.035        # sqrt(box area) / image side, smallest object (~9 px @256)
    max_size: float = 0.55         # largest object (~140 px @256)
    noise: float = 10.0            # max std of additive pixel noise (0-255 scale)
    bg_lines: int = 14             # random background lines
    distractors: int = 7           # non-class clutter blobs/strokes (a third drawn on top)
    occlusion_limit: float = 0.7   # drop objects whose hidden fraction exceeds this
    color_jitter: float = 0.2      # global per-channel gain/bias jitter
    texture_prob: float = 0.7      # probability an object/blob gets a non-solid fill
    clutter_color_match: float = 0.5  # prob. a distractor copies an object's colour
    blur_prob: float = 0.25        # probability of a mild global Gaussian blur


@dataclass(frozen=True)
class CrowdDifficulty:
    """Knobs for the SYNTHETIC ``crowd`` scenes (sizes are fractions of the image side)."""

    min_persons: int = 5
    max_persons: int = 40
    min_height: float = 0.08       # smallest figure height / image side
    max_height: float = 0.95
    groups: int = 3                # max number of clusters people gather in
    spread: float = 0.12           # cluster std (x) / image side; smaller = more overlap
    min_visibility: float = 0.1    # skip instances less visible than this
    noise: float = 8.0
    bg_lines: int = 10
    distractors: int = 4           # poles/blobs; a third drawn in front of people
    color_jitter: float = 0.2
    texture_prob: float = 0.5
    blur_prob: float = 0.2


Difficulty = Union[ShapesDifficulty, CrowdDifficulty]
DIFFICULTY_TYPES = {"shapes": ShapesDifficulty, "crowd": CrowdDifficulty}


def classes_for(kind: str) -> Tuple[str, ...]:
    """Class names of a synthetic kind, in category-id order (id = index + 1)."""
    _check_kind(kind)
    return SHAPES_CLASSES if kind == "shapes" else CROWD_CLASSES


def make_difficulty(kind: str, **overrides) -> Difficulty:
    """Default difficulty of ``kind`` with ``overrides`` applied and validated.

    Values may be strings (from ``--difficulty key=value``); they are cast to the type of the
    field's default. Unknown keys and out-of-range values raise ``ValueError``.
    """
    _check_kind(kind)
    cls = DIFFICULTY_TYPES[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown difficulty knob {key!r} for kind {kind!r}; "
                             f"known: {', '.join(sorted(fields))}")
        values[key] = _cast(key, raw, type(fields[key].default))
    diff = cls(**values)
    _validate(diff)
    return diff


def parse_difficulty(items) -> Dict[str, str]:
    """Parse ``['k=v', ...]`` into a dict (values stay strings; see :func:`make_difficulty`)."""
    out: Dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"difficulty override {item!r} is not of the form key=value")
        out[key.strip()] = value.strip()
    return out



# --------------------------------------------------------------------------- validation
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _cast(key: str, raw, typ):
    if isinstance(raw, typ) and not (typ is int and isinstance(raw, bool)):
        return raw
    try:
        return typ(float(raw)) if typ is int and float(raw).is_integer() else typ(raw)
    except (TypeError, ValueError):
        raise ValueError(f"difficulty knob {key!r} expects {typ.__name__}, got {raw!r}") from None


def _validate(d: Difficulty) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(f"invalid difficulty: {msg}")

    for f in dataclasses.fields(d):
        need(getattr(d, f.name) >= 0, f"{f.name} must be >= 0")
    for name in ("texture_prob", "blur_prob", "color_jitter"):
        need(getattr(d, name) <= 1, f"{name} must be in [0, 1]")
    if isinstance(d, ShapesDifficulty):
        need(1 <= d.min_objects <= d.max_objects, "need 1 <= min_objects <= max_objects")
        need(0 < d.min_size < d.max_size <= 0.9, "need 0 < min_size < max_size <= 0.9")
        need(d.occlusion_limit < 1, "occlusion_limit must be < 1")
        need(d.clutter_color_match <= 1, "clutter_color_match must be in [0, 1]")
    else:
        need(1 <= d.min_persons <= d.max_persons, "need 1 <= min_persons <= max_persons")
        need(0 < d.min_height < d.max_height <= 1.5, "need 0 < min_height < max_height <= 1.5")
        need(d.groups >= 1, "groups must be >= 1")
        need(d.min_visibility < 1, "min_visibility must be < 1")
