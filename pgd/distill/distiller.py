"""Teacher-student distiller: an MMDetection detector wrapping a trainable student and a frozen
teacher, handing captured features to any number of distillation loss modules.

Per training step::

    teacher (eval, no_grad): neck feats, first cls/reg tower conv outputs, raw head outputs
    student (train):         neck feats, first cls/reg tower conv outputs, its own det. loss
    losses = student detection losses + sum_m distill_loss_m(DistillBatch)

* The student computes its detection loss (including label assignment, e.g. DDOD's) from its
  *own* predictions exactly as the plain detector would.
* The teacher is a submodule (so it follows ``.to(device)`` and DDP broadcasts it) but its
  weights are kept out of every checkpoint by a state-dict hook and restored from
  ``teacher_ckpt`` in ``init_weights``; on resume the missing teacher keys are filled from the
  live teacher, so nothing warns and nothing is overwritten.
* ``deployable_detector()`` returns the student, which ``pgd train`` saves as ``final.pth``:
  a plain MMDetection checkpoint of the student's own config.
"""
from __future__ import annotations

import copy
import inspect
import logging
from typing import Dict, List, Optional

import torch
from mmdet.registry import MODELS
from mmengine.logging import print_log
from torch import Tensor, nn

from pgd.distill.head_decoding import decode_head_outputs, head_type
from pgd.distill.inputs import CapturedFeatures, DistillBatch, pad_gts
from pgd.distill.student_wrapper import StudentWrapperDetector


class _TowerCapture:
    """Forward hooks recording, per FPN level, the output of the first conv (+norm+ReLU) of
    the classification and regression towers and the head's raw outputs."""

    def __init__(self, head: nn.Module):
        head_type(head)
        self.cls: List[Tensor] = []
        self.reg: List[Tensor] = []
        self.outs = None
        head.cls_convs[0].register_forward_hook(lambda m, i, o: self.cls.append(o))
        head.reg_convs[0].register_forward_hook(lambda m, i, o: self.reg.append(o))
        head.register_forward_hook(self._record_outs)

    def _record_outs(self, module, inputs, outs):
        self.outs = outs

    def reset(self) -> None:
        self.cls, self.reg, self.outs = [], [], None


def _current_iter() -> int:
    """The Runner's global iteration (survives resume, unlike a counter on the model)."""
    from mmengine.logging import MessageHub
    return int(MessageHub.get_current_instance().get_info('iter', 0) or 0)


def _strip_prefix_hook(prefix_to_drop: str):
    def hook(module, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(prefix + prefix_to_drop)]:
            del state_dict[key]
        return state_dict
    return hook


