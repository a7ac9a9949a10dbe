"""DeFeat: decoupled foreground/background distillation (Guo et al., "Distilling Object
Detectors via Decoupled Features", CVPR 2021) for dense detectors: the decoupled FPN feature
imitation (neck term) and the decoupled classification-score KD (head term).

Official code: github.com/ggjy/DeFeat.pytorch (an MMDetection 2.0 fork). ``train.py`` below
means ``mmdet/apis/train.py``, the config means
``configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py`` (the only public DeFeat
config: Faster R-CNN R101 -> R50 on VOC).

GT mask (official ``AnchorHead.get_gt_mask`` + ``_map_roi_levels``)::

    scale_g = sqrt((w_g + 1) * (h_g + 1))
    level_g = clamp(floor(log2(scale_g / finest_scale + 1e-6)), 0, L - 1)    # finest_scale = 56
    on level l (stride s_l) GT g marks the cells
        floor(y1/s) <= i < max(floor(y2/s), floor(y1/s) + 1),
        floor(x1/s) <= j < max(floor(x2/s), floor(x1/s) + 1)        (clipped to the grid)
    M_l = OR over the GTs with level_g == l;  background = 1 - M_l

i.e. each GT is distilled only on the FPN level it is assigned to (FPN/RoI-extractor level
mapping with MMDetection's ``finest_scale=56`` applied to the detector's first FPN level).

Neck term (official ``batch_processor_kd``, train.py lines 299-347, enabled by the config's
type string 'neck-adapt,neck-decouple,mask-neck-gt,pixel-wise', line 6; adaptation conv ``a_l``
= 3x3 student -> teacher width, no activation, weights initialised N(0,1).fmod(2) * 1e-4,
official ``mmdet/models/detectors/two_stage_kd.py`` lines 50-61 and 99-101; mask:
``mmdet/models/dense_heads/anchor_head.py`` ``_map_roi_levels`` line 168, ``get_gt_mask`` line
262)::

    D_l            = (a_l(S_l) - T_l)^2                                  # (B, C, H, W)
    loss_defeat_fg = w_fg / L * sum_l sum(M_l * D_l)       / max(1, 2 * C * sum(M_l))
    loss_defeat_bg = w_bg / L * sum_l sum((1 - M_l) * D_l) / max(1, 2 * C * sum(1 - M_l))

i.e. the normaliser counts channels (2 * N_fg * C, the factor 2 of the official code kept) and
the level losses are averaged over levels. ``normalize='batch'`` (default, official code) sums
the counts over the images of the batch; ``normalize='image'`` normalises each image by its own
counts and averages over images (batch-mixing free).

Head term (official ``KLDivergenceLoss``, train.py lines 88-103, used by the 'KL-decouple' branch,
lines 262-266, weighted at lines 282 and 293-297). The official code distils the RoI head's
softmax class scores (C + 1 classes incl. background) of the sampled RoIs; fg RoIs are those
assigned to a GT (``labels < labels.max()``, i.e. not the background label), bg RoIs the rest::

    KL_r         = sum_k softmax(t_r / T)_k * (log softmax(t_r / T)_k - log softmax(s_r / T)_k)
    loss_hcls    = w_hfg * T^2 * sum_{r fg} KL_r / #fg      (0 if there is no fg RoI)
    loss_hcls_bk = w_hbg * T^2 * sum_{r bg} KL_r / #bg

with all RoIs of the batch pooled (one sum, one count), the teacher frozen.

Dense analogue implemented here: the "rows" are the predictions (location, anchor) of every
FPN level; fg rows are the locations inside the GT mask ``M_l`` above (the same per-level mask
as the neck term, all A anchors of a location share it), bg rows the rest; ``t`` / ``s`` are the
teacher's / student's raw class logits (``batch.teacher_cls_logits[l]`` /
``batch.student_cls_logits[l]``, (B, A*C, H_l, W_l), channel a*C + c)::

    head_kl='sigmoid' (default): the heads are sigmoid classifiers without a background class,
        so each class is its own two-way distribution {c, not c}; the official softmax KL over
        that pair is the Bernoulli KL, summed over the C classes:
        KL_r = sum_c [ p_c (log p_c - log q_c) + (1 - p_c) (log(1 - p_c) - log(1 - q_c)) ],
        p_c = sigmoid(t_rc / T), q_c = sigmoid(s_rc / T)
    head_kl='softmax': softmax over the C class logits of the prediction (no background class):
        KL_r = sum_c softmax(t_r / T)_c (log softmax(t_r / T)_c - log softmax(s_r / T)_c)

    loss_defeat_head_fg = w_hfg * T^2 * sum_{l,b,i,j,a} M_l KL       / max(1, A * sum M_l)
    loss_defeat_head_bg = w_hbg * T^2 * sum_{l,b,i,j,a} (1 - M_l) KL / max(1, A * sum (1 - M_l))

(pooled over levels and, with ``normalize='batch'``, over the images as in the official code;
``normalize='image'`` normalises per image and averages over images). ``with_head=False`` drops
the head term (the neck term alone, as in the public config, whose ``type`` string does not
contain 'head-cls').

Shapes: ``batch.student.neck[l]`` (B, C_s, H_l, W_l), ``batch.teacher.neck[l]``
(B, C_t, H_l, W_l), masks (B, H_l, W_l), class logits (B, A*C, H_l, W_l); C (classes) is read
from ``batch.teacher_cls_prob`` (B, N, A, C).

Defaults and their source (all from the public config, ``hint_adapt`` dict, lines 12-19):
``fg_weight = 3`` (``hint_neck_w``, line 12), ``bg_weight = 12`` (``hint_neck_back_w``,
line 13), ``head_fg_weight = 2`` (``head_cls_w``, line 16), ``head_bg_weight = 2``
(``head_cls_back_w``, line 17), ``head_temperature = 1`` (``head_cls_T``, line 18; the config's
``head_cls_back_T = 1``, line 19, is never read: train.py uses ``head_cls_T`` for both parts).
No decay schedule is enabled there (the ``kd_decay`` factor, train.py lines 283-296, applies only
when the type string contains 'decay'). The paper's RetinaNet weights are not in the public
code; the PGD paper says competitor hyper-parameters follow the papers / public code, so these
values are an assumption for the dense detectors (adjust via config). Boxes are
(x1, y1, x2, y2) in pixels of the padded batch; the official degenerate-box rule (a box
narrower than one cell marks a single cell) is generalised to marking at least one row / column
in each direction.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
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


def _kl_rows(t_logits: Tensor, s_logits: Tensor, num_classes: int, temperature: float,
             mode: str) -> Tensor:
    """KL(teacher || student) summed over the classes and the A anchors of each location.

    ``t_logits`` / ``s_logits`` (B, A*C, H, W) -> (B, H, W).
    """
    b, ac, h, w = s_logits.shape
    t = t_logits.detach() / temperature
    s = s_logits / temperature
    if mode == 'sigmoid':
        lp_t, lq_t = F.logsigmoid(t), F.logsigmoid(-t)  # log p, log (1 - p)
        lp_s, lq_s = F.logsigmoid(s), F.logsigmoid(-s)
        kl = lp_t.exp() * (lp_t - lp_s) + lq_t.exp() * (lq_t - lq_s)
        return kl.sum(dim=1)
    a = ac // num_classes
    t = t.reshape(b, a, num_classes, h, w)
    s = s.reshape(b, a, num_classes, h, w)
    log_p = F.log_softmax(t, dim=2)
    kl = log_p.exp() * (log_p - F.log_softmax(s, dim=2))
    return kl.sum(dim=(1, 2))


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
        normalize: 'batch' (public code) or 'image' (both terms).
        with_head: add the decoupled classification-score KD (head term); False gives the neck
            term alone.
        head_fg_weight: head term fg weight (public config ``head_cls_w`` = 2).
        head_bg_weight: head term bg weight (public config ``head_cls_back_w`` = 2).
        head_temperature: KD temperature (public config ``head_cls_T`` = 1).
        head_kl: 'sigmoid' (per-class Bernoulli KL, default) or 'softmax' (softmax over the C
            classes of each prediction).

    Returns (forward): ``{'loss_defeat_fg', 'loss_defeat_bg'}`` scalars, plus
    ``{'loss_defeat_head_fg', 'loss_defeat_head_bg'}`` when ``with_head``.
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
                 normalize: str = 'batch',
                 with_head: bool = True,
                 head_fg_weight: float = 2.0,
                 head_bg_weight: float = 2.0,
                 head_temperature: float = 1.0,
                 head_kl: str = 'sigmoid') -> None:
        super().__init__()
        if normalize not in ('batch', 'image'):
            raise ValueError(f'normalize must be "batch" or "image", got {normalize!r}')
        if head_kl not in ('sigmoid', 'softmax'):
            raise ValueError(f'head_kl must be "sigmoid" or "softmax", got {head_kl!r}')
        if head_temperature <= 0:
            raise ValueError(f'head_temperature must be > 0, got {head_temperature!r}')
        self.with_head = bool(with_head)
        self.head_fg_weight = head_fg_weight
        self.head_bg_weight = head_bg_weight
        self.head_temperature = head_temperature
        self.head_kl = head_kl
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
        return self._normalise(num, cnt)

    def _normalise(self, num: Tensor, cnt: Tensor) -> Tensor:
        """Per-image numerators / counts (B,) -> scalar (batch-pooled or per-image mean)."""
        if self.normalize == 'batch':
            return num.sum() / cnt.sum().clamp(min=1.)
        return (num / cnt.clamp(min=1.)).mean()

    def head_loss(self, batch: DistillBatch, masks: List[Tensor]) -> Dict[str, Tensor]:
        """Decoupled fg / bg KD on the class logits (see the module docstring)."""
        if batch.student_cls_logits is None or batch.teacher_cls_logits is None:
            raise ValueError('DeFeatLoss(with_head=True) needs batch.student_cls_logits and '
                             'batch.teacher_cls_logits; pass with_head=False for the neck term')
        n = min(len(batch.student_cls_logits), len(masks))
        num_classes = batch.teacher_cls_prob.shape[-1]
        num_fg = num_bg = cnt_fg = cnt_bg = 0.
        for lvl in range(n):
            s = batch.student_cls_logits[lvl]
            kl = _kl_rows(batch.teacher_cls_logits[lvl], s, num_classes,
                          self.head_temperature, self.head_kl)  # (B, H, W)
            anchors = s.shape[1] // num_classes
            m = masks[lvl].to(kl.dtype)
            num_fg = num_fg + (kl * m).flatten(1).sum(1)
            num_bg = num_bg + (kl * (1. - m)).flatten(1).sum(1)
            cnt_fg = cnt_fg + m.flatten(1).sum(1) * anchors
            cnt_bg = cnt_bg + (1. - m).flatten(1).sum(1) * anchors
        t2 = self.head_temperature ** 2
        return {'loss_defeat_head_fg': self.head_fg_weight * t2 * self._normalise(num_fg, cnt_fg),
                'loss_defeat_head_bg': self.head_bg_weight * t2 * self._normalise(num_bg, cnt_bg)}

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
        out = {'loss_defeat_fg': self.fg_weight * fg / n,
               'loss_defeat_bg': self.bg_weight * bg / n}
        if self.with_head:
            out.update(self.head_loss(batch, masks))
        return out
