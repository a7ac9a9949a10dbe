"""Drawing shared by both SYNTHETIC scene kinds: colours, textures, cluttered backgrounds,
distractors, pasting through masks and the global photometric finish.

Kept apart from the scene recipes (:mod:`.shapes`, :mod:`.crowd`) because both use the same
primitives; every function draws from the image's own RNG in a fixed order, so moving code
here must not change the order of the calls (the images are a pure function of that RNG).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import cv2
import numpy as np

# Fixed seed for the per-process pixel-noise bank: the bank is a constant of the generator
# (independent of the user seed), so images stay a pure function of their own RNG.
_NOISE_BANK_SEED = 20220712


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