def _isolated_rng():
    """Random draws inside leave the global RNG (CPU and the current CUDA device) untouched."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices)


def _weighted(value, weight: float):
    if isinstance(value, (list, tuple)):
        return type(value)(v * weight for v in value)
    return value * weight


@MODELS.register_module()
class TeacherStudentDistiller(StudentWrapperDetector):
    """Distil a frozen dense-detector teacher into a student of the same head family.

    Args:
        student: config of the student detector (any supported single-stage detector).
        teacher: config of the teacher detector.
        teacher_ckpt: checkpoint of the trained teacher (required for training).
        distill_losses: dict name -> loss config; each loss is built with
            ``student_channels``/``teacher_channels`` (FPN widths) filled in if it accepts them,
            and is called as ``loss(batch: DistillBatch)`` returning a dict of named terms.
            ``loss_weight`` (MMDetection's convention) weights a loss: a loss whose
            ``__init__`` takes ``loss_weight`` applies it itself; for any other loss the
            distiller multiplies its ``loss*`` terms by it (default 1). ``pgd distill``'s
            ``loss_scale`` is folded into these weights when the config is composed
            (:func:`pgd.engine.distill_common.scale_loss_weights`).
        init_student_from_teacher: copy neck/head parameters from the teacher where names and
            shapes match (the official PGD code and FGD do this).
        data_preprocessor: defaults to the student's.
    """

    def __init__(self, student: dict, teacher: dict, teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[Dict[str, dict]] = None,
                 init_student_from_teacher: bool = True,
                 data_preprocessor: Optional[dict] = None, init_cfg=None, train_cfg=None,
                 test_cfg=None):
        student = copy.deepcopy(student)
        teacher = copy.deepcopy(teacher)
        super().__init__(data_preprocessor=data_preprocessor or student.get('data_preprocessor'),
                         init_cfg=init_cfg)
        self.student = MODELS.build(student)
        # Everything built after the student draws its random initial values from a forked
        # RNG, so the student's weights and every later random draw are those of the plain
        # student run with the same seed (the zero-weight sanity row checks this bit for bit).
        with _isolated_rng():
            self.teacher = MODELS.build(teacher)
            self.distill_losses = self._build_losses(distill_losses)
        self.teacher_ckpt = teacher_ckpt
        self.init_student_from_teacher = init_student_from_teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self._register_state_dict_hook(_strip_prefix_hook('teacher.'))
        self.teacher._register_load_state_dict_pre_hook(self._fill_teacher_keys)

        s_head, t_head = self.student.bbox_head, self.teacher.bbox_head
        if type(s_head) is not type(t_head):
            raise ValueError(f'student head {type(s_head).__name__} and teacher head '
                             f'{type(t_head).__name__} must be the same type')
        self._s_capture = _TowerCapture(s_head)
        self._t_capture = _TowerCapture(t_head)

    def _build_losses(self, distill_losses: Optional[Dict[str, dict]]) -> nn.ModuleDict:
        s_ch, t_ch = self.student.neck.out_channels, self.teacher.neck.out_channels
        losses = nn.ModuleDict()
        #: loss name -> weight the distiller applies (losses without their own loss_weight)
        self.outer_loss_weights: Dict[str, float] = {}
        for name, cfg in (distill_losses or {}).items():
            cfg = dict(cfg)
            params = inspect.signature(MODELS.get(cfg['type']).__init__).parameters
            if 'student_channels' in params:  # methods with adaptation layers need widths
                cfg.setdefault('student_channels', s_ch)
                cfg.setdefault('teacher_channels', t_ch)
            if 'loss_weight' not in params:
                self.outer_loss_weights[name] = float(cfg.pop('loss_weight', 1.0))
            losses[name] = MODELS.build(cfg)
        return losses

    # ------------------------------------------------------------------ weights
    def _fill_teacher_keys(self, state_dict, prefix, local_metadata, strict, missing_keys,
                           unexpected_keys, error_msgs):
        """Checkpoints never contain the teacher: keep the live teacher's weights."""
        for key, value in self.teacher.state_dict().items():
            state_dict.setdefault(prefix + key, value)

    def init_weights(self) -> None:
        # The student first, from the RNG state the plain student run would have; the
        # teacher's (overwritten by its checkpoint) and the losses' from a forked one.
        self.student.init_weights()
        with _isolated_rng():
            super().init_weights()  # skips the student: it is initialised already
        if self.teacher_ckpt:
            from mmengine.runner import load_checkpoint
            load_checkpoint(self.teacher, self.teacher_ckpt, map_location='cpu', strict=True,
                            logger='current')
        else:
            print_log('TeacherStudentDistiller: no teacher_ckpt given, the teacher keeps its '
                      'initialisation (only sensible in unit tests)', 'current', logging.WARNING)
        if self.init_student_from_teacher:
            self._copy_matching_from_teacher()

    def _copy_matching_from_teacher(self) -> None:
        t_state = self.teacher.state_dict()
        copied = 0
        with torch.no_grad():
            for name, param in self.student.state_dict().items():
                if not name.startswith(('neck.', 'bbox_head.')):
                    continue
                src = t_state.get(name)
                if src is not None and src.shape == param.shape:
                    param.copy_(src)
                    copied += 1
        print_log(f'TeacherStudentDistiller: initialised {copied} student neck/head tensors '
                  'from the teacher (matching names and shapes)', 'current')

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher stays frozen, BN statistics included
        return self

    # ------------------------------------------------------------------ forward

    @torch.no_grad()
    def _run_teacher(self, batch_inputs: Tensor):
        self._t_capture.reset()
        feats = self.teacher.extract_feat(batch_inputs)
        outs = self.teacher.bbox_head(feats)
        return feats, outs

    def loss(self, batch_inputs: Tensor, batch_data_samples) -> dict:
        t_feats, t_outs = self._run_teacher(batch_inputs)
        self._s_capture.reset()
        s_feats = self.student.extract_feat(batch_inputs)
        losses = self.student.bbox_head.loss(s_feats, batch_data_samples)
        if len(self.distill_losses):
            batch = self.build_distill_batch(batch_inputs, batch_data_samples, s_feats, t_feats,
                                             t_outs)
            for name, module in self.distill_losses.items():
                terms = module(batch)
                overlap = set(terms) & set(losses)
                if overlap:
                    raise KeyError(f'distillation loss {name} returned duplicate keys {overlap}')
                weight = self.outer_loss_weights.get(name, 1.0)
                if weight != 1.0:
                    terms = {k: _weighted(v, weight) if 'loss' in k else v
                             for k, v in terms.items()}
                losses.update(terms)
        return losses

    def build_distill_batch(self, batch_inputs, batch_data_samples, s_feats, t_feats,
                            t_outs) -> DistillBatch:
        decoded = decode_head_outputs(self.teacher.bbox_head, t_outs)
        gts = [ds.gt_instances for ds in batch_data_samples]
        gt_bboxes, gt_labels, gt_valid = pad_gts([g.bboxes for g in gts],
                                                 [g.labels for g in gts])
        s_outs = self._s_capture.outs
        extra_t = {'raw_outs': t_outs}
        extra_s = {'raw_outs': s_outs}
        if type(self.teacher.bbox_head).__name__ == 'GFLHead':
            extra_t['bbox_dist'] = list(t_outs[1])
            extra_s['bbox_dist'] = list(s_outs[1])
        return DistillBatch(
            student=CapturedFeatures(list(s_feats), list(self._s_capture.cls),
                                     list(self._s_capture.reg)),
            teacher=CapturedFeatures([f.detach() for f in t_feats],
                                     [f.detach() for f in self._t_capture.cls],
                                     [f.detach() for f in self._t_capture.reg]),
            teacher_cls_prob=decoded.cls_prob,
            teacher_boxes=decoded.boxes,
            points=decoded.points,
            level_sizes=decoded.level_sizes,
            strides=decoded.strides,
            gt_bboxes=gt_bboxes.to(batch_inputs.device),
            gt_labels=gt_labels.to(batch_inputs.device),
            gt_valid=gt_valid.to(batch_inputs.device),
            batch_input_shape=tuple(batch_inputs.shape[-2:]),
            img_shapes=[tuple(ds.metainfo.get('img_shape', batch_inputs.shape[-2:]))
                        for ds in batch_data_samples],
            teacher_cls_logits=[x.detach() for x in t_outs[0]],
            student_cls_logits=list(s_outs[0]),
            teacher_extra=extra_t,
            student_extra=extra_s,
            cur_iter=_current_iter(),
        )
