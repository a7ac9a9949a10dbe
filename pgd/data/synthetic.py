"""SYNTHETIC detection images: the generator core behind ``python -m pgd make-data``.

Nothing produced here is real data. Two kinds of procedurally drawn scenes exist so the
distillation pipeline can be exercised end to end on a CPU without downloading COCO/CrowdHuman:

* ``shapes`` -- 10 classes of geometric shapes (:data:`SHAPES_CLASSES`) with random colours
  (independent of class), textured fills, rotation and aspect jitter, drawn over cluttered
  textured backgrounds together with non-class distractor blobs/lines. Later shapes occlude
  earlier ones; a shape keeps the box of its *full* extent but is dropped when more than
  ``occlusion_limit`` of it is hidden. Sizes are log-uniform so COCO's small/medium/large area
  buckets are all populated at 256 px.
* ``crowd`` -- a CrowdHuman-like single-class (``person``) variant: 5-40 stick-figure
  pedestrians (head, torso, arms, legs) in clustered groups with perspective scaling, drawn
  back to front. Every instance stores the full box (``fbox``, also where occluded or outside
  the image), the visible box (``vbox``, from a per-instance visibility mask) and the head box
  (``hbox``); instances less than ``min_visibility`` visible are skipped.

Every image is a pure function of ``(kind, seed, split, index, image_size, difficulty)``: a
fresh ``numpy`` RNG is derived from those integers, so images can be regenerated one at a time
and generation is parallel-safe. Arrays are ``uint8`` HxWx3 in cv2's BGR order (what
``cv2.imread`` returns for the written files). Drawing is done with cv2 primitives and numpy
array operations on small crops -- there are no per-pixel Python loops.

Boxes are integer ``[x, y, w, h]`` in pixels with the COCO convention that a box covering
pixel columns ``x .. x+w-1`` has width ``w``.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

GENERATOR_VERSION = "1.0.0"

SHAPES_CLASSES: Tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross",
    "ring", "hexagon", "arrow", "crescent", "ellipse",
)
CROWD_CLASSES: Tuple[str, ...] = ("person",)
KINDS = ("shapes", "crowd")
SPLITS = ("train", "val")
_KIND_IDS = {"shapes": 1, "crowd": 2}
_SPLIT_IDS = {"train": 1, "val": 2}

# Fixed seed for the per-process pixel-noise bank: the bank is a constant of the generator
# (independent of the user seed), so images stay a pure function of their own RNG.
_NOISE_BANK_SEED = 20220712


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


def image_rng(kind: str, seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of one image: derived from (kind, seed, split, index) only."""
    _check_kind(kind)
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if int(seed) < 0 or int(index) < 0:
        raise ValueError("seed and index must be non-negative integers")
    return np.random.default_rng([int(seed), _KIND_IDS[kind], _SPLIT_IDS[split], int(index)])


def generate_image(kind: str, seed: int, split: str, index: int, image_size: int = 256,
                   difficulty: Optional[Difficulty] = None) -> Tuple[np.ndarray, List[dict]]:
    """Render one SYNTHETIC image and its objects.

    Returns ``(image, objects)``: ``image`` is uint8 ``(S, S, 3)`` BGR; each object is a dict
    with ``category_id`` (1-based) and integer ``bbox`` ``[x, y, w, h]`` inside the image; crowd
    objects also carry ``fbox`` (full, may leave the image), ``vbox`` (visible), ``hbox``
    (head) and ``visibility``.
    """
    if difficulty is None:
        difficulty = make_difficulty(kind)
    if not isinstance(difficulty, DIFFICULTY_TYPES[kind]):
        raise ValueError(f"difficulty for kind {kind!r} must be {DIFFICULTY_TYPES[kind].__name__}")
    if int(image_size) < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    rng = image_rng(kind, seed, split, index)
    render = _render_shapes if kind == "shapes" else _render_crowd
    return render(rng, int(image_size), difficulty)


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


