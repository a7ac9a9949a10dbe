"""Prediction-Guided Weighting (PGW), PGD paper Sec. 3.1-3.2, Eq. 1-4.

For every GT box ``b`` (label ``c``) of an image and every feature location ``n`` (all FPN
levels flattened, see :mod:`pgd.distill.inputs`):

* quality (Eq. 1, max over the A predictions of a location)::

      q[g, n] = 1[X_n inside b_g] * max_a  p[n, a, c_g] ** (1 - xi) * IoU(b_g, box[n, a]) ** xi

* ``T_g`` = the top-K locations by ``q`` jointly over all levels (candidate rule below);
* Gaussian MLE of the image-plane centres of ``T_g`` (Eq. 2)::

      mu_g = mean_{n in T_g} X_n,   Sigma_g = 1/K' sum_{n in T_g} (X_n - mu_g)(X_n - mu_g)^T

* importance (Eq. 3) ``I_g[n] = exp(-1/2 (X_n - mu_g)^T (Sigma_g + r I)^-1 (X_n - mu_g))`` for
  ``n in T_g`` and 0 elsewhere; ``I[n] = max_g I_g[n]``;
* per image and level (Eq. 4) ``M[n] = I[n] / #{m on level(n): I[m] != 0}`` (0/0 -> 0).

Conventions and decisions (not fixed by the paper text):

* **Inside test** is strict: ``x1 < x < x2 and y1 < y < y2`` for the location centre
  (FCOS/ATSS use ``min(l, t, r, b) > 0``, the same thing). Padded GTs (``gt_valid`` False)
  are never inside anything.
* **Candidates** ``'inside'`` (paper text: "compute the quality score for each feature pixel
  inside b, then select the K pixels with the highest quality"): the candidates are the
  locations inside the box, *even when their quality is 0*; ``K' = min(K, #inside)``.
  ``'all_then_mask'`` (the official code, ``pgw_anchor_based.py`` / ``pgw_anchor_free.py``
  of ChenhongyiYang/PGD; :class:`~pgd.distill.losses.PGDLoss`'s default): the top-K is taken
  over all locations of the *raw* quality ``p^(1-xi) IoU^xi`` (no inside indicator), the
  Gaussian is fitted on *all* K candidates, and only the weights of the candidates inside the
  box are kept, so fewer than K (possibly 0) locations get a weight.
* The official code adds uniform noise of +-0.05 px to the candidate centres before the fit
  and divides by ``det + 1e-10`` ("to avoid zero determinant"); here a fixed ridge does that
  job deterministically (next items), so a rerun gives the same masks.
* **Ties** in the top-K are broken towards the lower flattened location index, so the result
  is deterministic and independent of the implementation (matches ``np.argsort(-q,
  kind='stable')``).
* **Ridge** ``r = DEFAULT_RIDGE = 1e-2 px^2`` is added to ``Sigma`` (deterministic, no
  jitter). It only has to make ``Sigma`` invertible: with a single candidate (``Sigma = 0``) or
  collinear candidates, every selected point lies exactly on the degenerate subspace, so its
  Mahalanobis distance along the degenerate direction is 0 whatever ``r`` is, and the exact
  value of ``r`` is irrelevant there. For non-degenerate fits it should perturb the MLE as
  little as possible: locations lie on lattices with spacing >= 8 px (smallest stride of all
  detectors used), so any non-zero per-axis variance of K' <= 30 lattice points is at least
  ``8^2 (K'-1)/K'^2 >= 2 px^2``; ``r = 0.01 px^2`` changes it by at most 0.5 %. The 2x2
  algebra is done in float64, so such a small ridge is numerically safe (Sigma entries are at
  most ~1e6 px^2 for 1333-px inputs).
* Everything runs under ``torch.no_grad()`` on detached inputs, in float32 (float64 if the
  inputs are float64; fp16 inputs are upcast).

Two implementations are provided and tested against each other and against the per-GT loop
reference in ``tests/pgw_reference.py`` (test code, not shipped in the package):

* ``impl='sparse'`` (``'auto'`` picks it on the CPU, for ``candidates='inside'`` and for the
  official rule on a grid; off the CPU ``'auto'`` is dense, see ``masks._AUTO_SPARSE_DEVICES``):
  only (image, GT, location) pairs with the location inside the box are materialised (``P``
  pairs; with ``level_sizes`` they are enumerated as runs of consecutive locations -- the rows
  of each box's grid rectangle -- without any (B, G, N) tensor, see :func:`inside_pairs`);
  quality (mmdet's aligned IoU written out elementwise, bit-identical; for A = 1 on the
  interleaved (x1, y1, x2, y2) rows, see :func:`_aligned_iou`), a segmented top-K and the
  Gaussian fit work
  on those pairs, so memory and time scale with ``P * A`` instead of ``B * G * N * A``. The
  top-K is one stable sort of an int64 ``(pair's GT, quality bits)`` key; on large batches an
  exact pre-filter (k-th largest maximum of 16-pair groups, see :func:`_segment_topk`) first
  drops the pairs that cannot be in any top-K, so only a few per GT are sorted. A NaN quality
  counts as 0 (both dtypes). The top-K, the Gaussian fit and the normalisation (Eq. 4, done
  on the selected locations only, :func:`_normalise_at`) run once for all ``xi`` together,
  the masks of ``xi_x`` being the segments ``x * B * G + (b * G + g)``; within a segment the
  order (hence the tie-breaking and the float64 summation order) is that of one ``xi`` alone.
* ``impl='dense'``: built from the public pieces :func:`quality_scores`,
  :func:`topk_candidates`, :func:`fit_gaussian`, :func:`gaussian_importance` and
  :func:`normalise_per_level` on (B, G, N) tensors (used off the CPU, for ``'all_then_mask'``
  without a grid and by the ablation strategies).

Package layout (one module per seam, so the readable equations stay apart from the tuned code):

* :mod:`.defaults` -- the shared constants (ridge, candidate rules, chunk bound, working dtype);
* :mod:`.locations` -- which locations lie inside which GT box (strict test, grid enumeration);
* :mod:`.quality` -- Eq. 1, dense and per-cell (the bit-exact IoU kernels of both paths);
* :mod:`.importance` -- Eq. 2-4 on dense (B, G, N) tensors: top-K, Gaussian fit, importance,
  per-level normalisation;
* :mod:`.topk` -- the segmented top-K (radix-sort padding, exact group-maximum pre-filter,
  histogram lower bounds of a segment's k-th largest value);
* :mod:`.bound` -- the exact quality bounds used on large batches: only the cells whose IoU
  upper bound ``q <= IoU^xi`` lets them reach a top-K get their quality computed
  (``bound._bounded_quality``), and on grid locations whole (GT, level) rectangles whose
  box-area bound of the IoU ``min(1, A_max / a_g, a_g / A_min)`` is below that threshold are
  never enumerated (``bound._rect_bounded_quality``);
* :mod:`.sparse` -- the tuned sparse engine (both candidate rules);
* :mod:`.masks` -- the entry points (:func:`pgw_masks`, the batch adapter, the strategy class).
"""
from .defaults import CANDIDATE_MODES, DEFAULT_CHUNK_ELEMS, DEFAULT_RIDGE
from .importance import (denormalise_per_level, fit_gaussian, gaussian_importance,
                         normalise_per_level, topk_candidates)
from .locations import batch_level_index, inside_pairs, points_inside_boxes
from .masks import (PredictionGuidedWeighting, pgw_masks, pgw_masks_from_batch,
                    prediction_guided_weighting)
from .quality import quality_scores, quality_scores_multi
from .sparse import SPARSE_CHUNK_ELEMS, SPARSE_CHUNK_ELEMS_A1

__all__ = [
    'DEFAULT_RIDGE', 'CANDIDATE_MODES', 'points_inside_boxes', 'inside_pairs', 'quality_scores',
    'quality_scores_multi', 'topk_candidates', 'fit_gaussian', 'gaussian_importance',
    'normalise_per_level', 'denormalise_per_level', 'prediction_guided_weighting', 'pgw_masks',
    'pgw_masks_from_batch',
    'batch_level_index', 'PredictionGuidedWeighting'
]
