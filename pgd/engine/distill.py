"""``python -m pgd distill``: one distillation run = student config + teacher + method.

The run's config is composed from the student's detector config (data, schedule, runtime), the
teacher's model config and ``config/distill/<method>.py`` (loss hyper-parameters with their
sources, per-detector overrides). ``--loss-options`` overrides the method's hyper-parameters
(Table 5/6/7 ablations: ``k=15``, ``alpha=0.05``, ``fg_strategy=box``, ``branches=[neck]``).
The composed config is saved as ``DIR/distill_config.py`` so every run can be re-created.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
from pathlib import Path

DETECTOR_NAMES = {'ATSS': 'atss', 'FCOS': 'fcos', 'GFL': 'gfl', 'DDOD': 'ddod',
                  'AutoAssign': 'autoassign'}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction

    from pgd.engine.train import add_common_arguments
    p.add_argument('--student', required=True,
                   help='student detector config: a name under config/detectors/ (e.g. '
                   'mini/atss_r18_student; never leaves that folder) or an existing .py path')
    p.add_argument('--teacher', help='teacher detector config (name or .py path, as --student)')
    p.add_argument('--teacher-ckpt', help='trained teacher weights (e.g. its final.pth)')
    p.add_argument('--method', required=True,
                   help='a method name, one of config/distill/<name>.py (a name, not a path)')
    p.add_argument('--loss-options', nargs='+', action=DictAction, default=None,
                   help='override the method hyper-parameters, e.g. k=15 alpha=0.05; '
                   'loss_scale=S multiplies all of the method\'s distillation losses')
    p.add_argument('--no-init-from-teacher', action='store_true',
                   help="do not copy matching neck/head weights from the teacher")
    add_common_arguments(p)


def detector_name(model_cfg) -> str:
    from pgd.errors import UserError
    name = DETECTOR_NAMES.get(model_cfg['type'])
    if name is None:
        raise UserError(f"unknown detector type {model_cfg['type']!r}; supported: "
                        f"{', '.join(DETECTOR_NAMES)}")
    return name


def load_method(method: str):
    from mmengine.config import Config

    from pgd.method_options import METHOD_ROOT, check_method_name
    check_method_name(method)  # a plain name of config/distill/, never a path out of it
    return Config.fromfile(str(METHOD_ROOT / f'{method}.py'))


def method_losses(method_cfg, detector: str, loss_options: dict | None) -> dict:
    """The method's loss configs for one detector, with CLI overrides applied to every loss."""
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


def split_loss_scale(args) -> None:
    """Move ``loss_scale`` out of ``args.loss_options`` into ``args.loss_scale`` (default 1).

    It is the one option every method has: a global factor on all of the method's
    distillation losses, its published relative weights unchanged (the mini scale tunes it per
    method on held-out training images, config/tuning.yaml). Being a loss option, it takes part
    in the workflow's run names and defaults like any other."""
    from pgd.errors import UserError
    options = dict(args.loss_options or {})
    raw = options.pop('loss_scale', 1.0)
    try:
        scale = float(raw)
    except (TypeError, ValueError):
        scale = float('nan')
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f'loss_scale must be a positive number, got {raw!r}')
    args.loss_options = options or None
    args.loss_scale = scale


def compose(args):
    """The full runnable config of a distillation run (an mmengine Config)."""
    from pgd.engine.config_utils import load_config
    from pgd.errors import UserError
    student_path, cfg = load_config(args.student)
    method_cfg = load_method(args.method)
    # keys the method reads, values by the workflow schema's rules (pgd.method_options)
    from pgd.method_options import check_method_options
    check_method_options(args.method, args.loss_options)
    split_loss_scale(args)
    scale = args.loss_scale
    if args.method == 'ld':
        return student_path, compose_ld(cfg, method_cfg, args)
    if args.method == 'lgd':  # teacher-free: no --teacher / --teacher-ckpt
        from pgd.engine.distill_lgd import compose_lgd
        return student_path, compose_lgd(cfg, method_cfg, args)
    if not (args.teacher and args.teacher_ckpt):
        raise UserError(f'method {args.method} needs --teacher and --teacher-ckpt')
    if not Path(args.teacher_ckpt).is_file():
        raise UserError(f'teacher checkpoint not found: {args.teacher_ckpt}')
    _, teacher_cfg = load_config(args.teacher)
    detector = detector_name(cfg.model)
    if detector_name(teacher_cfg.model) != detector:
        raise UserError('teacher and student must be the same detector type, got '
                        f"{teacher_cfg.model['type']} and {cfg.model['type']}")
    student_model = cfg.model
    cfg.model = dict(
        type='TeacherStudentDistiller',
        student=student_model,
        teacher=teacher_cfg.model,
        teacher_ckpt=str(args.teacher_ckpt),
        init_student_from_teacher=not args.no_init_from_teacher,
        loss_scale=scale,
        distill_losses=method_losses(method_cfg, detector, args.loss_options))
    if 'optim_wrapper' in method_cfg:
        cfg.optim_wrapper.update(method_cfg.optim_wrapper)
    cfg.distill = dict(method=args.method, detector=detector, teacher=str(args.teacher),
                       loss_options=dict(args.loss_options or {}),
                       loss_scale=args.loss_scale)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return student_path, cfg


