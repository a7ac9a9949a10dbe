"""The SYNTHETIC ``shapes`` scenes: 10 classes of rotated, aspect-jittered geometric shapes
over clutter, with occlusion-based dropping (see the package docstring)."""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from .difficulty import SHAPES_CLASSES, ShapesDifficulty
from .drawing import _background, _distractors, _finish, _paste, _texture, _tight_box


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
