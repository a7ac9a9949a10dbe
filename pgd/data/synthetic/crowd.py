"""The SYNTHETIC ``crowd`` scenes: CrowdHuman-like stick-figure pedestrians with full,
visible and head boxes (see the package docstring)."""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from .difficulty import CrowdDifficulty
from .drawing import _background, _distractors, _finish, _paste, _texture, _tight_box


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