# --------------------------------------------------------------------------- shared drawing
@functools.lru_cache(maxsize=4)
def _grid_pow2(size: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    # Gaussian noise is the slowest thing to draw per image; a constant bank sampled at a random
    # offset per image is ~20x cheaper and indistinguishable for a detector.
    rng = np.random.default_rng(_NOISE_BANK_SEED)
    return rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _near(rng: np.random.Generator, color: np.ndarray, jitter: float = 25.0) -> np.ndarray:
    return np.clip(color + rng.normal(0.0, jitter, 3), 0, 255).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, color: np.ndarray,
             texture_prob: float) -> np.ndarray:
    """A (h, w, 3) uint8 fill: solid, stripes/checker (from the pattern bank), blotches or a
    gradient. Patterns are uint8 alpha maps coloured through a 256-entry LUT (cheap in cv2)."""
    if rng.random() >= texture_prob:
        tex = np.empty((h, w, 3), np.uint8)
        tex[:] = color.astype(np.uint8)
        return tex
    other = _near(rng, color, 70.0) if rng.random() < 0.5 else _color(rng)
    style = rng.integers(0, 3)
    if style == 0:  # stripes / checker at a random phase
        bank = _pattern_bank(max(h, w))
        k = int(rng.integers(len(bank)))
        oy, ox = (int(rng.integers(0, bank.shape[1] - n + 1)) for n in (h, w))
        alpha = bank[k, oy:oy + h, ox:ox + w]
    elif style == 1:  # smooth blotches
        alpha = cv2.resize(rng.integers(0, 256, (4, 4), dtype=np.uint8), (w, h),
                           interpolation=cv2.INTER_LINEAR)
    else:  # bilinear gradient between random corner weights
        alpha = cv2.resize(rng.integers(0, 256, (2, 2), dtype=np.uint8), (w, h),
                           interpolation=cv2.INTER_LINEAR)
    lut = (color + _RAMP * (other - color)).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(cv2.cvtColor(np.ascontiguousarray(alpha), cv2.COLOR_GRAY2BGR), lut)


_RAMP = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]


def _pattern_bank(size: int) -> np.ndarray:
    """Binary stripe/checker alpha maps (K, N, N) uint8 with N >= size, built once."""
    return _pattern_bank_pow2(1 << max(9, (int(size) - 1).bit_length()))


