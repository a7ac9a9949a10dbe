"""Composition of a teacher-free LGD run (``python -m pgd distill --method lgd``).

The run keeps the student's data, schedule and runtime; its model becomes a
:class:`pgd.distill.lgd.detector.LabelGuidedSelfDistiller` around the student with the
hyper-parameters of ``config/distill/lgd.py`` (``lgd``), the per-detector ``detector_overrides``
and then ``--loss-options`` applied on top. ``--teacher``/``--teacher-ckpt`` are not used.
"""
from __future__ import annotations

import copy

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

    from pgd.engine.distill import detector_name
    importlib.import_module(LGD_MODULE)  # registers LabelGuidedSelfDistiller
    detector = detector_name(cfg.model)
    if getattr(args, 'teacher', None) or getattr(args, 'teacher_ckpt', None):
        print_log('LGD is teacher-free: --teacher/--teacher-ckpt are ignored', 'current')
    params = lgd_params(method_cfg, detector, getattr(args, 'loss_options', None))
    # the global scale acts on the distillation term (Eq. 7), not on the instructive
    # features' own detection loss
    params['loss_weight'] *= getattr(args, 'loss_scale', 1.0)
    cfg.model = dict(type='LabelGuidedSelfDistiller', student=cfg.model, **params)
    # The frozen backbone (early iterations) gets no gradient; DDP must tolerate that.
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                 find_unused_parameters=True)
    # So that the saved distill_config.py also registers the model when re-loaded.
    imports = list((cfg.get('custom_imports') or {}).get('imports', []))
    if LGD_MODULE not in imports:
        imports.append(LGD_MODULE)
    cfg.custom_imports = dict(imports=imports, allow_failed_imports=False)
    cfg.distill = dict(method='lgd', detector=detector, teacher=None,
                       loss_options=dict(getattr(args, 'loss_options', None) or {}),
                       loss_scale=getattr(args, 'loss_scale', 1.0))
    if getattr(args, 'cfg_options', None):
        cfg.merge_from_dict(args.cfg_options)
    return cfg
