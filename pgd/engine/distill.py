"""``python -m pgd distill``: one distillation run = student config + teacher + method.

The run's config is composed from the student's detector config (data, schedule, runtime), the
teacher's model config and ``config/distill/<method>.py`` (loss hyper-parameters with their
sources, per-detector overrides). ``--loss-options`` overrides the method's hyper-parameters
(Table 5/6/7 ablations: ``k=15``, ``alpha=0.05``, ``fg_strategy=box``, ``branches=[neck]``).
The composed config is saved as ``DIR/distill_config.py`` so every run can be re-created.

This is the entry module: it picks the engine of the method from the catalog
(``pgd.catalog.method(name).engine``) and calls its composer -- ``feature``
(:mod:`pgd.engine.distill_feature`), ``ld`` (:mod:`pgd.engine.distill_ld`) or ``lgd``
(:mod:`pgd.engine.distill_lgd`). Those import only :mod:`pgd.engine.distill_common`, never this
module nor each other. ``loss_scale`` is folded into the losses' ``loss_weight`` by
:func:`pgd.engine.distill_common.scale_loss_weights`, for every engine.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pgd.engine.distill_common import (DETECTOR_NAMES, catalog_method, check_supports,
                                       detector_name, load_method, split_loss_scale,
                                       teacher_init)
from pgd.engine.distill_feature import compose_feature, method_losses
from pgd.engine.distill_ld import compose_ld
from pgd.engine.distill_lgd import compose_lgd

__all__ = ['DETECTOR_NAMES', 'ENGINES', 'add_arguments', 'compose', 'compose_feature',
           'compose_ld', 'compose_lgd', 'detector_name', 'load_method', 'method_losses',
           'run', 'split_loss_scale']

#: ``catalog.Method.engine`` -> composer ``(student cfg, method cfg, args) -> cfg``.
ENGINES = {'feature': compose_feature, 'ld': compose_ld, 'lgd': compose_lgd}


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
                   help="start the student's neck/head from scratch even where the method "
                   "config's init_student_from_teacher (its official code) copies them from the "
                   "teacher")
    add_common_arguments(p)


def compose(args):
    """The full runnable config of a distillation run (an mmengine Config).

    The engine is the catalog's ``Method.engine`` of ``--method``; its detector restriction
    (``Method.supports``, e.g. LD: GFL only) is checked here, once, for every engine."""
    from pgd.engine.config_utils import load_config
    from pgd.errors import UserError
    from pgd.method_options import check_method_options
    # the student's pretrained backbone follows --cfg-options pretrain_scale (the workflow's
    # scale); the rest of --cfg-options is merged last, into the composed config
    scale = (getattr(args, 'cfg_options', None) or {}).get('pretrain_scale')
    student_path, cfg = load_config(args.student,
                                    {'pretrain_scale': scale} if scale is not None else None)
    method_cfg = load_method(args.method)
    # keys the method reads, values by the workflow schema's rules (pgd.method_options)
    check_method_options(args.method, args.loss_options)
    split_loss_scale(args)
    method = catalog_method(args.method)
    composer = ENGINES.get(method.engine)
    if composer is None:
        raise UserError(f'method {method.name} has unknown engine {method.engine!r} in '
                        f'pgd.catalog (known: {", ".join(ENGINES)})')
    check_supports(method, detector_name(cfg.model))
    args.init_from_teacher = teacher_init(method_cfg, method.name, method.engine,
                                          getattr(args, 'no_init_from_teacher', False))
    composed = composer(cfg, method_cfg, args)
    # the final config names real files: the student's `{scale}` pretrained backbone filled from
    # pretrain_scale (or dropped: from scratch), the teacher's init dropped (it loads final.pth)
    from pgd.pretrain.check import resolve_pretrained
    resolve_pretrained(composed)
    return student_path, composed


def run(args) -> int:
    from pgd.engine.train import train_config
    from pgd.io import atomic_write_text
    from pgd.engine.config_utils import check_writable
    student_path, cfg = compose(args)
    check_writable(args.work_dir)  # before anything is built or written
    atomic_write_text(Path(args.work_dir) / 'distill_config.py', cfg.pretty_text)
    return train_config(cfg, args, f'{args.method} distillation of {student_path}')
