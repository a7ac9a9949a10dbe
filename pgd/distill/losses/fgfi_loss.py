"""FGFI: Fine-Grained Feature Imitation (Wang et al., "Distilling Object Detectors with
Fine-grained Feature Imitation", CVPR 2019), applied to the FPN neck outputs.

Imitation region (paper Sec. 3.1 / slides "Imitation region estimation")::

    for every GT g and every anchor k of a level:  m[g, i, j, k] = IoU(anchor_(i,j,k), g)
    F_g     = psi * max(m[g])                     # psi = 0.5 (paper default)
    I[i, j] = OR_g OR_k ( m[g, i, j, k] > F_g )    # binary (H, W) mask per level and image

Loss (paper Eq. 2, with the student adaptation layer f_adap)::

    f_adap(S)   = ReLU(conv3x3(S))                 # student -> teacher width
    L_imitation = 1 / (2 N_p) * sum_l sum_{i,j} sum_c I_l[i,j] (f_adap(S_l)[c,i,j] - T_l[c,i,j])^2
    N_p         = sum_l sum_{i,j} I_l[i,j]        # masked *locations*, not x channels
    gate        = 0 while (first epoch and cur_iter < warmup_iters), else 1
    loss_fgfi_feat = gate * loss_weight * L_imitation   # loss_weight = lambda = 0.01

Official code (the authors' repositories, read for these semantics):

* github.com/twangnh/Distilling-Object-Detectors (PyTorch, Faster R-CNN VGG16 -> VGG11):
  - adaptation ``nn.Sequential(nn.Conv2d(512, 512, kernel_size=3, padding=1), nn.ReLU())``,
    PyTorch's default init (``lib/model/faster_rcnn/vgg11.py``, ``stu_feature_adap``; the
    ``_init_weights`` of ``lib/model/faster_rcnn/faster_rcnn.py`` does not touch it);
  - ``norms = mask.sum() * 2`` over the (1-channel) masks of the whole batch, loss
    ``sum((T - f_adap(S))^2 * mask) / norms`` (``trainval_net_sup.py``);
  - weight ``--ilw`` 0.01 and warm-up ``--ws`` 400: the imitation loss is multiplied by 0 while
    ``step < 400 and epoch == 1`` (``trainval_net_sup.py``; README: "first 400 steps are warmup
    steps with no imitation");
  - mask: per GT, anchors with IoU > 0.5 * (max IoU of that GT), OR over anchors and GTs,
    padding GTs skipped (``lib/model/rpn/anchor_target_layer.py``).
* github.com/twangnh/Distilling-Object-Detectors-Shuffledet (TensorFlow, ShuffleDet):
  adaptation 3x3 conv + ReLU with a truncated-normal kernel init, stddev 1e-4, bias 0
  (``lib/models/shuffleDet_sup.py``, ``adaptation`` scope, ``_conv_layer_no_pretrain(...,
  relu=True, stddev=0.0001)``; ``lib/models/nn_skeleton.py``: ``tf.truncated_normal_initializer``,
  i.e. truncated at 2 stddev); psi = 0.5 (``dataset_tool/imdb.py``, ``_mimic_trhesh1``).

Defaults here: ReLU adapter (both repositories), truncated-normal init std 1e-4 / bias 0
(ShuffleDet; ``adapt_init='pytorch'`` = the PyTorch repository's default init), warm-up 400
iterations of the first epoch, N_p over the batch, lambda 0.01. The previous behaviour of this
module (plain conv, PyTorch init, no warm-up) is ``adapt_act=None, adapt_init='pytorch',
warmup_iters=0``.

Shapes: ``batch.student.neck[l]`` (B, C_s, H_l, W_l), ``batch.teacher.neck[l]``
(B, C_t, H_l, W_l); masks (B, H_l, W_l); ``batch.gt_bboxes`` (B, G, 4).

Implementation choices (documented assumptions):

* Anchors come from MMDetection's :class:`AnchorGenerator` built from ``anchor_ratios`` and
  either ``anchor_scales`` or ``octave_base_scale``/``scales_per_octave`` (exactly the
  ``anchor_generator`` fields of the detector config). Presets in :data:`FGFI_ANCHOR_PRESETS`:
  RetinaNet (octave_base_scale=4, scales_per_octave=3, ratios 0.5/1/2) and ATSS/GFL/DDOD
  (octave_base_scale=8, scales_per_octave=1, ratio 1).
* Anchor-free heads (FCOS, AutoAssign) have no anchors; the documented equivalent is one
  *virtual* anchor per location: a square of side ``8 * stride`` centred on the location, i.e.
  the ATSS preset. This is the default.
* Anchor centres use ``center_offset=0.5`` so that they coincide with ``DistillBatch.points``
  ((j + 0.5) * stride); set ``center_offset=0.`` to reproduce MMDetection's RetinaNet/ATSS
  anchors (centred at j * stride) bit-for-bit.
* FPN extension (paper: "we compute the imitation region on each layer with corresponding prior
  anchors"): ``max_iou_over='level'`` (default) takes the max IoU ``M`` per GT per level;
  ``'all'`` takes it over the anchors of all levels.
* Padding GTs (``gt_valid == False``) and GTs whose max IoU is 0 never create mask pixels.
* Normalisation: ``normalize='batch'`` (default, as the authors' public code: one N_p summed
  over the images and levels of the batch) or ``'image'`` (loss per image with its own N_p,
  then the mean over images). Images without any masked location contribute 0.
* One adaptation conv (+ ReLU) per FPN level (not shared).
* Warm-up: the iteration is the Runner's global iteration (``batch.cur_iter``, set by the
  distiller from MMEngine's MessageHub, which survives resume) and the epoch is read from the
  same MessageHub (``'epoch'``, 0-based). The official gate applies only within the first epoch
  (``epoch == 1`` there), so it never lasts longer than one epoch; without a Runner (no
  iteration known, ``cur_iter=None``) the loss is on.
* The teacher's FPN features are signed while a ReLU adapter's output is not; the official
  code imitated post-ReLU backbone features. ``adapt_act=None`` removes the ReLU.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor

from ..inputs import DistillBatch

#: Adapter kernel init of the official ShuffleDet code: truncated normal, stddev 1e-4, cut at
#: 2 stddev (tf.truncated_normal_initializer), bias 0.
FGFI_TRUNC_NORMAL_STD = 1e-4


def _current_epoch() -> Optional[int]:
    """The Runner's epoch (0-based) from MMEngine's MessageHub, as the distiller reads the
    iteration (pgd.distill.distiller._current_iter); None outside a Runner."""
    from mmengine.logging import MessageHub
    epoch = MessageHub.get_current_instance().get_info('epoch', None)
    return None if epoch is None else int(epoch)


#: Anchor settings of the detectors used in the paper (MMDetection configs).
FGFI_ANCHOR_PRESETS = {
    'retinanet': dict(anchor_ratios=(0.5, 1.0, 2.0), octave_base_scale=4, scales_per_octave=3),
    'atss': dict(anchor_ratios=(1.0,), octave_base_scale=8, scales_per_octave=1),
    'gfl': dict(anchor_ratios=(1.0,), octave_base_scale=8, scales_per_octave=1),
    'ddod': dict(anchor_ratios=(1.0,), octave_base_scale=8, scales_per_octave=1),
    # anchor-free heads: one virtual square anchor of side 8 * stride per location
    'fcos': dict(anchor_ratios=(1.0,), octave_base_scale=8, scales_per_octave=1),
    'autoassign': dict(anchor_ratios=(1.0,), octave_base_scale=8, scales_per_octave=1),
}


def fgfi_masks(gt_bboxes: Tensor, gt_valid: Tensor, level_anchors: Sequence[Tensor],
               level_sizes: Sequence[Tuple[int, int]], num_base_anchors: Sequence[int],
               psi: float = 0.5, max_iou_over: str = 'level') -> list:
    """FGFI imitation masks.

    Args:
        gt_bboxes: (B, G, 4) padded GT boxes (xyxy, pixels).
        gt_valid: (B, G) bool.
        level_anchors: per level (H_l * W_l * A_l, 4) anchors, location-major (MMDetection order).
        level_sizes: per level (H_l, W_l).
        num_base_anchors: A_l per level.
        psi: threshold factor.
        max_iou_over: 'level' (max IoU per GT per level) or 'all' (over all levels).

    Returns:
        list of (B, H_l, W_l) bool masks.
    """
    if max_iou_over not in ('level', 'all'):
        raise ValueError(f'max_iou_over must be "level" or "all", got {max_iou_over!r}')
    b, g = gt_valid.shape
    boxes = gt_bboxes.float()
    valid = gt_valid.unsqueeze(-1)

    def level_ious(anchors: Tensor) -> Tensor:
        anc = anchors.to(boxes).unsqueeze(0).expand(b, -1, -1)
        return bbox_overlaps(boxes, anc).masked_fill(~valid, 0.)  # (B, G, N_l * A_l)

    def to_mask(iou: Tensor, m: Tensor, size, a: int) -> Tensor:
        h, w = size
        keep = (iou > psi * m) & (m > 0) & valid  # (B, G, HWA)
        return keep.view(b, g, h * w, a).any(dim=-1).any(dim=1).view(b, h, w)  # OR anchors, GTs

    def level_max(iou: Tensor) -> Tensor:
        if iou.shape[-1] == 0:
            return iou.new_zeros(b, g, 1)
        return iou.amax(dim=-1, keepdim=True)

    if max_iou_over == 'level':  # one level at a time keeps the (B, G, N*A) peak small
        masks = []
        for anc, size, a in zip(level_anchors, level_sizes, num_base_anchors):
            iou = level_ious(anc)
            masks.append(to_mask(iou, level_max(iou), size, a))
        return masks
    ious = [level_ious(anc) for anc in level_anchors]
    m = torch.cat([level_max(iou) for iou in ious], dim=-1).amax(dim=-1, keepdim=True)
    return [to_mask(iou, m, size, a)
            for iou, size, a in zip(ious, level_sizes, num_base_anchors)]


@MODELS.register_module()
class FGFILoss(nn.Module):
    """Fine-grained feature imitation on FPN features (see module docstring for the formula).

    Args:
        student_channels: FPN width of the student.
        teacher_channels: FPN width of the teacher.
        num_levels: number of FPN levels (one adaptation conv each).
        loss_weight: lambda of paper Eq. 3. Default 0.01 (paper).
        psi: IoU threshold factor. Default 0.5 (paper).
        preset: optional key of :data:`FGFI_ANCHOR_PRESETS`; explicit anchor args override it.
        anchor_ratios / anchor_scales / octave_base_scale / scales_per_octave: as
            MMDetection's ``AnchorGenerator`` (``anchor_scales`` excludes the octave args).
            Default: one square anchor of side 8 * stride (ATSS-style / anchor-free virtual
            anchor).
        center_offset: anchor centre offset in strides (0.5 = location centres).
        max_iou_over: 'level' or 'all' (see module docstring).
        normalize: 'batch' (public code) or 'image'.
        adapt_kernel: kernel size of the adaptation conv (3 in the paper and both repos).
        adapt_act: 'relu' (official: conv + ReLU) or None (plain conv).
        adapt_init: 'trunc_normal' (official ShuffleDet code: std ``adapt_std``, cut at 2 std,
            bias 0) or 'pytorch' (``nn.Conv2d``'s default, as the official PyTorch code).
        adapt_std: stddev of the truncated-normal init. Default 1e-4 (ShuffleDet code).
        warmup_iters: iterations of the first epoch without imitation (loss x 0). Default 400
            (official ``--ws``); 0 disables the warm-up.

    Returns (forward): ``{'loss_fgfi_feat': scalar}``.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 num_levels: int = 5,
                 loss_weight: float = 0.01,
                 psi: float = 0.5,
                 preset: Optional[str] = None,
                 anchor_ratios: Optional[Sequence[float]] = None,
                 anchor_scales: Optional[Sequence[float]] = None,
                 octave_base_scale: Optional[float] = None,
                 scales_per_octave: Optional[int] = None,
                 center_offset: float = 0.5,
                 max_iou_over: str = 'level',
                 normalize: str = 'batch',
                 adapt_kernel: int = 3,
                 adapt_act: Optional[str] = 'relu',
                 adapt_init: str = 'trunc_normal',
                 adapt_std: float = FGFI_TRUNC_NORMAL_STD,
                 warmup_iters: int = 400) -> None:
        super().__init__()
        if adapt_act in ('none', 'None', ''):
            adapt_act = None
        if adapt_act not in (None, 'relu'):
            raise ValueError(f'adapt_act must be "relu" or None, got {adapt_act!r}')
        if adapt_init not in ('trunc_normal', 'pytorch'):
            raise ValueError(f'adapt_init must be "trunc_normal" or "pytorch", got {adapt_init!r}')
        if int(warmup_iters) < 0:
            raise ValueError(f'warmup_iters must be >= 0, got {warmup_iters!r}')
        if normalize not in ('batch', 'image'):
            raise ValueError(f'normalize must be "batch" or "image", got {normalize!r}')
        if max_iou_over not in ('level', 'all'):
            raise ValueError(f'max_iou_over must be "level" or "all", got {max_iou_over!r}')
        cfg = dict(FGFI_ANCHOR_PRESETS['atss'])
        if preset is not None:
            if preset not in FGFI_ANCHOR_PRESETS:
                raise KeyError(f'unknown FGFI preset {preset!r}; '
                               f'choose from {sorted(FGFI_ANCHOR_PRESETS)}')
            cfg = dict(FGFI_ANCHOR_PRESETS[preset])
        if anchor_ratios is not None:
            cfg['anchor_ratios'] = tuple(anchor_ratios)
        if anchor_scales is not None:
            cfg.pop('octave_base_scale', None)
            cfg.pop('scales_per_octave', None)
            cfg['anchor_scales'] = tuple(anchor_scales)
        if octave_base_scale is not None:
            cfg['octave_base_scale'] = octave_base_scale
            cfg.pop('anchor_scales', None)
        if scales_per_octave is not None:
            cfg['scales_per_octave'] = scales_per_octave
            cfg.pop('anchor_scales', None)
        self.anchor_cfg = cfg
        self.center_offset = center_offset
        self.loss_weight = loss_weight
        self.psi = psi
        self.max_iou_over = max_iou_over
        self.normalize = normalize
        self.num_levels = num_levels
        self.adapt_act = adapt_act
        self.adapt_init = adapt_init
        self.adapt_std = float(adapt_std)
        self.warmup_iters = int(warmup_iters)
        self.adapt = nn.ModuleList([
            nn.Conv2d(student_channels, teacher_channels, adapt_kernel, padding=adapt_kernel // 2)
            for _ in range(num_levels)
        ])
        self.init_weights()
        self._generators: Dict[tuple, AnchorGenerator] = {}

    def init_weights(self) -> None:
        """Adapter init (also called by MMEngine's ``init_weights`` of the distiller)."""
        if self.adapt_init != 'trunc_normal':
            return
        std = self.adapt_std
        for conv in self.adapt:
            nn.init.trunc_normal_(conv.weight, mean=0., std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(conv.bias)

    def adapted(self, lvl: int, feat: Tensor) -> Tensor:
        """f_adap of level ``lvl``: conv (+ ReLU)."""
        out = self.adapt[lvl](feat)
        return F.relu(out) if self.adapt_act == 'relu' else out

    def warmup_gate(self, cur_iter: Optional[int], cur_epoch: Optional[int] = None) -> float:
        """0. during the official warm-up (first epoch, ``cur_iter < warmup_iters``), else 1."""
        if cur_iter is None or self.warmup_iters <= 0:
            return 1.0
        if cur_epoch is not None and cur_epoch > 0:
            return 1.0
        return 0.0 if cur_iter < self.warmup_iters else 1.0

    def anchor_generator(self, strides: Sequence[int]) -> AnchorGenerator:
        key = tuple(int(s) for s in strides)
        if key not in self._generators:
            cfg = self.anchor_cfg
            kwargs = dict(strides=list(key), ratios=list(cfg['anchor_ratios']),
                          center_offset=self.center_offset)
            if 'anchor_scales' in cfg:
                kwargs['scales'] = list(cfg['anchor_scales'])
            else:
                kwargs['octave_base_scale'] = cfg['octave_base_scale']
                kwargs['scales_per_octave'] = cfg['scales_per_octave']
            self._generators[key] = AnchorGenerator(**kwargs)
        return self._generators[key]

    @torch.no_grad()
    def get_masks(self, batch: DistillBatch) -> list:
        """Per level (B, H_l, W_l) bool imitation masks."""
        n = min(len(batch.level_sizes), self.num_levels)
        sizes = [tuple(s) for s in batch.level_sizes[:n]]
        gen = self.anchor_generator(batch.strides[:n])
        anchors = gen.grid_priors(sizes, device=batch.gt_bboxes.device)
        return fgfi_masks(batch.gt_bboxes, batch.gt_valid, anchors, sizes,
                          gen.num_base_priors, self.psi, self.max_iou_over)

    def forward(self, batch: DistillBatch, cur_iter: Optional[int] = None,
                cur_epoch: Optional[int] = None) -> Dict[str, Tensor]:
        if cur_iter is None:
            cur_iter = batch.cur_iter  # the distiller's global iteration
        if cur_epoch is None and cur_iter is not None:
            cur_epoch = _current_epoch()
        n = min(len(batch.student.neck), self.num_levels)
        masks = self.get_masks(batch)
        num_img = batch.num_images
        sq_sum = None  # (B,) masked squared error per image
        n_pos = None  # (B,) masked locations per image
        for lvl in range(n):
            s = self.adapted(lvl, batch.student.neck[lvl])
            t = batch.teacher.neck[lvl].detach()
            m = masks[lvl].to(s.dtype)
            err = ((s - t) ** 2).sum(dim=1)  # (B, H, W)
            per_img = (err * m).flatten(1).sum(1)
            cnt = m.flatten(1).sum(1)
            sq_sum = per_img if sq_sum is None else sq_sum + per_img
            n_pos = cnt if n_pos is None else n_pos + cnt
        if self.normalize == 'batch':
            loss = sq_sum.sum() / (2. * n_pos.sum().clamp(min=1.))
        else:
            loss = (sq_sum / (2. * n_pos.clamp(min=1.))).sum() / max(num_img, 1)
        # x 0 during the warm-up (as the official code): the graph, and so DDP's view of the
        # adapter parameters, stays the same
        gate = self.warmup_gate(cur_iter, cur_epoch)
        return {'loss_fgfi_feat': gate * self.loss_weight * loss}
