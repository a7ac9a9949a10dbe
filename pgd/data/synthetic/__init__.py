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

Package layout: :mod:`.difficulty` (kinds, class lists, difficulty knobs and their
validation), :mod:`.drawing` (the drawing shared by both kinds: textures, background, clutter,
photometric finish), :mod:`.shapes` and :mod:`.crowd` (one scene kind each); this module keeps
the per-image RNG and :func:`generate_image`, and re-exports the public names.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .crowd import _render_crowd
from .difficulty import (CROWD_CLASSES, DIFFICULTY_TYPES, KINDS, SHAPES_CLASSES, CrowdDifficulty,
                         Difficulty, ShapesDifficulty, _check_kind, classes_for, make_difficulty,
                         parse_difficulty)
from .shapes import _render_shapes

__all__ = [
    'GENERATOR_VERSION', 'SHAPES_CLASSES', 'CROWD_CLASSES', 'KINDS', 'SPLITS', 'ShapesDifficulty',
    'CrowdDifficulty', 'Difficulty', 'DIFFICULTY_TYPES', 'classes_for', 'make_difficulty',
    'parse_difficulty', 'image_rng', 'generate_image'
]

GENERATOR_VERSION = "1.0.0"

SPLITS = ("train", "val")
_KIND_IDS = {"shapes": 1, "crowd": 2}
_SPLIT_IDS = {"train": 1, "val": 2}


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
