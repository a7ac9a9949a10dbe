"""PGD distillation loss (paper Sec. 3.3, Eq. 5-10), in two readings.

Features ``F`` of one FPN level, shape (B, C, H, W) (teacher ``T``, student ``S``); attention
maps from :mod:`pgd.distill.attention`: ``P`` (B, 1, H, W), per-location channel attention
``A`` (B, C, H, W); PGW masks from :mod:`pgd.distill.pgw`: ``M`` = importance ``I`` divided by
its number of non-zero entries per image and level (Eq. 4), ``N`` = background indicator
(location centre strictly inside no GT box) divided by its count per image and level.

``semantics='official'`` (default) -- the code that produced the paper's numbers
(github ChenhongyiYang/PGD, MMDetection 2.14), with its two bugs fixed (below)::

    cls  (mmdet/distillation/losses/pgd_cls.py, PGDClsLoss), per level l, P from the channel MEAN:
      L_fea = w_l / B * sum_{b,k,i,j} (alpha M + beta N)_bij P^T_bij A^T_bkij (F^T - F^S)^2_bkij
      L_att = delta * ( sum_{b,k,i,j} |A^T - A^S| / (B H W) + sum_{b,i,j} |P^T - P^S| / B )
    reg  (mmdet/distillation/losses/pgd_reg.py, PGDRegLoss), per level, over the set Q of
      locations of the whole batch whose RAW importance I^reg is non-zero:
      L_fea = gamma * 1/|Q| sum_{q in Q} I_q * mean_k(A^T_kq (F^T - F^S)^2_kq)
      L_att = delta * sum_{q in Q, k} |A^T_kq - A^S_kq| / |Q|        (both 0 when Q is empty)

  * ``w_l`` = ``level_weights[l]`` (1.0, 1.25, 1.5, 1.75, 2.0; the per-level ``loss_weight``
    of ``work_configs/pgd_*_1x.py``) multiplies only the cls feature term, as there.
  * the PGW candidates are the official ones (``candidates='all_then_mask'``: top-K of the raw
    quality over all locations, Gaussian fitted on all K, weight kept inside the box;
    ``pgw_anchor_based.py`` / ``pgw_anchor_free.py``).
  * Official bug 1, fixed: ``pgd_cls.py`` reshapes the (B, 1, H, W) masks to (B, 1, 1, H, W),
    so ``F * sqrt(M)`` broadcasts to (B, B, C, H, W) and image b is weighted by the masks of
    *every* image of the batch. Here image b is weighted by its own mask only. Derivation of
    what this does to the tuned alpha/beta: the official term is
    ``1/B sum_b sum_b' <M_b', E_b>`` with ``E_b = P^T A^T (F^T - F^S)^2`` of image b; its
    ``b' = b`` part is exactly the fixed term above with the *same* alpha, beta; the
    ``b' != b`` parts weight image b at the object locations of the *other* images (mostly
    background of image b), adding B - 1 extra masks' worth of mass (B = 4 images per GPU in
    ``work_configs/base/1x_setting.py``). The defaults keep the published alpha, beta: they
    reproduce the own-image part exactly and do not turn the cross-image (background-like)
    mass into foreground weight. ``tests/test_pgd_loss_official.py`` shows both magnitudes on
    one batch.
  * Official bug 2, fixed: the anchor-free PGW and background mask (``pgw_anchor_free.py``,
    ``background_weight.get_back_weight_anchorfree``) read point (x, y) as (y, x) for FCOS and
    AutoAssign; here points are (x, y) for every head (:mod:`pgd.distill.inputs`).

``semantics='paper'`` -- Eq. 5-9 as printed (spatial attention from the channel SUM, Eq. 7),
per image, averaged over images; ``w_l`` multiplies all four terms; PGW candidates inside the
box (``candidates='inside'``, the paper text)::

    (5) L_fea^cls = sum_{k,i,j} (alpha M^cls + beta N^cls)_ij P^T_ij A^T_kij (F^T - F^S)^2_kij
    (6) L_fea^reg = sum_{k,i,j} gamma M^reg_ij A^T_kij (F^T - F^S)^2_kij
    (8) L_att^cls = delta/(HW) sum_ij |P^T - P^S| + delta/(CHW) sum_kij |A^T - A^S|
    (9) L_att^reg = delta/(C sum_ij 1_ij) sum_kij 1_ij |A^T - A^S|,   1_ij = [M^reg_ij != 0]

The ``neck`` branch (Table 7) applies the cls terms, with ``M^cls``, to the FPN outputs.
Teacher tensors are detached; only the student features receive gradients.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..attention import channel_attention, channel_softmax, pgd_attention_maps, spatial_attention
from ..inputs import DistillBatch
from ..pgw import (DEFAULT_RIDGE, batch_level_index, denormalise_per_level, inside_pairs,
                   normalise_per_level, pgw_masks_from_batch)
from .weighted_error import weighted_squared_error

__all__ = ['PGDLoss', 'PUBLIC_CODE_LEVEL_WEIGHTS', 'SEMANTICS']

#: Per-level weights P3..P7 of the public PGD code (the paper does not mention any).
PUBLIC_CODE_LEVEL_WEIGHTS = (1.0, 1.25, 1.5, 1.75, 2.0)
#: Readings of the loss (module docstring); the first is the default.
SEMANTICS = ('official', 'paper')
#: PGW candidate rule each reading implies unless ``candidates`` is given.
_DEFAULT_CANDIDATES = {'official': 'all_then_mask', 'paper': 'inside'}

_BRANCH_FEATURES = {'cls': 'cls_feat', 'reg': 'reg_feat', 'neck': 'neck'}


@MODELS.register_module()
class PGDLoss(nn.Module):
    """Prediction-Guided Distillation loss on captured teacher/student head features.

    Args:
        alpha: foreground weight of Eq. 5. Official configs (``work_configs/pgd_*_1x.py``):
            0.08 for ATSS, DDOD and AutoAssign, 0.04 for FCOS and GFL (0.001 for DDOD on
            CrowdHuman). The paper text prints "0.8 and 0.4" for anchor-based / anchor-free;
            Tab. 6b and the configs show the 0.0x scale.
        beta: background weight of Eq. 5; ``None`` -> ``0.5 * alpha`` (paper and configs).
        gamma: weight of Eq. 6; ``None`` -> ``1.6 * alpha`` (paper Sec. 4.1 and configs).
        delta: attention-loss weight of Eq. 8-9; 8e-4 (paper, printed as sigma; configs).
        tau: attention temperature of Eq. 7; 0.8 (paper; configs: 0.4 for AutoAssign).
        k: top-K of PGW; 30 (paper Sec. 4.1, and the FCOS/GFL/DDOD/AutoAssign heads of the
            official code); the official ATSS heads use 9 (``atss_r50_distill_head.py``),
            set per detector in ``config/distill/pgd.py``.
        xi_cls, xi_reg: PGW balance for ``M^cls`` / ``M^reg``; 0.8 / 0.6 (paper, from DDOD).
        level_weights: weight of each FPN level P3..P7; default
            :data:`PUBLIC_CODE_LEVEL_WEIGHTS` ``(1, 1.25, 1.5, 1.75, 2)`` taken from the public
            code (not in the paper; pass ``(1,) * 5`` for an unweighted sum). The first L are
            used for L levels. Official reading: cls/neck feature term only; paper reading:
            every term.
        semantics: ``'official'`` (default) or ``'paper'``, see the module docstring.
        candidates: PGW candidate rule, ``'all_then_mask'`` (official code) or ``'inside'``
            (paper text), see :mod:`pgd.distill.pgw`; ``None`` -> the one of ``semantics``.
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
                 semantics: str = 'official',
                 candidates: Optional[str] = None,
                 ridge: float = DEFAULT_RIDGE,
                 branches: Sequence[str] = ('cls', 'reg'),
                 fg_strategy: str = 'pgw',
                 fg_cfg: Optional[dict] = None):
        super().__init__()
        if semantics not in SEMANTICS:
            raise ValueError(f'semantics must be one of {SEMANTICS}, got {semantics!r}')
        self.semantics = semantics
        self.alpha = float(alpha)
        self.beta = 0.5 * self.alpha if beta is None else float(beta)
        self.gamma = 1.6 * self.alpha if gamma is None else float(gamma)
        self.delta = float(delta)
        self.tau = float(tau)
        self.k = int(k)
        self.xi_cls = float(xi_cls)
        self.xi_reg = float(xi_reg)
        self.level_weights = tuple(float(w) for w in level_weights)
        self.candidates = _DEFAULT_CANDIDATES[semantics] if candidates is None else candidates
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
        num_locations = int(batch.points.shape[0])
        if self.k > num_locations and not getattr(self, '_k_logged', False):
            # the top-K takes min(K, #locations): say so once per run, not every step
            from mmengine.logging import print_log
            print_log(f'PGD: K={self.k} exceeds the {num_locations} candidate locations of '
                      f'the batch; effective K = {num_locations}', logger='current')
            self._k_logged = True
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

    # ------------------------------------------------------------------ paper reading
    def _cls_terms_paper(self, f_t: Tensor, f_s: Tensor, m_fg: Tensor, n_bg: Tensor):
        """Eq. 5 and Eq. 8 per image: (B,), (B,)."""
        p_t = spatial_attention(f_t, self.tau, 'sum')          # (B, 1, H, W)
        a_t = channel_attention(f_t, self.tau)                 # (B, C, H, W)
        p_s = spatial_attention(f_s, self.tau, 'sum')
        a_s = channel_attention(f_s, self.tau)
        diff2 = (f_t.to(a_t.dtype) - f_s.to(a_t.dtype)).pow(2)
        w = (self.alpha * m_fg + self.beta * n_bg)[:, None] * p_t   # (B, 1, H, W)
        fea = (w * a_t * diff2).sum(dim=(1, 2, 3))
        att = (self.delta * (p_t - p_s).abs().mean(dim=(1, 2, 3))
               + self.delta * (a_t - a_s).abs().mean(dim=(1, 2, 3)))
        return fea, att

    def _reg_terms_paper(self, f_t: Tensor, f_s: Tensor, m_fg: Tensor):
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

    # ------------------------------------------------------------------ official reading
    def _cls_terms_official(self, f_t: Tensor, f_s: Tensor, m_fg: Tensor, n_bg: Tensor):
        """``PGDClsLoss`` (mask broadcast fixed), without the level weight: scalars.

        ``A = C * S`` with ``S`` the channel softmax; ``C`` is folded into the (B, 1, H, W)
        weight and the attention term's scalar (the module docstring's formula, fewer passes
        over (B, C, H, W): measured in ``benchmarks/README.md``)."""
        num_b, num_c, h, w = f_t.shape
        p_t, s_t = pgd_attention_maps(f_t, self.tau, 'mean')   # (B, 1, H, W), (B, C, H, W)
        p_s, s_s = pgd_attention_maps(f_s, self.tau, 'mean')
        weight = (self.alpha * m_fg + self.beta * n_bg)[:, None] * p_t * num_c
        fea = weighted_squared_error(f_t.to(s_t.dtype), f_s.to(s_t.dtype), weight * s_t) / num_b
        att = self.delta * (num_c * (s_t - s_s).abs().sum() / (num_b * h * w)
                            + (p_t - p_s).abs().sum() / num_b)
        return fea, att

    def _reg_terms_official(self, f_t: Tensor, f_s: Tensor, imp: Tensor):
        """``PGDRegLoss`` on the batch-pooled locations with raw importance ``imp`` != 0.

        The (Q, C) rows are gathered from the channels-last views (no copy of the whole map);
        ``A = C * S`` as in :meth:`_cls_terms_official`, ``C`` cancels in the feature term."""
        pos = imp != 0                                                # (B, H, W)
        num_pos = int(pos.sum())
        if num_pos == 0:
            zero = f_s.sum() * 0.0
            return zero, zero
        num_c = f_t.shape[1]
        rows_t = f_t.permute(0, 2, 3, 1)[pos]                         # (Q, C)
        rows_s = f_s.permute(0, 2, 3, 1)[pos]
        s_t = channel_softmax(rows_t, self.tau)                       # (Q, C)
        s_s = channel_softmax(rows_s, self.tau)
        # gamma * mean_q(I_q * mean_k(A_kq d_kq^2)) = gamma / Q * sum_qk I_q S_kq d_kq^2
        w_q = imp[pos].to(s_t.dtype)[:, None] * (self.gamma / num_pos)
        fea = weighted_squared_error(rows_t.to(s_t.dtype), rows_s.to(s_t.dtype), w_q * s_t)
        att = self.delta * num_c * (s_t - s_s).abs().sum() / num_pos
        return fea, att

    # ------------------------------------------------------------------ forward
    def _masks(self, batch: DistillBatch, level_index: Tensor, need_cls: bool, need_reg: bool):
        """Per-level (B, H, W) masks: M^cls, N^cls and the reg mask (M^reg in the paper
        reading, the raw importance I^reg in the official one); None where not needed."""
        xis = ([self.xi_cls] if need_cls else []) + ([self.xi_reg] if need_reg else [])
        masks = self._foreground_masks(batch, xis)
        m_cls = batch.split_levels(masks[0]) if need_cls else None
        m_reg = None
        if need_reg:
            reg = masks[-1]
            if self.semantics == 'official':       # PGDRegLoss weights by the raw importance
                reg = denormalise_per_level(reg, batch.level_sizes)
            m_reg = batch.split_levels(reg)
        n_bg = batch.split_levels(self._background_mask(batch, level_index)) if need_cls else None
        return m_cls, n_bg, m_reg

    def forward(self, batch: DistillBatch) -> Dict[str, Tensor]:
        num_levels = len(batch.level_sizes)
        if num_levels > len(self.level_weights):
            raise ValueError(f'{num_levels} feature levels but only {len(self.level_weights)} '
                             f'level_weights')
        device = batch.teacher_cls_prob.device
        level_index = batch_level_index(batch.level_sizes, device=device)
        need_cls = any(b in self.branches for b in ('cls', 'neck'))
        m_cls, n_bg, m_reg = self._masks(batch, level_index, need_cls, 'reg' in self.branches)
        official = self.semantics == 'official'

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
                self._check_shapes(branch, lvl, f_t, f_s, batch.level_sizes[lvl])
                w = self.level_weights[lvl]
                if branch == 'reg':
                    mask = m_reg[lvl].to(f_s.device)
                    fea, att = (self._reg_terms_official(f_t, f_s, mask) if official
                                else self._reg_terms_paper(f_t, f_s, mask))
                    w_fea, w_att = (1.0, 1.0) if official else (w, w)
                else:
                    m_fg, bg = m_cls[lvl].to(f_s.device), n_bg[lvl].to(f_s.device)
                    fea, att = (self._cls_terms_official(f_t, f_s, m_fg, bg) if official
                                else self._cls_terms_paper(f_t, f_s, m_fg, bg))
                    w_fea, w_att = (w, 1.0) if official else (w, w)
                fea_total = fea_total + w_fea * fea
                att_total = att_total + w_att * att
            # official terms are already batch scalars; paper terms are per image -> mean
            losses[f'loss_pgd_fea_{branch}'] = fea_total.mean()
            losses[f'loss_pgd_att_{branch}'] = att_total.mean()
        return losses

    @staticmethod
    def _check_shapes(branch: str, lvl: int, f_t: Tensor, f_s: Tensor, level_size) -> None:
        if f_t.shape != f_s.shape:
            raise ValueError(
                f'PGDLoss branch {branch!r} level {lvl}: teacher feature shape '
                f'{tuple(f_t.shape)} != student {tuple(f_s.shape)}. PGD uses no '
                f'adaptation layer, so teacher and student heads must have equal '
                f'channel counts (feat_channels) and strides.')
        if tuple(f_t.shape[2:]) != tuple(level_size):
            raise ValueError(f'branch {branch!r} level {lvl}: feature size '
                             f'{tuple(f_t.shape[2:])} != level_sizes {level_size}')

    def extra_repr(self) -> str:
        return (f'semantics={self.semantics!r}, alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, delta={self.delta}, '
                f'tau={self.tau}, k={self.k}, xi_cls={self.xi_cls}, xi_reg={self.xi_reg}, '
                f'level_weights={self.level_weights}, candidates={self.candidates!r}, '
                f'branches={self.branches}, fg_strategy={self.fg_strategy!r}')