@functools.lru_cache(maxsize=2)
def _pattern_bank_pow2(size: int) -> np.ndarray:
    # Precomputed so per-object textures cost a slice + LUT instead of trig on every pixel.
    xs, ys = _grid_pow2(size)
    pats = []
    for angle in np.linspace(0, np.pi, 12, endpoint=False):
        for period in (4.0, 8.0):
            t = (xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))) / period
            pats.append(((t - np.floor(t)) < 0.5).astype(np.uint8) * 255)
    for p in (3, 5, 8):
        pats.append((((xs // p) + (ys // p)) % 2).astype(np.uint8) * 255)
    return np.stack(pats)


def _background(rng: np.random.Generator, size: int, n_lines: int,
                palette: List[np.ndarray]) -> np.ndarray:
    """Cluttered textured background: smooth colour field + blotches + random lines."""
    # Composed at 64 px and upsampled once: one full-size resize instead of two.
    low = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    bg = cv2.resize(low, (64, 64), interpolation=cv2.INTER_CUBIC)
    mid = rng.normal(0, 28, (16, 16, 3)).astype(np.float32)
    bg += cv2.resize(mid, (64, 64), interpolation=cv2.INTER_LINEAR)
    bg = np.clip(bg, 0, 255).astype(np.uint8)
    img = cv2.resize(bg, (size, size), interpolation=cv2.INTER_LINEAR)
    for _ in range(n_lines):
        # Lines partly reuse object colours so colour alone cannot separate objects from clutter.
        c = _near(rng, palette[rng.integers(len(palette))]) if palette and rng.random() < 0.5 \
            else _color(rng)
        p1 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, 2))
        p2 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, 2))
        cv2.line(img, p1, p2, tuple(float(v) for v in c), int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def _blob_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """An amorphous non-class blob: thresholded smooth noise (no straight edges or symmetry)."""
    low = rng.random((5, 5)).astype(np.float32)
    low[[0, -1], :] = 0  # keep the blob off the crop border so it looks closed
    low[:, [0, -1]] = 0
    up = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    return (up > rng.uniform(0.45, 0.6)).astype(np.uint8)


def _paste(img: np.ndarray, owner: Optional[np.ndarray], owner_id: int, mask: np.ndarray,
           tex: np.ndarray, x0: int, y0: int) -> None:
    """Paint ``tex`` where ``mask`` is set at (x0, y0), clipped to the image; mark ``owner``."""
    size_h, size_w = img.shape[:2]
    h, w = mask.shape
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + w, size_w), min(y0 + h, size_h)
    if ax1 <= ax0 or ay1 <= ay0:
        return
    m = mask[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    # cv2.copyTo writes in place into the ROI view and is ~10x faster than boolean indexing.
    cv2.copyTo(tex[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0], m, img[ay0:ay1, ax0:ax1])
    if owner is not None:
        cv2.copyTo(np.full(m.shape, owner_id, np.int16), m, owner[ay0:ay1, ax0:ax1])


def _distractors(rng: np.random.Generator, img: np.ndarray, owner: Optional[np.ndarray],
                 count: int, palette: List[np.ndarray], match_prob: float,
                 texture_prob: float, poles: bool = False) -> None:
    """Non-class clutter: blobs, thick strokes (and vertical poles for crowd scenes)."""
    size = img.shape[0]
    for _ in range(count):
        c = _near(rng, palette[rng.integers(len(palette))]) \
            if palette and rng.random() < match_prob else _color(rng)
        style = rng.random()
        if style < 0.55:
            bs = int(rng.integers(max(size // 25, 6), max(size // 3, 8)))
            mask = _blob_mask(rng, bs)
            x0, y0 = (int(v) for v in rng.integers(-bs // 3, size - bs // 2, 2))
        elif poles and style < 0.8:
            pw = int(rng.integers(2, max(size // 20, 3)))
            mask = np.ones((size, pw), np.uint8)
            x0, y0 = int(rng.integers(0, size - pw)), int(rng.integers(-size // 2, size // 2))
        else:
            bs = int(rng.integers(max(size // 10, 8), max(size // 2, 10)))
            mask = np.zeros((bs, bs), np.uint8)
            pts = rng.integers(0, bs, (int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.polylines(mask, [pts], False, 1, int(rng.integers(2, 6)))
            x0, y0 = (int(v) for v in rng.integers(-bs // 3, size - bs // 2, 2))
        tex = _texture(rng, mask.shape[0], mask.shape[1], c, texture_prob)
        _paste(img, owner, -1, mask, tex, x0, y0)


def _finish(rng: np.random.Generator, img: np.ndarray, noise: float, color_jitter: float,
            blur_prob: float) -> np.ndarray:
    """Global photometric nuisance: colour cast, brightness, sensor noise, mild blur."""
    size = img.shape[0]
    gain = 1.0 + rng.uniform(-color_jitter, color_jitter, 3)
    bias = rng.uniform(-color_jitter, color_jitter) * 64.0
    oy, ox = (int(v) for v in rng.integers(0, size, 2))
    sigma = float(noise * rng.uniform(0.3, 1.0))
    # One cv2 pass each (saturating uint8 arithmetic) instead of a float32 round trip.
    affine = np.zeros((3, 4), np.float32)
    affine[[0, 1, 2], [0, 1, 2]] = gain
    affine[:, 3] = bias
    out = cv2.transform(img, affine)
    out = cv2.addWeighted(out, 1.0, _noise_bank(size)[oy:oy + size, ox:ox + size], sigma, 0.0,
                          dtype=cv2.CV_8U)
    if rng.random() < blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 1.1)))
    return out


def _tight_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(x, y, w, h) of the non-zero pixels of a 2-D uint8/bool ``mask``, or None if empty."""
    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    x, y, w, h = cv2.boundingRect(mask)  # treats non-zero pixels as points; C speed
    return (x, y, w, h) if w > 0 else None


# --------------------------------------------------------------------------- shapes
def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(t), np.sin(t)], 1)


_DISC = _regular(40, 0.0)
_STAR = _regular(10) * np.where(np.arange(10) % 2, 0.42, 1.0)[:, None]
_CROSS = np.array([[-1, -.33], [-.33, -.33], [-.33, -1], [.33, -1], [.33, -.33], [1, -.33],
                   [1, .33], [.33, .33], [.33, 1], [-.33, 1], [-.33, .33], [-1, .33]])
_ARROW = np.array([[-1, -.22], [.2, -.22], [.2, -.6], [1, 0], [.2, .6], [.2, .22], [-1, .22]])
_SQUARE = np.array([[-.8, -.8], [.8, -.8], [.8, .8], [-.8, .8]])
# Per class: unit outline (radius ~1), aspect range (y scale), and whether it has a hole.
_SHAPE_SPECS = {
    "circle": (_DISC, (0.9, 1.1), None),
    "square": (_SQUARE, (0.85, 1.15), None),
    "triangle": (_regular(3), (0.8, 1.25), None),
    "star": (_STAR, (0.85, 1.15), None),
    "cross": (_CROSS, (0.8, 1.2), None),
    "ring": (_DISC, (0.85, 1.15), "ring"),
    "hexagon": (_regular(6), (0.85, 1.15), None),
    "arrow": (_ARROW, (0.8, 1.2), None),
    "crescent": (_DISC, (1.0, 1.0), "crescent"),
    "ellipse": (_DISC, (0.35, 0.6), None),
}
_SHAPE_TABLE = [_SHAPE_SPECS[name] for name in SHAPES_CLASSES]


def _shape_mask(cls: int, side: float, u: List[float]) -> np.ndarray:
    """Tight uint8 mask of a rotated, aspect-jittered shape whose box is about ``side`` px.

    ``u`` holds 3 uniforms in [0, 1) (batch-sampled per image): aspect, angle, hole size.
    """
    outline, (a_lo, a_hi), hole = _SHAPE_TABLE[cls]
    aspect = a_lo + (a_hi - a_lo) * u[0]
    angle = 2 * np.pi * u[1]
    c, s_ = np.cos(angle), np.sin(angle)
    # scale (x, y*aspect) then rotate, as one 2x2 matrix; area stays ~ side^2 for any aspect
    k = side / 2.0 / np.sqrt(aspect)
    m = np.array([[c * k, -s_ * k * aspect], [s_ * k, c * k * aspect]])
    outer = outline @ m.T
    lo, hi = outer.min(0), outer.max(0)
    w, h = int(hi[0] - lo[0]) + 3, int(hi[1] - lo[1]) + 3
    mask = np.zeros((h, w), np.uint8)
    # 4 fractional bits: sub-pixel vertices keep tiny shapes recognisable.
    cv2.fillPoly(mask, [((outer - lo + 1) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    if hole == "ring":
        inner = outer * (0.45 + 0.2 * u[2])
        cv2.fillPoly(mask, [((inner - lo + 1) * 16).astype(np.int32)], 0, cv2.LINE_8, 4)
    elif hole == "crescent":  # disc minus an offset, slightly smaller disc
        bite = (_DISC * (0.75 + 0.15 * u[2]) + [0.35 + 0.2 * u[2], 0.0]) @ m.T
        cv2.fillPoly(mask, [((bite - lo + 1) * 16).astype(np.int32)], 0, cv2.LINE_8, 4)
    box = _tight_box(mask)
    x, y, bw, bh = box if box is not None else (0, 0, w, h)
    return mask[y:y + bh, x:x + bw]


def _fit_inside(mask: np.ndarray, size: int) -> np.ndarray:
    """Shrink ``mask`` (keeping its aspect) if an elongated shape is longer than the image."""
    h, w = mask.shape
    scale = min(1.0, (size - 2) / max(h, w))
    if scale >= 1.0:
        return mask
    new_wh = (max(1, int(w * scale)), max(1, int(h * scale)))
    return cv2.resize(mask, new_wh, interpolation=cv2.INTER_NEAREST)


def _render_shapes(rng: np.random.Generator, size: int,
                   d: ShapesDifficulty) -> Tuple[np.ndarray, List[dict]]:
    n = int(rng.integers(d.min_objects, d.max_objects + 1))
    classes = rng.integers(0, len(SHAPES_CLASSES), n)
    # Log-uniform sizes populate all COCO area buckets; larger objects tend to be drawn first
    # (scene depth) but with noise so small ones are sometimes occluded too.
    sides = np.exp(rng.uniform(np.log(d.min_size), np.log(d.max_size), n)) * size
    order = np.argsort(-(np.log(sides) + rng.normal(0, 0.6, n)), kind="stable")
    colors = list(rng.integers(0, 256, (n, 3)).astype(np.float32))
    img = _background(rng, size, d.bg_lines, colors)
    pre = d.distractors - d.distractors // 3
    _distractors(rng, img, None, pre, colors, d.clutter_color_match, d.texture_prob)

    owner = np.full((size, size), -1, np.int16)
    placed = []  # (class, x0, y0, w, h, full pixel count)
    shape_u = rng.random((n, 3)).tolist()
    for k, i in enumerate(order):
        mask = _fit_inside(_shape_mask(int(classes[i]), min(sides[i], size - 4), shape_u[i]),
                           size)
        h, w = mask.shape
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        tex = _texture(rng, h, w, colors[i], d.texture_prob)
        _paste(img, owner, k, mask, tex, x0, y0)
        placed.append((int(classes[i]), x0, y0, w, h, int(mask.sum())))
    _distractors(rng, img, owner, d.distractors // 3, colors, d.clutter_color_match,
                 d.texture_prob)

    visible = np.bincount((owner + 1).ravel(), minlength=len(placed) + 1)[1:]
    frac = visible / np.maximum([p[5] for p in placed], 1)
    keep = [k for k in range(len(placed)) if 1.0 - frac[k] <= d.occlusion_limit]
    if not keep:  # every image must have >= 1 object: keep the most visible one
        keep = [int(np.argmax(frac))]
    objects = []
    for k in keep:
        cls, x0, y0, w, h, _ = placed[k]
        objects.append({"category_id": cls + 1, "bbox": [x0, y0, w, h],
                        "visibility": round(float(frac[k]), 4)})
    return _finish(rng, img, d.noise, d.color_jitter, d.blur_prob), objects


# --------------------------------------------------------------------------- crowd
_SKIN = np.array([[60, 80, 120], [80, 110, 160], [110, 150, 200], [140, 180, 225],
                  [50, 60, 90]], np.float32)  # BGR skin tones
_HEAD, _TORSO, _LEGS, _ARMS = 1, 2, 3, 4
_PART_IDS = {p: p for p in (_HEAD, _TORSO, _LEGS, _ARMS)}


def _person_parts(height: float, u: List[float]):
    """cv2 primitives of one figure in local coordinates, its canvas size and head box.

    ``u`` holds 9 uniforms in [0, 1) (sampled in one batch for all figures) that set the body
    width, lean, head size, stride and arm poses. Figures are drawn as primitives straight into
    the image: cv2 drawing is far cheaper than masked copies of big crops.
    """
    H = max(float(height), 8.0)
    W = H * (0.3 + 0.12 * u[0])
    w, h = int(np.ceil(W * 1.3)) + 2, int(np.ceil(H)) + 1
    cx = w / 2.0 + (u[1] - 0.5) * 0.1 * W
    r = max(int(H * (0.085 + 0.025 * u[2]) + 0.5), 1)
    hip, sh = H * 0.56, H * 0.2 + r
    stride = W * (0.05 + 0.3 * u[3])
    leg, arm = max(int(W * 0.22 + 0.5), 1), max(int(W * 0.14 + 0.5), 1)
    prims = []
    for s in (-1, 1):  # legs: thick lines hip -> foot with a random stride
        prims.append((_LEGS, "line", ((int(cx + s * W * 0.15 + 0.5), int(hip)),
                                      (int(cx + s * stride + 0.5), h - 1 - leg // 2), leg)))
    for s, us, uy in ((-1, u[4], u[6]), (1, u[5], u[7])):  # arms at a random angle
        prims.append((_ARMS, "line", ((int(cx + s * W * 0.32 + 0.5), int(sh + arm)),
                                      (int(cx + s * W * (0.35 + 0.27 * us) + 0.5),
                                       int(H * (0.45 + 0.15 * uy))), arm)))
    prims.append((_TORSO, "ellipse", ((int(cx + 0.5), int((sh + hip) / 2 + 0.5)),
                                      (max(int(W * 0.4), 1),
                                       max(int((hip - sh) / 2 + r * 0.4), 1)))))
    head = (int(cx + (u[8] - 0.5) * 0.1 * W + 0.5), r + 1)
    prims.append((_HEAD, "circle", (head, r)))
    hbox = (head[0] - r, head[1] - r, 2 * r + 1, 2 * r + 1)
    return prims, (w, h), hbox


def _draw_parts(target: np.ndarray, prims, dx: int, dy: int, colors) -> None:
    """Draw ``prims`` offset by (dx, dy); ``colors[part]`` is the value written for a part."""
    for part, kind, a in prims:
        c = colors[part]
        if kind == "line":
            (x1, y1), (x2, y2), t = a
            cv2.line(target, (x1 + dx, y1 + dy), (x2 + dx, y2 + dy), c, t)
        elif kind == "ellipse":
            (x, y), axes = a
            cv2.ellipse(target, (x + dx, y + dy), axes, 0, 0, 360, c, -1)
        else:
            (x, y), r = a
            cv2.circle(target, (x + dx, y + dy), r, c, -1)


def _render_crowd(rng: np.random.Generator, size: int,
                  d: CrowdDifficulty) -> Tuple[np.ndarray, List[dict]]:
    n = int(rng.integers(d.min_persons, d.max_persons + 1))
    horizon = rng.uniform(0.1, 0.4) * size
    centres = rng.uniform(0.15, 0.85, int(rng.integers(1, d.groups + 1))) * size
    xs = centres[rng.integers(0, len(centres), n)] + rng.normal(0, d.spread * size, n)
    feet = rng.uniform(horizon + d.min_height * size, size * 1.1, n)
    # Perspective: figures further down (closer) are taller and drawn later (in front).
    heights = np.clip((feet - horizon) * rng.uniform(0.6, 1.1, n),
                      d.min_height * size, d.max_height * size)
    order = np.argsort(feet, kind="stable")
    # Colours are drawn in batches: per-instance rng calls dominate the cost of small figures.
    palette = list(rng.integers(0, 256, (n, 3)).astype(np.float32))
    skins = np.clip(_SKIN[rng.integers(0, len(_SKIN), n)] + rng.normal(0, 15, (n, 3)), 0, 255)
    trousers = rng.integers(0, 256, (n, 3)) * rng.uniform(0.3, 0.8, (n, 1))  # usually darker
    bare_arms = rng.random(n) < 0.3
    patterned = rng.random(n) < d.texture_prob
    shape_u = rng.random((n, 9)).tolist()
    img = _background(rng, size, d.bg_lines, palette)
    pre = d.distractors - d.distractors // 3
    _distractors(rng, img, None, pre, palette, 0.5, d.texture_prob, poles=True)

    owner = np.full((size, size), -1, np.int16)
    placed = []  # (fbox, hbox, full pixel count)
    for k, i in enumerate(order):
        prims, (w, h), (hx, hy, hw, hh) = _person_parts(heights[i], shape_u[i])
        lab = np.zeros((h, w), np.uint8)
        _draw_parts(lab, prims, 0, 0, _PART_IDS)
        x0 = int(round(xs[i] - w / 2))
        y0 = int(round(feet[i] - h))
        torso = tuple(palette[i].tolist())
        skin = tuple(skins[i].tolist())
        colors = {_HEAD: skin, _TORSO: torso, _LEGS: tuple(trousers[i].tolist()),
                  _ARMS: skin if bare_arms[i] else torso}
        _draw_parts(img, prims, x0, y0, colors)
        _paste(owner, None, 0, lab, np.full(lab.shape, k, np.int16), x0, y0)
        if patterned[i]:  # patterned clothing, textured over the torso's box only
            (ex, ey), (ax, ay) = next(a for part, _, a in prims if part == _TORSO)
            tx0, ty0 = max(ex - ax, 0), max(ey - ay, 0)
            torso_mask = (lab[ty0:ey + ay + 1, tx0:ex + ax + 1] == _TORSO).view(np.uint8)
            body = _texture(rng, torso_mask.shape[0], torso_mask.shape[1], palette[i], 1.0)
            _paste(img, None, 0, torso_mask, body, x0 + tx0, y0 + ty0)
        fx, fy, fw, fh = _tight_box(lab)
        placed.append(((x0 + fx, y0 + fy, fw, fh), (x0 + hx, y0 + hy, hw, hh),
                       int(np.count_nonzero(lab))))
    _distractors(rng, img, owner, d.distractors // 3, palette, 0.5, d.texture_prob, poles=True)

    visible = np.bincount((owner + 1).ravel(), minlength=len(placed) + 1)[1:]
    objects = []
    for k, (fbox, hbox, full) in enumerate(placed):
        vis = visible[k] / max(full, 1)
        if vis < d.min_visibility or visible[k] == 0:
            continue
        fx, fy, fw, fh = fbox
        bx0, by0 = max(fx, 0), max(fy, 0)
        bx1, by1 = min(fx + fw, size), min(fy + fh, size)
        vx, vy, vw, vh = _tight_box(owner[by0:by1, bx0:bx1] == k)
        objects.append({"category_id": 1, "bbox": [bx0, by0, bx1 - bx0, by1 - by0],
                        "fbox": list(fbox), "vbox": [bx0 + vx, by0 + vy, vw, vh],
                        "hbox": list(hbox), "visibility": round(float(vis), 4)})
    return _finish(rng, img, d.noise, d.color_jitter, d.blur_prob), objects
