"""Foreground-mask providers compared in PGD Table 5 (Sec. 4.3, "Comparing Foreground
Distillation Strategies").

Every strategy replaces only the PGW foreground weighting of PGD (``M^cls`` / ``M^reg`` of
Eq. 5, 6 and 9); everything else in :class:`~pgd.distill.losses.PGDLoss` stays the same. They
are selected by name::

    PGDLoss(fg_strategy='boxgauss', fg_cfg=dict(sigma_ratio=1 / 6))

=============  =============================================  ========================
name           per-GT importance ``I_g[n]``                   module
=============  =============================================  ========================
``box``        ``1[X_n inside b_g]``                          :mod:`.box`
``boxgauss``   box-centred Gaussian, sigma from box size      :mod:`.box_gauss`
``centre``     ``1[X_n in central 0.2W x 0.2H region]``       :mod:`.centre`
``quality``    Eq. 1 quality ``q_g[n]`` (0 outside the box)    :mod:`.quality`
``topkeq``     ``1[n in T_g]`` (top-K by quality)              :mod:`.topk_equal`
``kde``        Gaussian KDE over ``T_g`` (peak-normalised)     :mod:`.kde`
``pgw``        PGW, Eq. 1-4 ("Ours")                          :mod:`.pgw`
=============  =============================================  ========================

Shared conventions (identical to :mod:`pgd.distill.pgw`, so the masks are interchangeable):

* the per-GT importance ``I_g`` (B, G, N) is combined over the GTs of an image by ``max``
  and normalised per image and FPN level by the number of non-zero entries
  (:func:`pgd.distill.pgw.normalise_per_level`, Eq. 4); levels without foreground stay 0;
* "inside" is the strict point-in-box test of :func:`pgd.distill.pgw.points_inside_boxes`;
  padded GTs (``gt_valid`` False) contribute nothing, images without GTs get all zeros;
* everything is computed batched over images and GTs under ``torch.no_grad()`` on detached
  inputs; the result is float32 (float64 when the teacher probabilities are float64) on the
  device of ``batch.teacher_cls_prob``;
* a strategy is called as ``strategy(batch, xi) -> (B, N)``; ``strategy.masks(batch, xis)``
  returns one mask per ``xi`` and shares the work between them (PGD needs
  ``xi_cls = 0.8`` and ``xi_reg = 0.6``). Strategies that do not use the teacher quality
  ignore ``xi`` and return the same mask for every ``xi``.
"""
from __future__ import annotations

from .base import (STRATEGIES, ForegroundStrategy, batch_geometry, build_strategy, combine_gts,
                   out_dtype, register_strategy)
# The strategy modules register themselves in STRATEGIES when imported.
from . import box, box_gauss, centre, kde, pgw, quality, topk_equal  # noqa: E402,F401

__all__ = [
    'STRATEGIES', 'register_strategy', 'build_strategy', 'ForegroundStrategy', 'batch_geometry',
    'combine_gts', 'out_dtype'
]
