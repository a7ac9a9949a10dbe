"""What every distillation engine of ``python -m pgd distill`` shares.

The entry module :mod:`pgd.engine.distill` picks the engine of a method from the catalog
(``pgd.catalog.method(name).engine``: ``feature``, ``ld`` or ``lgd``) and hands the loaded
configs to :mod:`pgd.engine.distill_feature`, :mod:`pgd.engine.distill_ld` or
:mod:`pgd.engine.distill_lgd`. Those three import only this module (and the catalog), never
each other or the entry module, so there is no import cycle.

``loss_scale`` -- the one option every method has -- is applied in exactly one place,
:func:`scale_loss_weights`, at config-composition time: it multiplies the ``loss_weight`` of
each distillation loss config (MMDetection's convention: a loss module carries its own
weight). Nothing at training time knows about ``loss_scale``.
"""
from __future__ import annotations

import inspect
import math
from typing import Mapping, MutableMapping

from pgd import catalog

#: MMDetection ``model.type`` -> detector name, from :data:`pgd.catalog.DETECTORS`.
DETECTOR_NAMES = {d.mmdet_type: d.name for d in catalog.DETECTORS}


def detector_name(model_cfg) -> str:
    """The catalog name (``atss``) of a detector config's ``model.type`` (``ATSS``)."""
    from pgd.errors import UserError
    det = catalog.detector_by_mmdet_type(model_cfg['type'])
    if det is None:
        raise UserError(f"unknown detector type {model_cfg['type']!r}; supported: "
                        f"{', '.join(d.mmdet_type for d in catalog.DETECTORS)}")
    return det.name


def catalog_method(name: str) -> catalog.Method:
    """The catalog entry of a method that has a config file (one-line UserError if none)."""
    from pgd.errors import UserError
    try:
        return catalog.method(name)
    except KeyError:
        raise UserError(f'method {name!r} has a config/distill/{name}.py but no entry in '
                        f'pgd.catalog.METHODS (known: {", ".join(catalog.method_names())})'
                        ) from None


def check_supports(method: catalog.Method, detector: str) -> None:
    """The catalog's detector restriction of a method (e.g. LD: GFL only)."""
    from pgd.errors import UserError
    if not method.supports(detector):
        raise UserError(f'{method.label} is defined for {", ".join(method.detectors)} only, '
                        f'not {detector}')


def load_method(method: str):
    """``config/distill/<method>.py`` as an mmengine Config (``method`` is a plain name)."""
    from mmengine.config import Config

    from pgd.method_options import check_method_name, method_config_path
    check_method_name(method)  # a plain name of config/distill/, never a path out of it
    return Config.fromfile(str(method_config_path(method)))


def split_loss_scale(args) -> None:
    """Move ``loss_scale`` out of ``args.loss_options`` into ``args.loss_scale`` (default 1).

    It is the one option every method has: a global factor on all of the method's
    distillation losses, its published relative weights unchanged (the mini scale tunes it per
    method on held-out training images, config/tuning.yaml). Being a loss option, it takes part
    in the workflow's run names and defaults like any other. It is applied by
    :func:`scale_loss_weights`."""
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


#: engines that can start the student from the teacher's neck/head (the others build it fresh)
TEACHER_INIT_ENGINES = frozenset({'feature'})


def teacher_init(method_cfg, method: str, engine: str, disabled: bool = False) -> bool:
    """Whether the run starts the student's neck/head from the teacher: the method config's
    ``init_student_from_teacher`` (each config says whether its official code does it, with the
    source), turned off by ``--no-init-from-teacher``. Every method config must say it."""
    from pgd.errors import UserError
    from pgd.method_options import method_config_path
    value = method_cfg.get('init_student_from_teacher')
    if not isinstance(value, bool):
        raise UserError(f'{method_config_path(method).name}: set init_student_from_teacher = '
                        f'True or False (does the official code start the student from the '
                        f'teacher?), got {value!r}')
    if value and engine not in TEACHER_INIT_ENGINES:
        raise UserError(f'{method_config_path(method).name}: init_student_from_teacher = True '
                        f'is not available for the {engine!r} engine')
    return value and not disabled


def default_loss_weight(loss_type) -> float:
    """The ``loss_weight`` a loss config gets when it names none: the registered class's own
    default if its ``__init__`` has one, else 1.0 (a loss without a ``loss_weight`` argument
    gets the distiller-applied weight of :class:`pgd.distill.distiller.TeacherStudentDistiller`,
    whose neutral value is 1)."""
    if not loss_type:
        return 1.0
    from mmdet.registry import MODELS
    cls = MODELS.get(loss_type) if isinstance(loss_type, str) else loss_type
    if cls is None:
        return 1.0
    param = inspect.signature(cls.__init__).parameters.get('loss_weight')
    if param is None or param.default is inspect.Parameter.empty:
        return 1.0
    return float(param.default)


def scale_loss_weights(loss_cfgs: Mapping[str, MutableMapping], scale: float) -> None:
    """THE place ``loss_scale`` is applied: ``loss_weight *= scale`` in every distillation loss
    config of ``loss_cfgs`` (name -> config dict, updated in place), for every engine:

    * feature methods: each entry of the distiller's ``distill_losses``;
    * LD: the head's distillation terms (``loss_ld``, ``loss_ld_vlr``, ``loss_kd``);
    * LGD: the ``LabelGuidedSelfDistiller`` parameters (its ``loss_weight`` is lambda of
      Eq. 7, the distillation term; the instructive detection loss is not distillation).

    A config without ``loss_weight`` starts from :func:`default_loss_weight`. With
    ``scale == 1`` the weights are written explicitly but keep their values."""
    scale = float(scale)
    for cfg in loss_cfgs.values():
        weight = cfg.get('loss_weight')
        if weight is None:
            weight = default_loss_weight(cfg.get('type'))
        cfg['loss_weight'] = float(weight) * scale if scale != 1.0 else weight


def finish_config(cfg, args, method: str, detector: str, teacher) -> None:
    """Provenance (``cfg.distill``) and the user's ``--cfg-options``, last."""
    cfg.distill = dict(method=method, detector=detector, teacher=teacher,
                       loss_options=dict(getattr(args, 'loss_options', None) or {}),
                       loss_scale=getattr(args, 'loss_scale', 1.0))
    if getattr(args, 'cfg_options', None):
        cfg.merge_from_dict(args.cfg_options)


def add_custom_import(cfg, module: str) -> None:
    """So that the saved distill_config.py registers ``module``'s classes when re-loaded."""
    imports = list((cfg.get('custom_imports') or {}).get('imports', []))
    if module not in imports:
        imports.append(module)
    cfg.custom_imports = dict(imports=imports, allow_failed_imports=False)
