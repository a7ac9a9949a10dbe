"""Stop a run whose pretrained backbone checkpoint is missing or does not fit, before training.

MMEngine's ``PretrainedInit`` loads with ``strict=False``: a checkpoint of another backbone
(say the mini R34 teacher's weights given to the R18 student) only logs warnings about missing
keys and size mismatches, and the run then trains a partly random backbone as if it were
pretrained; a missing file fails only after the Runner is built, with a traceback.
:func:`check_pretrained` reads every local ``init_cfg=dict(type='Pretrained', ...)`` of a model
config and raises a one-line :class:`~pgd.errors.UserError` naming the file and the expected
backbone. Remote checkpoints (``torchvision://``, ``mmcls://``, ``https://`` ...: the paper
scale's ImageNet weights) are left to MMEngine, which downloads and loads them.

**Which scale's checkpoint.** The mini detector configs serve several workflow scales (mini,
smoke, tuning: ``config_dir: mini``), each with its own pretraining output
``results/<scale>/pretrain/<size>/backbone.pth`` (workflow/rules/pretrain.smk). The size base
files (``config/detectors/_base_/sizes/mini_*.py``) therefore name the checkpoint with a
``{scale}`` placeholder, ``results/{scale}/pretrain/mini_r18/backbone.pth``, and set the
top-level key ``pretrain_scale = 'none'`` (from scratch, so a hand-run or a unit test needs no
file). :func:`resolve_pretrained` (called first by
:func:`check_pretrained`, i.e. by ``pgd train`` and ``pgd distill`` before the Runner is built)
fills the placeholder from ``cfg.pretrain_scale``; the workflow passes
``--cfg-options pretrain_scale=<scale>`` (one option for every size) at every scale whose
config has a ``pretrain`` block, and makes the job depend on the pretrain rule's output. ``pretrain_scale=none``
drops the placeholder inits: the backbone trains from scratch (the pre-pretraining behaviour,
for unit tests and controls). :func:`pgd.pretrain.required.required_checkpoints` tells the workflow planner which
files a config needs, so the train/distill rules can depend on the pretrain rule.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator, Tuple

from pgd.errors import UserError

_MAX_LISTED = 3  # keys quoted per kind of mismatch; the line stays readable


def pretrained_inits(model_cfg, where: str = 'model') -> Iterator[Tuple[str, dict, dict]]:
    """``(dotted path, module config, its Pretrained init_cfg)`` for every module of a model
    config (nested models such as a distiller's student included) that loads pretrained
    weights."""
    if isinstance(model_cfg, dict):
        inits = model_cfg.get('init_cfg')
        for init in (inits if isinstance(inits, (list, tuple)) else [inits]):
            if isinstance(init, dict) and init.get('type') == 'Pretrained':
                yield where, model_cfg, init
        for key, value in model_cfg.items():
            if key != 'init_cfg':
                yield from pretrained_inits(value, f'{where}.{key}')
    elif isinstance(model_cfg, (list, tuple)):
        for i, value in enumerate(model_cfg):
            yield from pretrained_inits(value, f'{where}[{i}]')


def describe(module_cfg: dict, size_name: str | None = None) -> str:
    """A short name of the expected module, e.g.
    ``ResNet(depth=18, base_channels=16) [r18-w16]``."""
    keys = ('depth', 'base_channels', 'widen_factor', 'arch')
    args = ', '.join(f'{k}={module_cfg[k]}' for k in keys if k in module_cfg)
    return f"{module_cfg.get('type', '?')}({args})" + (f' [{size_name}]' if size_name else '')


def _checkpoint_state(path: Path, prefix: str | None) -> dict:
    """The state dict MMEngine's ``PretrainedInit`` would load from ``path`` (same rules:
    ``state_dict`` entry if present, ``module.`` stripped, optional ``prefix`` selection)."""
    from mmengine.runner import CheckpointLoader

    from pgd.engine.safe_load import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location='cpu', logger='silent')
    if not isinstance(ckpt, dict):
        raise ValueError('holds no state dict')
    state = ckpt.get('state_dict', ckpt)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, 'shape')}


def _expected_state(module_cfg: dict) -> dict:
    """Parameter/buffer shapes of the module built from ``module_cfg`` without its init_cfg."""
    from mmdet.registry import MODELS

    from pgd.engine.registry import register_all
    register_all()
    cfg = copy.deepcopy(dict(module_cfg))
    for key in ('init_cfg', '_delete_', 'pretrained'):
        cfg.pop(key, None)
    module = MODELS.build(cfg)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def mismatch(expected: dict, found: dict) -> str | None:
    """Why a checkpoint's shapes do not fit the module's (None when they do). Keys the module
    lacks are tolerated (MMEngine ignores them, e.g. an ImageNet classifier's ``fc``);
    missing keys and shape mismatches are not."""
    missing = sorted(set(expected) - set(found))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    parts = []
    if missing:
        more = ', ...' if len(missing) > _MAX_LISTED else ''
        parts.append(f"{len(missing)} of its {len(expected)} tensors missing "
                     f"({', '.join(missing[:_MAX_LISTED])}{more})")
    if shapes:
        k = shapes[0]
        parts.append(f'{len(shapes)} of other shape (e.g. {k}: {found[k]} in the file, '
                     f'{expected[k]} expected)')
    return '; '.join(parts) or None


SCALE_PLACEHOLDER = '{scale}'
#: ``pretrain_scale`` values that mean "no pretrained weights: train the backbone from scratch".
NO_PRETRAIN = (None, '', 'none', 'None', 'scratch')


def _is_placeholder_init(init: dict) -> bool:
    return SCALE_PLACEHOLDER in str(init.get('checkpoint') or '')


def _drop_init(module_cfg: dict, init: dict) -> None:
    inits = module_cfg.get('init_cfg')
    if isinstance(inits, (list, tuple)):
        kept = [i for i in inits if i is not init]
        module_cfg['init_cfg'] = kept or None
    else:
        module_cfg['init_cfg'] = None


def _drop_teacher_inits(model_cfg) -> None:
    """A distiller's teacher (``model.teacher`` with ``model.teacher_ckpt``) is loaded strictly
    from its trained checkpoint after ``init_weights``: its backbone's Pretrained init would
    only be overwritten, so it is dropped and its file is not required."""
    if not (isinstance(model_cfg, dict) and model_cfg.get('teacher_ckpt')
            and isinstance(model_cfg.get('teacher'), dict)):
        return
    for _, module_cfg, init in list(pretrained_inits(model_cfg['teacher'])):
        _drop_init(module_cfg, init)


def resolve_pretrained(cfg) -> list:
    """Fill the ``{scale}`` placeholder of every Pretrained init in ``cfg.model`` from
    ``cfg.pretrain_scale`` (in place); with ``pretrain_scale`` none/scratch, drop those inits
    (from scratch). Returns the resolved checkpoint paths. A placeholder with no
    ``pretrain_scale`` in the config is a one-line UserError."""
    scale = cfg.get('pretrain_scale') if hasattr(cfg, 'get') else None
    has_key = hasattr(cfg, 'get') and 'pretrain_scale' in cfg
    _drop_teacher_inits(cfg.get('model', {}))
    resolved = []
    for where, module_cfg, init in list(pretrained_inits(cfg.get('model', {}))):
        if not _is_placeholder_init(init):
            continue
        if scale in NO_PRETRAIN:
            if not has_key:
                raise UserError(f'{where}: pretrained checkpoint {init["checkpoint"]} names a '
                                f'{SCALE_PLACEHOLDER} but the config sets no pretrain_scale '
                                f'(e.g. --cfg-options pretrain_scale=mini)')
            _drop_init(module_cfg, init)
            continue
        init['checkpoint'] = str(init['checkpoint']).replace(SCALE_PLACEHOLDER, str(scale))
        resolved.append(init['checkpoint'])
    return resolved


def pretrain_size(checkpoint: str) -> str | None:
    """The backbone size of a workflow pretraining output path
    (``results/<scale>/pretrain/<size>/backbone.pth`` -> ``<size>``), else None."""
    parts = Path(checkpoint).parts
    if len(parts) >= 3 and parts[-1] == 'backbone.pth' and parts[-3] == 'pretrain':
        return parts[-2]
    return None


def check_pretrained(cfg) -> int:
    """Raise a one-line UserError when a local pretrained checkpoint named in ``cfg.model`` is
    missing, unreadable or does not fit its module; returns how many checkpoints were checked.
    Call it on the final config, before ``Runner.from_cfg`` (nothing is trained or written
    when it fails). It first resolves the ``{scale}`` placeholder (:func:`resolve_pretrained`),
    in place, so the Runner loads the resolved file."""
    resolve_pretrained(cfg)
    size_name = cfg.get('size_name') if hasattr(cfg, 'get') else None
    checked = 0
    for where, module_cfg, init in pretrained_inits(cfg.get('model', {})):
        ckpt = str(init.get('checkpoint') or '')
        if '://' in ckpt:
            continue  # remote (ImageNet) weights: MMEngine downloads and loads them
        expected = f'{where} = {describe(module_cfg, size_name)}'
        size = pretrain_size(ckpt) or '<size>'
        make = f'make it with `python -m pgd pretrain-backbone --size {size}`'
        path = Path(ckpt)
        if not ckpt or not path.is_file():
            raise UserError(f'pretrained checkpoint not found: {ckpt or "(empty path)"} '
                            f'(expected weights for {expected}; {make})')
        try:
            found = _checkpoint_state(path, init.get('prefix'))
        except Exception as exc:  # any unreadable file is the same user error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f'pretrained checkpoint {path} is not a readable checkpoint '
                            f'({first}; expected weights for {expected}; {make})') from None
        why = mismatch(_expected_state(module_cfg), found)
        if why:
            raise UserError(f'pretrained checkpoint {path} does not fit {expected}: {why} '
                            f'({make})')
        checked += 1
    return checked