def compose_ld(cfg, method_cfg, args):
    """LD through MMDetection's KnowledgeDistillationSingleStageDetector with the head that
    ``ld_variant`` of config/distill/ld.py selects (default: the official LD with VLR,
    :class:`pgd.distill.ld_vlr_head.LDVLRHead`; ``main``: mmdet's own LDHead).

    ``--loss-options``: ``ld_variant``; the head options ``ld_head_options``; every other key
    updates the LD KL terms (``loss_ld`` and, when present, ``loss_ld_vlr``). ``loss_scale``
    multiplies every distillation term of the head (``ld_distill_terms``)."""
    from pgd.engine.config_utils import resolve_config
    from pgd.errors import UserError
    detector = detector_name(cfg.model)
    if detector not in method_cfg.supported_detectors:
        raise UserError(f'LD is defined for {method_cfg.supported_detectors} only, '
                        f'not {detector}')
    if not (args.teacher and args.teacher_ckpt and Path(args.teacher_ckpt).is_file()):
        raise UserError('LD needs --teacher and an existing --teacher-ckpt')
    options = dict(args.loss_options or {})
    variant = options.pop('ld_variant', method_cfg.get('ld_variant', 'vlr'))
    heads = method_cfg.ld_heads
    if variant not in heads:
        raise UserError(f'ld_variant must be one of {sorted(heads)}, got {variant!r}')
    head = copy.deepcopy(heads[variant]).to_dict()
    for key in method_cfg.get('ld_head_options', ()):
        if key in options:
            if key not in head and head['type'] == 'LDHead':
                raise UserError(f'LD option {key} needs ld_variant=vlr')
            head[key] = options.pop(key)
    model = cfg.model
    model['type'] = 'KnowledgeDistillationSingleStageDetector'
    # relative to the working directory where possible: the dumped config is provenance and
    # must not name the machine (MMDetection loads it at once, from this same directory)
    teacher_config = resolve_config(args.teacher).resolve()
    model['teacher_config'] = (os.path.relpath(teacher_config)
                               if teacher_config.is_relative_to(Path.cwd()) else str(teacher_config))
    model['teacher_ckpt'] = str(args.teacher_ckpt)
    model['bbox_head'].update(head)
    bbox_head = model['bbox_head']
    for term in ('loss_ld', 'loss_ld_vlr'):
        if options and bbox_head.get(term):
            bbox_head[term].update(options)
    for term in method_cfg.get('ld_distill_terms', ('loss_ld',)):
        if bbox_head.get(term):
            bbox_head[term]['loss_weight'] *= args.loss_scale
    module = method_cfg.get('ld_head_module')
    if module and head['type'] != 'LDHead':
        # so that the saved distill_config.py registers the head when re-loaded
        imports = list((cfg.get('custom_imports') or {}).get('imports', []))
        if module not in imports:
            imports.append(module)
        cfg.custom_imports = dict(imports=imports, allow_failed_imports=False)
    cfg.distill = dict(method='ld', detector=detector, teacher=str(args.teacher),
                       loss_options=dict(args.loss_options or {}),
                       loss_scale=args.loss_scale)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def run(args) -> int:
    from pgd.engine.train import train_config
    from pgd.io import atomic_write_text
    from pgd.engine.config_utils import check_writable
    student_path, cfg = compose(args)
    check_writable(args.work_dir)  # before anything is built or written
    atomic_write_text(Path(args.work_dir) / 'distill_config.py', cfg.pretty_text)
    return train_config(cfg, args, f'{args.method} distillation of {student_path}')
