"""PGD distillation loss (paper Sec. 3.3, Eq. 5-10).

Per image, per FPN level ``l`` (features ``F`` of shape (C, H, W), teacher ``T``, student ``S``,
attention maps from :mod:`pgd.distill.attention`, ``P`` (1, H, W), ``A`` (C, H, W))::

    (5) L_fea^cls = sum_{k,i,j} (alpha M^cls + beta N^cls)_ij P^T_ij A^T_kij (F^T - F^S)^2_kij
    (6) L_fea^reg = sum_{k,i,j} gamma M^reg_ij A^T_kij (F^T - F^S)^2_kij
    (8) L_att^cls = delta/(HW) sum_ij |P^T - P^S| + delta/(CHW) sum_kij |A^T - A^S|
    (9) L_att^reg = delta/(C sum_ij 1_ij) sum_kij 1_ij |A^T - A^S|,   1_ij = [M^reg_ij != 0]

``M^cls`` / ``M^reg`` are the PGW masks (Eq. 1-4) with ``xi_cls`` / ``xi_reg``; ``N^cls`` is the
background indicator (location centre not strictly inside any GT box) divided by its count on
that image and level. ``L_att^reg`` is 0 on a level without foreground. Each term is summed over
levels with ``level_weights[l]`` and the batch loss is the **mean over images** of the per-image
losses (unlike the public code, which shares masks across the batch and rescales by batch
size). Teacher tensors are detached; only the student features receive gradients.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..attention import channel_attention, spatial_attention
from ..inputs import DistillBatch
from ..pgw import (DEFAULT_RIDGE, batch_level_index, inside_pairs, normalise_per_level,
                   pgw_masks_from_batch)

__all__ = ['PGDLoss', 'PUBLIC_CODE_LEVEL_WEIGHTS']

#: Per-level weights P3..P7 of the public PGD code (the paper does not mention any).
PUBLIC_CODE_LEVEL_WEIGHTS = (1.0, 1.25, 1.5, 1.75, 2.0)

_BRANCH_FEATURES = {'cls': 'cls_feat', 'reg': 'reg_feat', 'neck': 'neck'}


@MODELS.register_module()
class PGDLoss(nn.Module):
    """Prediction-Guided Distillation loss on captured teacher/student head features.

    Args:
        alpha: foreground weight of Eq. 5. Paper Sec. 4.1 / Tab. 6b: 0.08 for anchor-based
            detectors (ATSS, DDOD) -- the default -- and 0.04 for anchor-free ones (FCOS, GFL,
            AutoAssign). (The paper text prints "0.8 and 0.4"; Tab. 6b and the public configs
            show the 0.0x scale.)
        beta: background weight of Eq. 5; ``None`` -> ``0.5 * alpha`` (paper, following FGD).
        gamma: weight of Eq. 6; ``None`` -> ``1.6 * alpha`` (paper Sec. 4.1).
        delta: attention-loss weight of Eq. 8-9; 8e-4 (paper, following FGD; printed as sigma).
        tau: attention temperature of Eq. 7; 0.8 (paper; the public code uses 0.4 for
            AutoAssign).
        k: top-K of PGW; 30 (paper, Tab. 6a). The public code uses K=9 for ATSS.
        xi_cls, xi_reg: PGW balance for ``M^cls`` / ``M^reg``; 0.8 / 0.6 (paper, from DDOD).
        level_weights: weight of each FPN level P3..P7; default
            :data:`PUBLIC_CODE_LEVEL_WEIGHTS` ``(1, 1.25, 1.5, 1.75, 2)`` taken from the public
            code (not in the paper; pass ``(1,) * 5`` for an unweighted sum). The first L are
            used for L levels.
        candidates: PGW candidate rule, ``'inside'`` (paper text) or ``'all_then_mask'``
            (public code), see :mod:`pgd.distill.pgw`.
        ridge: PGW covariance ridge in px^2.
        branches: any of ``'cls'`` (Eq. 5 + 8 on ``cls_feat``), ``'reg'`` (Eq. 6 + 9 on
            ``reg_feat``) and ``'neck'`` (Eq. 5 + 8 with ``M^cls`` on the FPN outputs; Tab. 7).
        fg_strategy: ``'pgw'`` or the name of a strategy built by
            ``pgd.distill.foreground.build_strategy(name, **fg_cfg)``, called as
            ``strategy(batch, xi) -> (B, N)`` mask (already level-normalised).
        fg_cfg: keyword arguments of that strategy (unused for ``'pgw'``).

    Forward input: a :class:`~pgd.distill.inputs.DistillBatch` with per-level features
    (B, C, H_l, W_l) of equal shapes for teacher and student.

    Returns:
        dict with ``loss_pgd_fea_cls``, ``loss_pgd_att_cls`` (branch 'cls'),
        ``loss_pgd_fea_reg``, ``loss_pgd_att_reg`` ('reg'), ``loss_pgd_fea_neck``,
        ``loss_pgd_att_neck`` ('neck'); scalars.
    """

    def __init__(self,
                 alpha: float = 0.08,
                 beta: Optional[float] = None,
                 gamma: Optional[float] = None,
                 delta: float = 8e-4,
                 tau: float = 0.8,
                 k: int = 30,
                 xi_cls: float = 0.8,
                 xi_reg: float = 0.6,
                 level_weights: Sequence[float] = PUBLIC_CODE_LEVEL_WEIGHTS,
                 candidates: str = 'inside',
                 ridge: float = DEFAULT_RIDGE,
                 branches: Sequence[str] = ('cls', 'reg'),
                 fg_strategy: str = 'pgw',
                 fg_cfg: Optional[dict] = None):
        super().__init__()
        self.alpha = float(alpha)
        self.beta = 0.5 * self.alpha if beta is None else float(beta)
        self.gamma = 1.6 * self.alpha if gamma is None else float(gamma)
        self.delta = float(delta)
        self.tau = float(tau)
        self.k = int(k)
        self.xi_cls = float(xi_cls)
        self.xi_reg = float(xi_reg)
        self.level_weights = tuple(float(w) for w in level_weights)
        self.candidates = candidates
        self.ridge = float(ridge)
        if isinstance(branches, str):
            branches = (branches, )
        unknown = set(branches) - set(_BRANCH_FEATURES)
        if unknown or not branches:
            raise ValueError(f'branches must be a non-empty subset of {tuple(_BRANCH_FEATURES)}, '
                             f'got {tuple(branches)}')
        self.branches = tuple(branches)
        self.fg_strategy = fg_strategy
        self.fg_cfg = dict(fg_cfg or {})
        self._strategy = None if fg_strategy == 'pgw' else self._build_strategy()

    def _build_strategy(self):
        """Build the Table-5 strategy now (a misspelt name fails at config time), passing on
        this loss's own K / candidates / ridge where the strategy takes them, so that
        ``k=9, fg_strategy='topkeq'`` really selects 9 locations."""
        import inspect

        from pgd.distill.foreground import STRATEGIES, build_strategy
        cfg = dict(self.fg_cfg)
        cls = STRATEGIES.get(str(self.fg_strategy).lower())
        if cls is not None:
            accepted = inspect.signature(cls).parameters
            for key, value in (('k', self.k), ('candidates', self.candidates),
                               ('ridge', self.ridge)):
                if key in accepted:
                    cfg.setdefault(key, value)
        return build_strategy(self.fg_strategy, **cfg)

    # ------------------------------------------------------------------ masks
    def _foreground_masks(self, batch: DistillBatch, xis: List[float]) -> List[Tensor]:
        if self.fg_strategy == 'pgw':
            return pgw_masks_from_batch(batch, xis, k=self.k, candidates=self.candidates,
                                        ridge=self.ridge)
        with torch.no_grad():
            if hasattr(self._strategy, 'masks'):  # shares the quality between the two xi
                return [m.detach() for m in self._strategy.masks(batch, xis)]
            return [self._strategy(batch, xi).detach() for xi in xis]

    @staticmethod
    def _background_mask(batch: DistillBatch, level_index: Tensor) -> Tensor:
        """N^cls: (B, N) background indicator normalised per image and level."""
        with torch.no_grad():
            pb, _, pn = inside_pairs(batch.points.to(batch.gt_bboxes.device), batch.gt_bboxes,
                                     batch.gt_valid.bool(), batch.level_sizes)
            bg = batch.gt_bboxes.new_ones(batch.num_images, batch.points.shape[0],
                                          dtype=torch.float32)
            bg[pb, pn] = 0.0
            return normalise_per_level(bg, level_index, len(batch.level_sizes))

    # ------------------------------------------------------------------ per-level terms
    def _cls_terms(self, f_t: Tensor, f_s: Tensor, m_fg: Tensor, n_bg: Tensor):
        """Eq. 5 and Eq. 8 per image: (B,), (B,)."""
        p_t = spatial_attention(f_t, self.tau)                 # (B, 1, H, W)
        a_t = channel_attention(f_t, self.tau)                 # (B, C, H, W)
        p_s = spatial_attention(f_s, self.tau)
        a_s = channel_attention(f_s, self.tau)
        diff2 = (f_t.to(a_t.dtype) - f_s.to(a_t.dtype)).pow(2)
        w = (self.alpha * m_fg + self.beta * n_bg)[:, None] * p_t   # (B, 1, H, W)
        fea = (w * a_t * diff2).sum(dim=(1, 2, 3))
        att = (self.delta * (p_t - p_s).abs().mean(dim=(1, 2, 3))
               + self.delta * (a_t - a_s).abs().mean(dim=(1, 2, 3)))
        return fea, att

    def _reg_terms(self, f_t: Tensor, f_s: Tensor, m_fg: Tensor):
        """Eq. 6 and Eq. 9 per image: (B,), (B,)."""
        a_t = channel_attention(f_t, self.tau)
        a_s = channel_attention(f_s, self.tau)
        diff2 = (f_t.to(a_t.dtype) - f_s.to(a_t.dtype)).pow(2)
        fea = self.gamma * (m_fg[:, None] * a_t * diff2).sum(dim=(1, 2, 3))
        fg = (m_fg != 0).to(a_t.dtype)                                 # (B, H, W)
        num_c = f_t.shape[1]
        n_fg = fg.sum(dim=(1, 2))
        att_sum = (fg[:, None] * (a_t - a_s).abs()).sum(dim=(1, 2, 3))
        att = self.delta * att_sum / (num_c * n_fg).clamp(min=1)      # 0 when no fg
        return fea, att

    # ------------------------------------------------------------------ forward
    def forward(self, batch: DistillBatch) -> Dict[str, Tensor]:
        num_levels = len(batch.level_sizes)
        if num_levels > len(self.level_weights):
            raise ValueError(f'{num_levels} feature levels but only {len(self.level_weights)} '
                             f'level_weights')
        device = batch.teacher_cls_prob.device
        level_index = batch_level_index(batch.level_sizes, device=device)

        need_cls = any(b in self.branches for b in ('cls', 'neck'))
        need_reg = 'reg' in self.branches
        xis = ([self.xi_cls] if need_cls else []) + ([self.xi_reg] if need_reg else [])
        masks = self._foreground_masks(batch, xis)
        m_cls = batch.split_levels(masks[0]) if need_cls else None
        m_reg = batch.split_levels(masks[-1]) if need_reg else None
        n_bg = batch.split_levels(self._background_mask(batch, level_index)) if need_cls else None

        losses = {}
        for branch in self.branches:
            attr = _BRANCH_FEATURES[branch]
            feats_t = getattr(batch.teacher, attr)
            feats_s = getattr(batch.student, attr)
            if len(feats_t) != num_levels or len(feats_s) != num_levels:
                raise ValueError(f'branch {branch!r}: expected {num_levels} levels, got teacher '
                                 f'{len(feats_t)} / student {len(feats_s)}')
            fea_total, att_total = 0., 0.
            for lvl in range(num_levels):
                f_t, f_s = feats_t[lvl].detach(), feats_s[lvl]
                if f_t.shape != f_s.shape:
                    raise ValueError(
                        f'PGDLoss branch {branch!r} level {lvl}: teacher feature shape '
                        f'{tuple(f_t.shape)} != student {tuple(f_s.shape)}. PGD uses no '
                        f'adaptation layer, so teacher and student heads must have equal '
                        f'channel counts (feat_channels) and strides.')
                if tuple(f_t.shape[2:]) != tuple(batch.level_sizes[lvl]):
                    raise ValueError(f'branch {branch!r} level {lvl}: feature size '
                                     f'{tuple(f_t.shape[2:])} != level_sizes '
                                     f'{batch.level_sizes[lvl]}')
                if branch == 'reg':
                    fea, att = self._reg_terms(f_t, f_s, m_reg[lvl].to(f_s.device))
                else:
                    fea, att = self._cls_terms(f_t, f_s, m_cls[lvl].to(f_s.device),
                                               n_bg[lvl].to(f_s.device))
                w = self.level_weights[lvl]
                fea_total = fea_total + w * fea
                att_total = att_total + w * att
            losses[f'loss_pgd_fea_{branch}'] = fea_total.mean()
            losses[f'loss_pgd_att_{branch}'] = att_total.mean()
        return losses

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, delta={self.delta}, '
                f'tau={self.tau}, k={self.k}, xi_cls={self.xi_cls}, xi_reg={self.xi_reg}, '
                f'level_weights={self.level_weights}, candidates={self.candidates!r}, '
                f'branches={self.branches}, fg_strategy={self.fg_strategy!r}')
