"""Composition of a teacher-free LGD run (``python -m pgd distill --method lgd``).

The run keeps the student's data, schedule and runtime; its model becomes a
:class:`pgd.distill.lgd.detector.LabelGuidedSelfDistiller` around the student with the
hyper-parameters of ``config/distill/lgd.py`` (``lgd``), the per-detector ``detector_overrides``
and then ``--loss-options`` applied on top. ``--teacher``/``--teacher-ckpt`` are not used.
"""
from __future__ import annotations

import copy

from pgd.engine.distill_common import (add_custom_import, detector_name, finish_config,
                                       scale_loss_weights)

LGD_MODULE = 'pgd.distill.lgd.detector'


def lgd_params(method_cfg, detector: str, loss_options: dict | None) -> dict:
    """The LabelGuidedSelfDistiller keyword arguments for one detector."""
    from pgd.errors import UserError
    overrides = method_cfg.get('detector_overrides', {})
    if detector not in overrides:
        raise UserError(f'LGD does not support detector {detector!r} '
                        f'(supported: {", ".join(overrides)})')
    params = copy.deepcopy(dict(method_cfg['lgd']))
    params.update(copy.deepcopy(dict(overrides[detector])))
    options = dict(loss_options or {})
    unknown = set(options) - set(params) - {'distill_start_iter', 'freeze_backbone_iters'}
    if unknown:
        raise UserError(f'unknown LGD option(s) {sorted(unknown)}; known: '
                        f'{sorted(set(params) | {"distill_start_iter", "freeze_backbone_iters"})}')
    params.update(options)
    if isinstance(params.get('label_mlp_channels'), list):
        params['label_mlp_channels'] = tuple(params['label_mlp_channels'])
    return params


def compose_lgd(cfg, method_cfg, args):
    """The runnable mmengine config of an LGD run (the student config, model replaced)."""
    import importlib

    from mmengine.logging import print_log

    importlib.import_module(LGD_MODULE)  # registers LabelGuidedSelfDistiller
    detector = detector_name(cfg.model)
    if getattr(args, 'teacher', None) or getattr(args, 'teacher_ckpt', None):
        print_log('LGD is teacher-free: --teacher/--teacher-ckpt are ignored', 'current')
    params = lgd_params(method_cfg, detector, getattr(args, 'loss_options', None))
    # the global scale acts on the distillation term (Eq. 7: loss_weight = lambda), not on
    # the instructive features' own detection loss (inst_loss_weight)
    scale_loss_weights({'lgd': params}, getattr(args, 'loss_scale', 1.0))
    cfg.model = dict(type='LabelGuidedSelfDistiller', student=cfg.model, **params)
    # The frozen backbone (early iterations) gets no gradient; DDP must tolerate that.
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                 find_unused_parameters=True)
    # So that the saved distill_config.py also registers the model when re-loaded.
    add_custom_import(cfg, LGD_MODULE)
    finish_config(cfg, args, 'lgd', detector, None)
    return cfg
