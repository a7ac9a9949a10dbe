"""LGD: teacher-free label-guided self-distillation (Zhang et al., AAAI 2022) as an MMDetection
detector wrapping any supported single-stage student.

Per training step (paper Fig. 2, Eq. 5-7)::

    X   = FPN(backbone(img))                         student features (B, C, H_l, W_l) per level
    L^S = head loss on X                             student detection loss (its own keys)
    X^I = LGD(labels, X)                             instructive features (label encoder, mask-
                                                     pooled appearance, cross-attention, mapper)
    L^I = head loss on X^I   -> loss_lgd_inst_*      the student's *own* head (shared, Table 6b)
    L_distill = lambda / N_total sum_l || IN(adapter(X_l)) - IN(X^I_l.detach()) ||^2
              -> loss_lgd_distill                    (Eq. 5; N_total = B sum_l C H_l W_l, i.e.
                                                     the mean over every element of the pyramid)

* ``IN`` is a non-affine InstanceNorm over (H, W) (a 1x1 level normalises to zeros); the adapter
  is three 3x3 convs with ReLUs between, shared across levels (public code's SequentialConvs,
  "following FitNet" in the paper). The instructive features are always detached in L_distill
  ("to avoid model collapse", §3.3), so the distillation term only trains the student and the
  adapter; the LGD modules learn from L^I alone.
* ``detach_appearance``: whether the appearance embeddings are pooled from detached student
  features, so that L^I does not reach the student's backbone/FPN (public code option
  DETACH_APPEARANCE_EMBED: True in its 1x RetinaNet / Faster R-CNN configs, False in its 2x
  configs; not discussed in the paper).
* Delayed distillation (§3.3): "the distillation starts in 30k iterations" (of 90k for 1x).
  Before ``distill_start`` the term ``loss_lgd_distill`` is exactly zero (no gradient to the
  student). The public code still computes the loss before the start on *detached* student
  features, which trains only the adapter (DISTILL_OFF detaches the student); with
  ``adapter_warmup=True`` that term is reported as ``loss_lgd_adapter_warmup`` (zero after the
  start), so the summed objective equals the public code's.
* Backbone freezing (§3.3): "The student detector backbone is frozen in early 10k iterations
  under 1x training schedule and 20k for 2x". The public code (train.py) sets the gradients of
  the student's backbone to None for those iterations after the backward pass: the backbone
  (ImageNet-pretrained there) gets no update from any loss, student or instructive, while the
  FPN, head and the freshly initialised LGD modules warm up; its BatchNorm statistics still
  update. Here the backbone outputs are detached for the first ``freeze_backbone`` iterations,
  which has exactly that effect (no gradient, so SGD skips the parameters, weight decay
  included; the forward pass and BN statistics are unchanged).
* Both delays are given as fractions of the run's total iterations (MMEngine's ``max_iters``,
  read from the MessageHub at run time, so they scale with the schedule):
  ``distill_start_ratio = 30k/90k = 1/3`` and ``freeze_backbone_ratio = 10k/90k = 1/9`` for the
  1x schedule (20k/180k is also 1/9 for 2x). ``distill_start_iter`` / ``freeze_backbone_iters``
  override them with absolute iterations. Without a runner (unit tests) and without absolute
  values, nothing is delayed.
* ``deployable_detector()`` returns the student, which ``pgd train`` saves as ``final.pth``; the
  LGD modules and adapter are discarded at inference (they stay in training checkpoints so a
  run can resume).

DDP: while the backbone is frozen (and, without ``adapter_warmup``, before the distillation
starts) some parameters get no gradient, so the composed run sets
``find_unused_parameters=True`` (as the public code does).
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor
from mmengine.logging import MessageHub, print_log
from torch import Tensor

from pgd.distill.inputs import pad_gts
from pgd.distill.student_wrapper import StudentWrapperDetector

from .interaction import InstructiveKnowledge


def instance_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Non-affine InstanceNorm2d (biased variance over H, W); defined for 1x1 maps too."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def lgd_distill_mse(student: Sequence[Tensor], instructive: Sequence[Tensor]) -> Tensor:
    """Eq. 5: squared error summed over all levels / total number of elements (batch
    included). ``instructive`` is detached here."""
    total, count = student[0].new_zeros(()), 0
    for s, t in zip(student, instructive):
        diff = instance_norm(s) - instance_norm(t.detach())
        total = total + diff.pow(2).sum()
        count += diff.numel()
    return total / max(count, 1)


def _scale_loss(value, weight: float):
    if weight == 1.0:
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(v * weight for v in value)
    return value * weight


@MODELS.register_module()
class LabelGuidedSelfDistiller(StudentWrapperDetector):
    """Teacher-free LGD around a student detector config.

    Args:
        student: config of the student detector (ATSS, FCOS, GFL, DDOD, AutoAssign).
        num_heads: attention heads of the relation adapter (paper §4.1: T = 8).
        label_mlp_channels: PointNet widths of the label encoder (64, 128, 1024).
        use_tnet: PointNet T-Nets in the label encoder (paper: "spatial transformer network").
        loss_weight: lambda of Eq. 7 (paper: 1).
        inst_loss_weight: weight of the detection loss on the instructive features (Eq. 6: 1).
        distill_start_ratio / distill_start_iter: delayed distillation (see module docstring).
        freeze_backbone_ratio / freeze_backbone_iters: early backbone freezing (ditto).
        detach_appearance: pool appearance embeddings from detached student features.
        adapter_warmup: before the start, train the adapter on detached student features
            (public code), reported as ``loss_lgd_adapter_warmup``.
        data_preprocessor: defaults to the student's.
    """

    def __init__(self, student: dict, num_heads: int = 8,
                 label_mlp_channels: Sequence[int] = (64, 128, 1024), use_tnet: bool = True,
                 loss_weight: float = 1.0, inst_loss_weight: float = 1.0,
                 distill_start_ratio: float = 1 / 3, distill_start_iter: Optional[int] = None,
                 freeze_backbone_ratio: float = 1 / 9,
                 freeze_backbone_iters: Optional[int] = None,
                 detach_appearance: bool = True, adapter_warmup: bool = True,
                 data_preprocessor: Optional[dict] = None, init_cfg=None, train_cfg=None,
                 test_cfg=None):
        student = copy.deepcopy(student)
        super().__init__(data_preprocessor=data_preprocessor or student.get('data_preprocessor'),
                         init_cfg=init_cfg)
        self.student = MODELS.build(student)
        head = self.student.bbox_head
        channels = self.student.neck.out_channels
        self.strides = [float(s[0] if isinstance(s, (tuple, list)) else s)
                        for s in head.prior_generator.strides]
        self.lgd = InstructiveKnowledge(head.num_classes, channels, num_heads,
                                        label_mlp_channels, use_tnet)
        self.adapter = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1))
        self.loss_weight = float(loss_weight)
        self.inst_loss_weight = float(inst_loss_weight)
        self.distill_start_ratio = float(distill_start_ratio)
        self.distill_start_iter = distill_start_iter
        self.freeze_backbone_ratio = float(freeze_backbone_ratio)
        self.freeze_backbone_iters = freeze_backbone_iters
        self.detach_appearance = bool(detach_appearance)
        self.adapter_warmup = bool(adapter_warmup)
        self._warned_no_schedule = False

    # ------------------------------------------------------------------ schedule
    def schedule(self) -> Tuple[int, int, int]:
        """(current iteration, distillation start, end of backbone freezing)."""
        hub = MessageHub.get_current_instance()
        it = int(hub.get_info('iter', 0) or 0)
        max_iters = hub.get_info('max_iters', None)
        max_iters = int(max_iters) if max_iters else None

        def resolve(absolute, ratio):
            if absolute is not None:
                return int(absolute)
            if max_iters is None:
                if ratio > 0 and not self._warned_no_schedule:
                    print_log('LabelGuidedSelfDistiller: total iterations unknown (no runner); '
                              'distillation and backbone freezing are not delayed',
                              'current', logging.WARNING)
                    self._warned_no_schedule = True
                return 0
            return int(round(ratio * max_iters))
        return (it, resolve(self.distill_start_iter, self.distill_start_ratio),
                resolve(self.freeze_backbone_iters, self.freeze_backbone_ratio))

    # ------------------------------------------------------------------ forward

    def _student_feats(self, batch_inputs: Tensor, freeze_backbone: bool) -> List[Tensor]:
        x = self.student.backbone(batch_inputs)
        if freeze_backbone:
            x = tuple(t.detach() for t in x)
        if self.student.with_neck:
            x = self.student.neck(x)
        return list(x)

    def instructive_features(self, feats: Sequence[Tensor], batch_data_samples,
                             batch_input_shape: Tuple[int, int]) -> List[Tensor]:
        gts = [ds.gt_instances for ds in batch_data_samples]
        boxes, labels, valid = pad_gts([get_box_tensor(g.bboxes).to(feats[0].dtype)
                                        for g in gts], [g.labels for g in gts])
        device = feats[0].device
        img_shapes = [tuple(ds.metainfo.get('img_shape', batch_input_shape))[:2]
                      for ds in batch_data_samples]
        if self.detach_appearance:
            feats = [f.detach() for f in feats]
        return self.lgd(feats, self.strides, boxes.to(device), labels.to(device),
                        valid.to(device), img_shapes)

    def loss(self, batch_inputs: Tensor, batch_data_samples) -> Dict[str, Tensor]:
        it, start, freeze_end = self.schedule()
        feats = self._student_feats(batch_inputs, freeze_backbone=it < freeze_end)
        head = self.student.bbox_head
        losses = head.loss(feats, batch_data_samples)

        inst = self.instructive_features(feats, batch_data_samples,
                                         tuple(batch_inputs.shape[-2:]))
        for key, value in head.loss(inst, batch_data_samples).items():
            new_key = 'loss_lgd_inst_' + key[len('loss_'):] if key.startswith('loss_') \
                else 'lgd_inst_' + key
            losses[new_key] = _scale_loss(value, self.inst_loss_weight)

        active = it >= start
        if active or self.adapter_warmup:
            student = feats if active else [f.detach() for f in feats]
            mse = self.loss_weight * lgd_distill_mse([self.adapter(f) for f in student], inst)
        else:
            mse = feats[0].new_zeros(())
        losses['loss_lgd_distill'] = mse if active else mse * 0.0
        if self.adapter_warmup:
            losses['loss_lgd_adapter_warmup'] = mse.new_zeros(()) if active else mse
        return losses
