"""FKD: attention-guided and non-local distillation (Zhang & Ma, "Improve Object Detection with
Feature-based Knowledge Distillation: Towards Accurate and Efficient Detectors", ICLR 2021), on
the FPN neck outputs.

Attention of a feature map F (B, C, H, W) with temperature T (the FGD-style maps of
:mod:`pgd.distill.attention`, ``spatial_attention_fgd`` / ``channel_attention_pooled``)::

    A^S(F) = H * W * softmax_{hw}( mean_c |F| / T )        # spatial, (B, 1, H, W)
    A^C(F) = C     * softmax_{c} ( mean_hw |F| / T )       # channel, (B, C, 1, 1)

Per level l (``a_l`` = 1x1 adaptation conv student -> teacher width, as the public code's
``adaptation_layers``)::

    M^S = stopgrad((A^S(T_l) + r * A^S(S_l)) / (1 + r))    # teacher AND student, averaged
    M^C = stopgrad((A^C(T_l) + r * A^C(S_l)) / (1 + r))    # (r = student ratio = 1)
    L_feat  = ( sum_{b,c,h,w} (T_l - a_l(S_l))^2 * M^S * M^C )^(1/2)           # masked L2 norm
    L_nl    = || n_l(NL^s_l(S_l)) - NL^t_l(T_l) ||_2        (relation_loss='l2', public code)
              or mean (n_l(NL^s_l(S_l)) - NL^t_l(T_l))^2     (relation_loss='mse')
    loss_fkd_feat     = feat_weight     * sum_l L_feat
    loss_fkd_nonlocal = nonlocal_weight * sum_l L_nl

Attention-transfer term, two selectable forms (``attention_term``):

* ``'code'`` (default; the official code, ``SingleStageDetector.forward_train`` of the
  one-stage detector file ``mmdet/models/detectors/single_stage.py`` of the supplementary
  material): L2 distances between the teacher's pooled features and the *adapted* pooled student
  features, with ``ca_l`` = ``nn.Linear(C_s, C_t)`` (``channel_wise_adaptation``) and ``sa_l`` =
  ``nn.Conv2d(1, 1, 3, padding=1)`` (``spatial_wise_adaptation``), one each per level,
  PyTorch's default init (the official code does not re-initialise them); the pools are plain
  means (no ``|.|``, unlike the attention masks)::

      L_ch = || mean_hw(T_l) - ca_l(mean_hw(S_l)) ||_2      # over (B, C_t): torch.dist
      L_sp = || mean_c(T_l)  - sa_l(mean_c(S_l))  ||_2      # over (B, 1, H, W): torch.dist
      loss_fkd_channel = at_weight * sum_l L_ch              # official ``kd_channel_loss``
      loss_fkd_spatial = at_weight * sum_l L_sp              # official ``kd_spatial_loss``

* ``'paper'`` (the paper's text, its attention-transfer loss): L1 between the teacher's and the
  student's spatial and channel attention maps (mean reduction), with the code's weight
  (an assumption: the weight was tuned for the code's form)::

      L_at = mean_{b,h,w} |A^S(T_l) - A^S(S_l)| + mean_{b,c} |A^C(T_l) - A^C(S_l)|
      loss_fkd_att = at_weight * sum_l L_at

``NL`` is the public code's non-local block (embedded dot product, f / N normalisation, ``g``
and ``phi`` max-pooled by ``downsample`` (8, 4, 2, 2, 2 for P3..P7, clipped to the map size),
inter channels (64, 64, C/2, C/2, C/2), output ``W`` = 1x1 conv + BN initialised to zero so that
``NL(x) = x`` at start). The student block works at the student width and is followed by the 1x1
adaptation ``n_l``; the teacher block runs on the (detached) teacher features. Both blocks and
all adaptation layers (``adapt``, ``nl_adapt`` and, with ``attention_term='code'``,
``channel_adapt`` / ``spatial_adapt``) are trainable modules of this loss: the loss modules are
submodules of the distiller, so their parameters are in the optimiser.

When the student and teacher widths differ, ``A^S(S)``/``A^C(S)`` are computed on ``a_l(S_l)``
(the channel attentions must have the teacher's C); with equal widths they use ``S_l`` as the
public code does.

Weights, temperature and what differs from the paper's text (documented choice):

* The public code hard-codes its weights and temperature and they differ from the values stated
  in the paper's text; we use the **public code's** values: temperature ``T = 0.1`` (spatial and
  channel), student ratio ``r = 1``, feature weight ``7e-5 * 6 = 4.2e-4``, attention-transfer
  weight ``4e-3 * 6 = 2.4e-2`` and non-local weight ``7e-5 * 6 = 4.2e-4`` (the ``* 7e-5 * 6``
  / ``* 4e-3 * 6`` factors of the public one-stage code, ``preset='one_stage'``, default).
  The two-stage / MMRazor FBKD values (7e-5, 4e-3, 7e-5) are ``preset='two_stage'``.
* Attention transfer: the public code replaces the paper's L1 between attention maps by L2
  distances between adapted pooled features; the **code's** form is the default
  (``attention_term='code'``) and the paper's L1 form is ``attention_term='paper'`` (above).
* The feature and non-local terms are L2 *norms* over the whole batch, as in the public code
  (``torch.sum(diff) ** 0.5`` / ``torch.dist``); this is the public code's explicit batch
  normalisation and is not a per-image mean. ``relation_loss='mse'`` gives the per-element MSE
  instead (the weights above were tuned for the norm, so rescale if you switch).

Sources: the official GitHub repository (ArchipLab-LinfengZhang/
Object-Detection-Knowledge-Distillation-ICLR2021) holds only a README that points to the code in
the OpenReview supplementary material (openreview.net/attachment?id=uKhGRvM8QNH&
name=supplementary_material). The constants above (T = 0.1 and ratio 1 as ``t``/``c_t`` and
``s_ratio``/``c_s_ratio``; ``* 7e-5 * 6`` on ``kd_feat_loss`` and ``kd_nonlocal_loss``;
``* 4e-3 * 6`` on ``kd_channel_loss`` and ``kd_spatial_loss``; ``adaptation_layers`` 1x1 conv;
``channel_wise_adaptation`` Linear; ``spatial_wise_adaptation`` 3x3 conv 1 -> 1; non-local
``inter_channels=64, downsample_stride=8`` / ``64, 4`` on the first two levels, defaults
(C/2, 2) on the others) are those of that one-stage file as reproduced verbatim in public
MMDetection forks.

Shapes: ``batch.student.neck[l]`` (B, C_s, H_l, W_l), ``batch.teacher.neck[l]``
(B, C_t, H_l, W_l); pooled features: channel (B, C), spatial (B, 1, H_l, W_l).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from ..attention import channel_attention_pooled, spatial_attention_fgd
from ..inputs import DistillBatch

#: Public-code weights (feature, attention transfer, non-local).
FKD_PRESETS = {
    'one_stage': dict(feat_weight=7e-5 * 6, at_weight=4e-3 * 6, nonlocal_weight=7e-5 * 6),
    'two_stage': dict(feat_weight=7e-5, at_weight=4e-3, nonlocal_weight=7e-5),
}

#: Public-code non-local settings per FPN level (P3..P7): (inter channels, max-pool stride).
_NL_INTER = (64, 64, None, None, None)
_NL_DOWNSAMPLE = (8, 4, 2, 2, 2)


class NonLocalBlock2d(nn.Module):
    """Non-local block of the FKD public code (embedded dot product, ``f / N``).

    ``z = W(y) + x`` with ``y = (theta(x)^T phi(x) / N) g(x)``; ``phi`` and ``g`` are followed
    by a ``downsample`` x ``downsample`` max-pool (clipped to the map size); ``W`` is a 1x1
    conv + BatchNorm whose affine parameters start at zero (running statistics are used for a
    map with a single value per channel, where batch statistics are undefined).
    """

    def __init__(self, channels: int, inter_channels: Optional[int] = None,
                 downsample: int = 2) -> None:
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(channels // 2, 1)
        self.inter_channels = inter
        self.downsample = downsample
        self.g = nn.Conv2d(channels, inter, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.constant_(self.W[1].weight, 0)
        nn.init.constant_(self.W[1].bias, 0)

    def _pool(self, x: Tensor) -> Tensor:
        k = min(self.downsample, x.shape[-2], x.shape[-1])
        return F.max_pool2d(x, kernel_size=k, stride=k) if k > 1 else x

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        g_x = self._pool(self.g(x)).flatten(2).transpose(1, 2)  # (B, M, I)
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, I)
        phi_x = self._pool(self.phi(x)).flatten(2)  # (B, I, M)
        f = torch.matmul(theta_x, phi_x)
        f = f / f.shape[-1]
        y = torch.matmul(f, g_x).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        conv, bn = self.W
        y = conv(y)
        if self.training and b * h * w == 1:
            # BatchNorm cannot use batch statistics of a single value (e.g. a 1x1 P7 map with
            # one image): fall back to its running statistics for this call.
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                             training=False, eps=bn.eps)
        else:
            y = bn(y)
        return y + x


@MODELS.register_module()
class FKDLoss(nn.Module):
    """Attention-guided + non-local feature distillation (see module docstring).

    Args:
        student_channels / teacher_channels: FPN widths.
        num_levels: number of FPN levels (one adaptation conv / non-local pair each).
        temperature: attention temperature (0.1, public code; spatial and channel).
        student_ratio: weight r of the student attention in the mask (1.0, public code).
        feat_weight / at_weight / nonlocal_weight: loss weights; default from
            ``FKD_PRESETS[preset]`` (``'one_stage'``: 4.2e-4 / 2.4e-2 / 4.2e-4).
        preset: key of :data:`FKD_PRESETS`.
        nonlocal_inter_channels / nonlocal_downsample: per level non-local settings
            (default: public code, (64, 64, C/2, C/2, C/2) and (8, 4, 2, 2, 2)).
        relation_loss: 'l2' (public code: L2 norm) or 'mse'.
        attention_term: 'code' (default, official code: L2 between teacher pooled features and
            Linear / 3x3-conv adapted student pooled features) or 'paper' (L1 between attention
            maps).

    Returns (forward): ``{'loss_fkd_feat', 'loss_fkd_channel', 'loss_fkd_spatial',
    'loss_fkd_nonlocal'}`` scalars with ``attention_term='code'``; ``loss_fkd_att`` replaces
    ``loss_fkd_channel`` + ``loss_fkd_spatial`` with ``attention_term='paper'``.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 num_levels: int = 5,
                 temperature: float = 0.1,
                 student_ratio: float = 1.0,
                 feat_weight: Optional[float] = None,
                 at_weight: Optional[float] = None,
                 nonlocal_weight: Optional[float] = None,
                 preset: str = 'one_stage',
                 nonlocal_inter_channels: Optional[Sequence[Optional[int]]] = None,
                 nonlocal_downsample: Optional[Sequence[int]] = None,
                 relation_loss: str = 'l2',
                 attention_term: str = 'code') -> None:
        super().__init__()
        if attention_term not in ('code', 'paper'):
            raise ValueError(f'attention_term must be "code" or "paper", got {attention_term!r}')
        self.attention_term = attention_term
        if preset not in FKD_PRESETS:
            raise KeyError(f'unknown FKD preset {preset!r}; choose from {sorted(FKD_PRESETS)}')
        if relation_loss not in ('l2', 'mse'):
            raise ValueError(f'relation_loss must be "l2" or "mse", got {relation_loss!r}')
        w = FKD_PRESETS[preset]
        self.feat_weight = w['feat_weight'] if feat_weight is None else feat_weight
        self.at_weight = w['at_weight'] if at_weight is None else at_weight
        self.nonlocal_weight = w['nonlocal_weight'] if nonlocal_weight is None else nonlocal_weight
        self.temperature = temperature
        self.student_ratio = student_ratio
        self.relation_loss = relation_loss
        self.num_levels = num_levels
        self.same_width = student_channels == teacher_channels

        def level_cfg(seq, default, i):
            if seq is not None:
                return seq[i] if i < len(seq) else seq[-1]
            return default[i] if i < len(default) else default[-1]

        self.adapt = nn.ModuleList()
        self.student_nl = nn.ModuleList()
        self.teacher_nl = nn.ModuleList()
        self.nl_adapt = nn.ModuleList()
        for i in range(num_levels):
            inter = level_cfg(nonlocal_inter_channels, _NL_INTER, i)
            ds = level_cfg(nonlocal_downsample, _NL_DOWNSAMPLE, i)
            self.adapt.append(nn.Conv2d(student_channels, teacher_channels, 1))
            self.student_nl.append(NonLocalBlock2d(student_channels, inter, ds))
            self.teacher_nl.append(NonLocalBlock2d(teacher_channels, inter, ds))
            self.nl_adapt.append(nn.Conv2d(student_channels, teacher_channels, 1))
        if attention_term == 'code':  # only built when used (no unused DDP parameters)
            self.channel_adapt = nn.ModuleList(
                [nn.Linear(student_channels, teacher_channels) for _ in range(num_levels)])
            self.spatial_adapt = nn.ModuleList(
                [nn.Conv2d(1, 1, 3, padding=1) for _ in range(num_levels)])

    def _code_attention(self, lvl: int, s_raw: Tensor, t: Tensor):
        """Official-code attention term of one level: (L_ch, L_sp), L2 norms over the batch."""
        ch = torch.linalg.vector_norm(
            t.mean(dim=(2, 3)) - self.channel_adapt[lvl](s_raw.mean(dim=(2, 3))))
        sp = torch.linalg.vector_norm(
            t.mean(dim=1, keepdim=True) - self.spatial_adapt[lvl](s_raw.mean(dim=1, keepdim=True)))
        return ch, sp

    def forward(self, batch: DistillBatch) -> Dict[str, Tensor]:
        n = min(len(batch.student.neck), self.num_levels)
        temp, r = self.temperature, self.student_ratio
        feat_loss = at_loss = ch_loss = sp_loss = nl_loss = 0.
        for lvl in range(n):
            s_raw = batch.student.neck[lvl]
            t = batch.teacher.neck[lvl].detach()
            s = self.adapt[lvl](s_raw)
            s_att_src = s_raw if self.same_width else s
            t_sa = spatial_attention_fgd(t, temp)
            t_ca = channel_attention_pooled(t, temp)
            s_sa = spatial_attention_fgd(s_att_src, temp)
            s_ca = channel_attention_pooled(s_att_src, temp)
            m_s = ((t_sa + r * s_sa) / (1. + r)).detach()
            m_c = ((t_ca + r * s_ca) / (1. + r)).detach()
            # masked L2 norm; vector_norm has a safe (zero) subgradient at 0
            feat_loss = feat_loss + torch.linalg.vector_norm((t - s) * torch.sqrt(m_s * m_c))
            if self.attention_term == 'code':
                ch, sp = self._code_attention(lvl, s_raw, t)
                ch_loss = ch_loss + ch
                sp_loss = sp_loss + sp
            else:
                at_loss = at_loss + (t_sa - s_sa).abs().mean() + (t_ca - s_ca).abs().mean()
            s_rel = self.nl_adapt[lvl](self.student_nl[lvl](s_raw))
            t_rel = self.teacher_nl[lvl](t)
            if self.relation_loss == 'l2':
                nl_loss = nl_loss + torch.linalg.vector_norm(s_rel - t_rel)
            else:
                nl_loss = nl_loss + F.mse_loss(s_rel, t_rel)
        out = {'loss_fkd_feat': self.feat_weight * feat_loss}
        if self.attention_term == 'code':
            out['loss_fkd_channel'] = self.at_weight * ch_loss
            out['loss_fkd_spatial'] = self.at_weight * sp_loss
        else:
            out['loss_fkd_att'] = self.at_weight * at_loss
        out['loss_fkd_nonlocal'] = self.nonlocal_weight * nl_loss
        return out
