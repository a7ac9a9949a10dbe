"""Composition of a feature-distillation run (``engine='feature'`` in :mod:`pgd.catalog`).

The student config's model becomes a
:class:`pgd.distill.distiller.TeacherStudentDistiller` around the student and the teacher's
model config, with the losses of ``config/distill/<method>.py`` (``distill_losses``, per
detector ``detector_overrides``, then ``--loss-options`` on every loss, then ``loss_scale``
folded into each loss's ``loss_weight``).
"""
from __future__ import annotations

import copy
from pathlib import Path

from pgd.engine.distill_common import detector_name, finish_config, scale_loss_weights


def method_losses(method_cfg, detector: str, loss_options: dict | None) -> dict:
    """The method's loss configs for one detector, with CLI overrides applied to every loss
    (``loss_scale`` is not among them: see :func:`scale_loss_weights`)."""
    from mmengine.config import ConfigDict

    from pgd.errors import UserError
    overrides = method_cfg.get('detector_overrides', {})
    if detector not in overrides:
        raise UserError(f'method does not support detector {detector!r} '
                        f'(supported: {", ".join(overrides)})')
    losses = ConfigDict(copy.deepcopy(method_cfg['distill_losses']))
    for name, extra in overrides[detector].items():
        losses[name].update(extra)
    for loss in losses.values():
        loss.update(loss_options or {})
    return losses.to_dict()


def compose_feature(cfg, method_cfg, args):
    """The runnable mmengine config of a teacher -> student feature-distillation run."""
    from pgd.engine.config_utils import load_config
    from pgd.errors import UserError
    if not (args.teacher and args.teacher_ckpt):
        raise UserError(f'method {args.method} needs --teacher and --teacher-ckpt')
    if not Path(args.teacher_ckpt).is_file():
        raise UserError(f'teacher checkpoint not found: {args.teacher_ckpt}')
    _, teacher_cfg = load_config(args.teacher)
    detector = detector_name(cfg.model)
    if detector_name(teacher_cfg.model) != detector:
        raise UserError('teacher and student must be the same detector type, got '
                        f"{teacher_cfg.model['type']} and {cfg.model['type']}")
    import pgd.distill.losses  # noqa: F401  registers the losses (their loss_weight defaults)
    losses = method_losses(method_cfg, detector, args.loss_options)
    scale_loss_weights(losses, getattr(args, 'loss_scale', 1.0))
    student_model = cfg.model
    cfg.model = dict(
        type='TeacherStudentDistiller',
        student=student_model,
        teacher=teacher_cfg.model,
        teacher_ckpt=str(args.teacher_ckpt),
        init_student_from_teacher=args.init_from_teacher,
        distill_losses=losses)
    if 'optim_wrapper' in method_cfg:
        cfg.optim_wrapper.update(method_cfg.optim_wrapper)
    finish_config(cfg, args, args.method, detector, str(args.teacher))
    return cfg
