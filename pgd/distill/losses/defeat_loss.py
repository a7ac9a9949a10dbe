"""DeFeat: decoupled foreground/background feature imitation (Guo et al., "Distilling Object
Detectors via Decoupled Features", CVPR 2021), on the FPN neck outputs.

GT mask (authors' public code, ``AnchorHead.get_gt_mask`` + ``_map_roi_levels``)::

    scale_g = sqrt((w_g + 1) * (h_g + 1))
    level_g = clamp(floor(log2(scale_g / finest_scale + 1e-6)), 0, L - 1)    # finest_scale = 56
    on level l (stride s_l) GT g marks the cells
        floor(y1/s) <= i < max(floor(y2/s), floor(y1/s) + 1),
        floor(x1/s) <= j < max(floor(x2/s), floor(x1/s) + 1)        (clipped to the grid)
    M_l = OR over the GTs with level_g == l;  background = 1 - M_l

i.e. each GT is distilled only on the FPN level it is assigned to (FPN/RoI-extractor level
mapping with MMDetection's ``finest_scale=56`` applied to the detector's first FPN level).

Loss (public code ``batch_processor_kd``, 'neck-decouple,pixel-wise', with the adaptation conv
``a_l`` = 3x3 student -> teacher width, weights initialised N(0,1).fmod(2) * 1e-4)::

    D_l            = (a_l(S_l) - T_l)^2                                  # (B, C, H, W)
    loss_defeat_fg = w_fg / L * sum_l sum(M_l * D_l)       / max(1, 2 * C * sum(M_l))
    loss_defeat_bg = w_bg / L * sum_l sum((1 - M_l) * D_l) / max(1, 2 * C * sum(1 - M_l))

i.e. the normaliser counts channels (2 * N_fg * C, the factor 2 of the public code kept) and the
level losses are averaged over levels. ``normalize='batch'`` (default, public code) sums the
counts over the images of the batch; ``normalize='image'`` normalises each image by its own
counts and averages over images (batch-mixing free).

Shapes: ``batch.student.neck[l]`` (B, C_s, H_l, W_l), ``batch.teacher.neck[l]``
(B, C_t, H_l, W_l), masks (B, H_l, W_l).

Defaults and their source: ``fg_weight = 3`` (``hint_neck_w``) and ``bg_weight = 12``
(``hint_neck_back_w``) from the only public DeFeat config
(``configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py``, Faster R-CNN on VOC; no
decay schedule is enabled there). The paper's RetinaNet weights are not in the public code; the
PGD paper says competitor hyper-parameters follow the papers / public code, so these values are
an assumption for the dense detectors (adjust via config). Boxes are (x1, y1, x2, y2) in pixels
of the padded batch; the public code's degenerate-box rule (a box narrower than one cell marks a
single cell) is generalised to marking at least one row / column in each direction.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from torch import Tensor

from ..inputs import DistillBatch


def defeat_level_assignment(gt_bboxes: Tensor, num_levels: int,
                            finest_scale: float = 56.) -> Tensor:
    """(B, G) FPN level index of every GT (public DeFeat ``_map_roi_levels``)."""
    w = (gt_bboxes[..., 2] - gt_bboxes[..., 0]).clamp(min=0)
    h = (gt_bboxes[..., 3] - gt_bboxes[..., 1]).clamp(min=0)
    scale = torch.sqrt((w + 1) * (h + 1))
    lvl = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return lvl.clamp(min=0, max=num_levels - 1).long()


def box_cell_mask(gt_bboxes: Tensor, size, stride: float) -> Tensor:
    """(B, G, H, W) bool: cells [floor(x1/s), max(floor(x2/s), floor(x1/s)+1)) x same for y."""
    h, w = size
    x1 = torch.floor(gt_bboxes[..., 0] / stride).clamp(0, w - 1)
    y1 = torch.floor(gt_bboxes[..., 1] / stride).clamp(0, h - 1)
    x2 = torch.floor(gt_bboxes[..., 2] / stride).clamp(max=w)
    y2 = torch.floor(gt_bboxes[..., 3] / stride).clamp(max=h)
    x2 = torch.maximum(x2, x1 + 1)
    y2 = torch.maximum(y2, y1 + 1)
    xs = torch.arange(w, device=gt_bboxes.device, dtype=gt_bboxes.dtype)
    ys = torch.arange(h, device=gt_bboxes.device, dtype=gt_bboxes.dtype)
    in_x = (xs >= x1[..., None]) & (xs < x2[..., None])  # (B, G, W)
    in_y = (ys >= y1[..., None]) & (ys < y2[..., None])  # (B, G, H)
    return in_y[..., :, None] & in_x[..., None, :]


def defeat_masks(gt_bboxes: Tensor, gt_valid: Tensor, level_sizes, strides,
                 finest_scale: float = 56.) -> List[Tensor]:
    """Per level (B, H_l, W_l) bool foreground masks (each GT only on its assigned level)."""
    n = len(level_sizes)
    boxes = gt_bboxes.float()
    lvl = defeat_level_assignment(boxes, n, finest_scale)
    masks = []
    for l, (size, stride) in enumerate(zip(level_sizes, strides)):
        sel = gt_valid & (lvl == l)  # (B, G)
        cells = box_cell_mask(boxes, size, float(stride)) & sel[..., None, None]
        masks.append(cells.any(dim=1))
    return masks


@MODELS.register_module()
class DeFeatLoss(nn.Module):
    """Decoupled fg / bg feature imitation (see module docstring for formula and sources).

    Args:
        student_channels / teacher_channels: FPN widths.
        num_levels: number of FPN levels (one adaptation conv each).
        fg_weight: foreground loss weight (public config ``hint_neck_w`` = 3).
        bg_weight: background loss weight (public config ``hint_neck_back_w`` = 12).
        finest_scale: canonical scale of the level assignment (56, public code).
        adapt_kernel: adaptation conv kernel (3, public code ``neck-adapt``).
        adapt_init_std: std of the truncated-normal adaptation init (1e-4, public code); None
            keeps PyTorch's default init.
        normalize: 'batch' (public code) or 'image'.

    Returns (forward): ``{'loss_defeat_fg': scalar, 'loss_defeat_bg': scalar}``.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 num_levels: int = 5,
                 fg_weight: float = 3.0,
                 bg_weight: float = 12.0,
                 finest_scale: float = 56.,
                 adapt_kernel: int = 3,
                 adapt_init_std: Optional[float] = 1e-4,
                 normalize: str = 'batch') -> None:
        super().__init__()
        if normalize not in ('batch', 'image'):
            raise ValueError(f'normalize must be "batch" or "image", got {normalize!r}')
        self.fg_weight = fg_weight
        self.bg_weight = bg_weight
        self.finest_scale = finest_scale
        self.normalize = normalize
        self.num_levels = num_levels
        self.adapt = nn.ModuleList([
            nn.Conv2d(student_channels, teacher_channels, adapt_kernel, padding=adapt_kernel // 2)
            for _ in range(num_levels)
        ])
        if adapt_init_std is not None:
            with torch.no_grad():
                for conv in self.adapt:
                    conv.weight.normal_().fmod_(2).mul_(adapt_init_std)

    @torch.no_grad()
    def get_masks(self, batch: DistillBatch) -> List[Tensor]:
        n = min(len(batch.level_sizes), self.num_levels)
        return defeat_masks(batch.gt_bboxes, batch.gt_valid, batch.level_sizes[:n],
                            batch.strides[:n], self.finest_scale)

    def _reduce(self, err: Tensor, mask: Tensor, channels: int) -> Tensor:
        """err (B, H, W) channel-summed squared error, mask (B, H, W) float."""
        num = (err * mask).flatten(1).sum(1)  # (B,)
        cnt = mask.flatten(1).sum(1) * channels * 2.
        if self.normalize == 'batch':
            return num.sum() / cnt.sum().clamp(min=1.)
        return (num / cnt.clamp(min=1.)).mean()

    def forward(self, batch: DistillBatch) -> Dict[str, Tensor]:
        n = min(len(batch.student.neck), self.num_levels)
        masks = self.get_masks(batch)
        fg = bg = 0.
        for lvl in range(n):
            s = self.adapt[lvl](batch.student.neck[lvl])
            t = batch.teacher.neck[lvl].detach()
            err = ((s - t) ** 2).sum(dim=1)
            m = masks[lvl].to(err.dtype)
            fg = fg + self._reduce(err, m, t.shape[1])
            bg = bg + self._reduce(err, 1. - m, t.shape[1])
        return {'loss_defeat_fg': self.fg_weight * fg / n,
                'loss_defeat_bg': self.bg_weight * bg / n}
