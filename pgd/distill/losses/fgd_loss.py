"""FGD: Focal and Global Distillation (Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022), on the FPN neck outputs — the baseline PGD builds on.

Per FPN level l, image b, with teacher features T (B, C, H, W), student features S aligned to the
teacher width by an optional 1x1 conv (only when the widths differ), and the FGD attention maps
of :mod:`pgd.distill.attention` (temperature ``temp``)::

    A^S(F) = H W softmax_hw(mean_c |F| / temp)      (B, 1, H, W)   spatial_attention_fgd
    A^C(F) = C   softmax_c (mean_hw |F| / temp)     (B, C, 1, 1)   channel_attention_pooled

Masks (the public code's, boxes mapped onto the level's grid with its stride s)::

    cells of GT g:  floor(x1/s) <= j <= ceil(x2/s),  floor(y1/s) <= i <= ceil(y2/s)
    S_g = 1 / (h_g * w_g),  h_g = ceil(y2/s) - floor(y1/s) + 1,  w_g likewise   (size in cells)
    M[i, j]  = max over the GTs covering (i, j) of S_g        (0 elsewhere)      # fg, scale mask
    N[i, j]  = [M[i, j] == 0] / sum_{i,j} [M == 0]            (per image)        # bg, normalised

(``inclusive_end=True``, the public code's inclusive ``ceil`` end; ``inclusive_end=False`` marks
only the cells the box overlaps, ``floor(x1/s) <= j < ceil(x2/s)``, and uses that count.)

Losses (summed over the batch then divided by the batch size B, as the public code, which makes
them the per-image mean; each summed over levels)::

    L_fg  = 1/B sum_{b,c,i,j} M A^S(T) A^C(T) (S - T)^2
    L_bg  = 1/B sum_{b,c,i,j} N A^S(T) A^C(T) (S - T)^2
    L_at  = 1/B ( sum_{b,c} |A^C(S) - A^C(T)| + sum_{b,i,j} |A^S(S) - A^S(T)| )
    L_gl  = 1/B sum_{b,c,i,j} (GC_s(S) - GC_t(T))^2
    GC(F) = F + W2 ReLU(LN(W1 sum_{hw} softmax_hw(W_k F) F))     (GcBlock: context modelling +
                                                                  channel-add transform)
    loss_fgd_fg = alpha L_fg, loss_fgd_bg = beta L_bg, loss_fgd_att = gamma L_at,
    loss_fgd_global = lambda L_gl

``GC_s`` and ``GC_t`` are two separate GcBlocks per level (student / teacher), trainable modules
of this loss (they are in the optimiser through the loss module's parameters); the teacher block
runs on the detached teacher features. As in GCNet/FGD, ``W_k`` is Kaiming-initialised and the
last conv of the channel-add transform is zero-initialised, so ``GC(F) = F`` at start.

Defaults (FGD public configs, see :data:`FGD_PRESETS`): RetinaNet-type heads (also used for
GFL/ATSS/DDOD — assumption: no public FGD config for those) ``temp=0.5, alpha=1e-3, beta=5e-4,
gamma=5e-4, lambda=5e-6``; FCOS (also AutoAssign — assumption) ``temp=0.8, alpha=1.6e-3,
beta=8e-4, gamma=8e-4, lambda=8e-6``; Faster R-CNN ``temp=0.5, 5e-5, 2.5e-5, 5e-5, 5e-7``.
Deviation from the public code: boxes are mapped with the level stride on the padded batch
(the public code scales by ``img_shape`` / feature size, which is off when the batch is padded).

Shapes: ``batch.student.neck[l]`` (B, C_s, H_l, W_l), ``batch.teacher.neck[l]``
(B, C_t, H_l, W_l), masks (B, H_l, W_l), ``batch.gt_bboxes`` (B, G, 4).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from torch import Tensor

from ..attention import channel_attention_pooled, spatial_attention_fgd
from ..inputs import DistillBatch

#: Per-detector FGD hyper-parameters (public FGD configs; gfl/atss/ddod/autoassign assumed).
FGD_PRESETS = {
    'retinanet': dict(temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
    'gfl': dict(temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
    'atss': dict(temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
    'ddod': dict(temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
    'fcos': dict(temp=0.8, alpha_fgd=1.6e-3, beta_fgd=8e-4, gamma_fgd=8e-4, lambda_fgd=8e-6),
    'autoassign': dict(temp=0.8, alpha_fgd=1.6e-3, beta_fgd=8e-4, gamma_fgd=8e-4,
                       lambda_fgd=8e-6),
    'faster_rcnn': dict(temp=0.5, alpha_fgd=5e-5, beta_fgd=2.5e-5, gamma_fgd=5e-5,
                        lambda_fgd=5e-7),
}


def fgd_masks(gt_bboxes: Tensor, gt_valid: Tensor, size: Tuple[int, int], stride: float,
              inclusive_end: bool = True) -> Tuple[Tensor, Tensor]:
    """FGD foreground (scale) and normalised background masks of one level.

    Args:
        gt_bboxes: (B, G, 4) padded boxes (xyxy, pixels); gt_valid: (B, G) bool.
        size: (H, W) of the level; stride: its stride in pixels.

    Returns:
        fg: (B, H, W) max over covering GTs of 1 / (h_cells * w_cells), 0 elsewhere.
        bg: (B, H, W) [fg == 0] / count per image (all zero if the image has no bg cell).
    """
    h, w = size
    boxes = gt_bboxes.float()
    x1 = torch.floor(boxes[..., 0] / stride)
    y1 = torch.floor(boxes[..., 1] / stride)
    x2 = torch.ceil(boxes[..., 2] / stride)
    y2 = torch.ceil(boxes[..., 3] / stride)
    if not inclusive_end:
        x2 = torch.maximum(x2 - 1, x1)
        y2 = torch.maximum(y2 - 1, y1)
    area = 1.0 / ((x2 - x1 + 1) * (y2 - y1 + 1))  # (B, G)
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
    in_x = (xs >= x1[..., None]) & (xs <= x2[..., None])  # (B, G, W)
    in_y = (ys >= y1[..., None]) & (ys <= y2[..., None])  # (B, G, H)
    cover = in_y[..., :, None] & in_x[..., None, :] & gt_valid[..., None, None]
    fg = (cover.to(boxes.dtype) * area[..., None, None]).amax(dim=1)  # (B, H, W)
    bg = (fg <= 0).to(boxes.dtype)
    bg = bg / bg.flatten(1).sum(1).clamp(min=1.)[:, None, None]
    return fg, bg


class GcBlock(nn.Module):
    """Global context block (GCNet): attention pooling + channel-add transform."""

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        hidden = max(int(channels * ratio), 1)
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1))
        nn.init.kaiming_normal_(self.conv_mask.weight, mode='fan_in', nonlinearity='relu')
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        weights = torch.softmax(self.conv_mask(x).reshape(b, 1, h * w), dim=2)  # (B, 1, HW)
        context = torch.bmm(x.reshape(b, c, h * w), weights.transpose(1, 2))  # (B, C, 1)
        return x + self.channel_add(context.reshape(b, c, 1, 1))


@MODELS.register_module()
class FGDLoss(nn.Module):
    """Focal (fg/bg + attention) and global (GcBlock relation) distillation on FPN features.

    Args:
        student_channels / teacher_channels: FPN widths (1x1 align conv when they differ).
        num_levels: number of FPN levels (separate align conv / GcBlocks per level, as the
            public code's one ``FeatureLoss`` per FPN output).
        temp, alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd: hyper-parameters; ``None`` takes
            them from ``FGD_PRESETS[preset]`` (default preset ``'retinanet'``: 0.5, 1e-3,
            5e-4, 5e-4, 5e-6).
        preset: key of :data:`FGD_PRESETS`.
        inclusive_end: public-code box-to-cell mapping (see module docstring).

    Returns (forward): ``{'loss_fgd_fg', 'loss_fgd_bg', 'loss_fgd_att', 'loss_fgd_global'}``.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 num_levels: int = 5,
                 temp: Optional[float] = None,
                 alpha_fgd: Optional[float] = None,
                 beta_fgd: Optional[float] = None,
                 gamma_fgd: Optional[float] = None,
                 lambda_fgd: Optional[float] = None,
                 preset: str = 'retinanet',
                 inclusive_end: bool = True) -> None:
        super().__init__()
        if preset not in FGD_PRESETS:
            raise KeyError(f'unknown FGD preset {preset!r}; choose from {sorted(FGD_PRESETS)}')
        p = FGD_PRESETS[preset]
        self.temp = p['temp'] if temp is None else temp
        self.alpha_fgd = p['alpha_fgd'] if alpha_fgd is None else alpha_fgd
        self.beta_fgd = p['beta_fgd'] if beta_fgd is None else beta_fgd
        self.gamma_fgd = p['gamma_fgd'] if gamma_fgd is None else gamma_fgd
        self.lambda_fgd = p['lambda_fgd'] if lambda_fgd is None else lambda_fgd
        self.inclusive_end = inclusive_end
        self.num_levels = num_levels
        if student_channels != teacher_channels:
            self.align = nn.ModuleList([
                nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
                for _ in range(num_levels)])
        else:
            self.align = None
        self.gc_student = nn.ModuleList([GcBlock(teacher_channels) for _ in range(num_levels)])
        self.gc_teacher = nn.ModuleList([GcBlock(teacher_channels) for _ in range(num_levels)])

    @torch.no_grad()
    def get_masks(self, batch: DistillBatch) -> List[Tuple[Tensor, Tensor]]:
        n = min(len(batch.level_sizes), self.num_levels)
        return [fgd_masks(batch.gt_bboxes, batch.gt_valid, tuple(size), float(stride),
                          self.inclusive_end)
                for size, stride in zip(batch.level_sizes[:n], batch.strides[:n])]

    def forward(self, batch: DistillBatch) -> Dict[str, Tensor]:
        n = min(len(batch.student.neck), self.num_levels)
        masks = self.get_masks(batch)
        num_img = max(batch.num_images, 1)
        fg_loss = bg_loss = att_loss = gl_loss = 0.
        for lvl in range(n):
            s = batch.student.neck[lvl]
            if self.align is not None:
                s = self.align[lvl](s)
            t = batch.teacher.neck[lvl].detach()
            t_sa = spatial_attention_fgd(t, self.temp)
            t_ca = channel_attention_pooled(t, self.temp)
            s_sa = spatial_attention_fgd(s, self.temp)
            s_ca = channel_attention_pooled(s, self.temp)
            fg, bg = masks[lvl]
            err = ((s - t) ** 2 * t_ca).sum(dim=1) * t_sa[:, 0]  # (B, H, W)
            fg_loss = fg_loss + (err * fg).sum() / num_img
            bg_loss = bg_loss + (err * bg).sum() / num_img
            att_loss = att_loss + ((s_ca - t_ca).abs().sum() + (s_sa - t_sa).abs().sum()) / num_img
            gl_loss = gl_loss + ((self.gc_student[lvl](s) - self.gc_teacher[lvl](t)) ** 2
                                 ).sum() / num_img
        return {'loss_fgd_fg': self.alpha_fgd * fg_loss,
                'loss_fgd_bg': self.beta_fgd * bg_loss,
                'loss_fgd_att': self.gamma_fgd * att_loss,
                'loss_fgd_global': self.lambda_fgd * gl_loss}
