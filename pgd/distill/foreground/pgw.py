"""``pgw``: Prediction-Guided Weighting ("Ours" in PGD Tab. 5), selectable by name.

Thin adapter over :class:`pgd.distill.pgw.PredictionGuidedWeighting` (Eq. 1-4)::

    q_g[n] = 1[X_n inside b_g] max_a p[n, a, c_g]^(1 - xi) IoU(b_g, box[n, a])^xi
    T_g    = top-K of q_g over all levels;  mu_g, Sigma_g = Gaussian MLE of {X_n : n in T_g}
    I_g[n] = 1[n in T_g] exp(-1/2 (X_n - mu_g)^T (Sigma_g + r I)^-1 (X_n - mu_g))
    M[n]   = max_g I_g[n] / #{m on level(n) of the image: max_g I_g[m] != 0}

``build_strategy('pgw', k=30)`` returns exactly :func:`pgd.distill.pgw.pgw_masks_from_batch`.
(:class:`~pgd.distill.losses.PGDLoss` with ``fg_strategy='pgw'`` calls PGW directly with its own
``k``/``candidates``/``ridge`` and does not go through this registry.)
"""
from __future__ import annotations

from ..pgw import PredictionGuidedWeighting
from .base import register_strategy

__all__ = ['PGWStrategy']


@register_strategy('pgw')
class PGWStrategy(PredictionGuidedWeighting):
    """PGW; arguments ``k``, ``candidates``, ``ridge``, ``impl`` as in
    :class:`~pgd.distill.pgw.PredictionGuidedWeighting`."""

    uses_quality = True
