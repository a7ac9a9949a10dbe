"""Distillation method options (``--loss-options key=value``): one set of rules for the CLI
and for the workflow planner.

* **Values** follow ``$defs.loss_options`` of ``workflow/schemas/config.schema.yaml`` -- the
  schema the workflow config is validated with -- so ``k=0``, ``k=2.7``, ``alpha=-1`` or
  ``alpha=abc`` fail the same way whether they come from ``pgd distill`` or from a config.
* **Keys** must be options the method really reads. A misspelt key (``kk=9``) would
  otherwise be passed on and silently ignored (or crash deep inside a loss constructor). The
  known keys of a method come from the code that consumes them, not from a second list:
  the keyword arguments of the ``__init__`` of each loss in ``distill_losses`` of
  ``config/distill/<method>.py`` (``inspect.signature``), plus ``loss_scale`` (every method),
  plus the extras of LD (``ld_variant``, ``ld_head_options``, the keyword arguments of the KL
  losses of its heads) and LGD (the hyper-parameters of ``LabelGuidedSelfDistiller``).
"""
from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import FrozenSet, Mapping

from pgd.errors import UserError
from pgd.paths import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / 'workflow' / 'schemas' / 'config.schema.yaml'
METHOD_ROOT = REPO_ROOT / 'config' / 'distill'
#: a method name is a plain file stem of config/distill/ (never a path).
METHOD_NAME_RE = re.compile(r'^[a-z][a-z0-9_]*$')
#: the global factor every method has (pgd.engine.distill_common.split_loss_scale, applied
#: by pgd.engine.distill_common.scale_loss_weights).
COMMON_OPTIONS = frozenset({'loss_scale'})
#: constructor arguments the distiller fills in itself (FPN widths); setting them by hand
#: would contradict the real networks, so they are not options.
INJECTED_ARGS = frozenset({'self', 'student_channels', 'teacher_channels'})
#: LabelGuidedSelfDistiller arguments that are not hyper-parameters.
LGD_NON_OPTIONS = frozenset({'self', 'student', 'data_preprocessor', 'init_cfg', 'train_cfg',
                             'test_cfg'})


def method_config_path(method: str):
    """``config/distill/<method>.py`` -- the one place the method configs' folder is read
    (:data:`METHOD_ROOT`, looked up at call time so a test can point it elsewhere)."""
    return METHOD_ROOT / f'{method}.py'


def check_method_name(method: str) -> None:
    """A method is a file stem of config/distill/ (``^[a-z][a-z0-9_]*$``): a name like
    ``../../x`` must never select a Python file outside that folder."""
    if not isinstance(method, str) or not METHOD_NAME_RE.match(method):
        raise UserError(f'bad method name {method!r}: must match {METHOD_NAME_RE.pattern} and '
                        f'name a file of config/distill/ (known: {", ".join(known_methods())})')
    if not method_config_path(method).is_file():
        raise UserError(f"unknown distillation method '{method}' "
                        f"(known: {', '.join(known_methods())})")


def known_methods() -> list:
    return sorted(p.stem for p in METHOD_ROOT.glob('*.py') if METHOD_NAME_RE.match(p.stem))


@functools.lru_cache(maxsize=1)
def option_schema() -> dict:
    """``$defs.loss_options`` of the workflow schema, with every ``$defs`` entry alongside so
    its ``$ref``s resolve. Key *names* are checked against the method (:func:`known_options`),
    so the schema's generic ``propertyNames`` pattern is left out here: it would reject LD's
    ``T`` (the KL temperature), which ``pgd distill`` accepts."""
    import yaml
    with open(SCHEMA_PATH, encoding='utf-8') as fh:
        schema = yaml.safe_load(fh)
    defs = copy.deepcopy(schema['$defs'])
    opts = dict(defs['loss_options'])
    opts.pop('propertyNames', None)
    return {'$schema': schema.get('$schema'), '$defs': defs, **opts}


def _allowed(sub: Mapping, defs: Mapping) -> str:
    """A short human description of what a schema node allows (for the error line)."""
    while '$ref' in sub:
        sub = defs[sub['$ref'].split('/')[-1]]
    if 'enum' in sub:
        return 'one of ' + ', '.join(map(str, sub['enum']))
    kind = sub.get('type', 'a value')
    parts = []
    for key, sym in (('exclusiveMinimum', '>'), ('minimum', '>='), ('exclusiveMaximum', '<'),
                     ('maximum', '<=')):
        if key in sub:
            parts.append(f'{sym} {sub[key]}')
    if kind == 'array':
        return 'a list [a,b] of ' + _allowed(sub.get('items', {}), defs)
    text = {'integer': 'an integer', 'number': 'a number', 'boolean': 'true or false',
            'string': 'a string'}.get(kind, str(kind))
    return text + (' ' + ' and '.join(parts) if parts else '')


def check_option_values(options: Mapping) -> None:
    """Validate option values against ``$defs.loss_options``; one-line :class:`UserError`
    naming the key, the value and what is allowed."""
    from jsonschema import Draft202012Validator
    schema = option_schema()
    validator = Draft202012Validator(schema)
    for key in sorted(options):
        value = options[key]
        if isinstance(value, tuple):
            value = list(value)
        if not list(validator.iter_errors({key: value})):
            continue
        sub = schema.get('properties', {}).get(key, schema.get('additionalProperties', {}))
        raise UserError(f'loss option {key}={value!r} is not allowed: {key} must be '
                        f'{_allowed(sub, schema["$defs"])}')


def _kwargs(fn, drop: FrozenSet[str]) -> set:
    """Named parameters of ``fn`` (no ``*args``/``**kwargs``) except ``drop``."""
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in drop}


def _load_method_cfg(method: str):
    from mmengine.config import Config
    check_method_name(method)
    return Config.fromfile(str(method_config_path(method)), import_custom_modules=False)


def known_options(method: str) -> FrozenSet[str]:
    """The option keys ``method`` consumes (see the module docstring for where they come
    from). Imports the loss modules (torch, mmdet) once; cached per config file."""
    check_method_name(method)
    return _known_options(method, str(method_config_path(method)))


@functools.lru_cache(maxsize=None)
def _known_options(method: str, path: str) -> FrozenSet[str]:
    import pgd.distill.losses  # noqa: F401  registers the losses in mmdet's MODELS
    from mmdet.registry import MODELS
    cfg = _load_method_cfg(method)
    keys = set(COMMON_OPTIONS)
    for loss in (cfg.get('distill_losses') or {}).values():
        keys |= _kwargs(MODELS.get(loss['type']).__init__, INJECTED_ARGS)
    if 'ld_heads' in cfg:  # pgd.engine.distill_ld.compose_ld
        keys.add('ld_variant')
        keys |= set(cfg.get('ld_head_options', ()))
        for head in cfg.ld_heads.values():
            for term in ('loss_ld', 'loss_ld_vlr'):  # the KL terms other keys update
                if head.get(term):
                    keys |= _kwargs(MODELS.get(head[term]['type']).__init__, frozenset({'self'}))
    if 'lgd' in cfg:  # pgd.engine.distill_lgd.lgd_params
        from pgd.distill.lgd.detector import LabelGuidedSelfDistiller
        keys |= set(cfg.lgd) | _kwargs(LabelGuidedSelfDistiller.__init__, LGD_NON_OPTIONS)
    return frozenset(keys)


def check_option_keys(method: str, options: Mapping) -> None:
    """Unknown keys -> one-line :class:`UserError` listing the method's known options."""
    unknown = sorted(set(options) - known_options(method))
    if unknown:
        known = ', '.join(sorted(known_options(method)))
        raise UserError(f'unknown loss option{"s" if len(unknown) > 1 else ""} '
                        f'{", ".join(unknown)} for method {method} (known: {known})')


def check_method_options(method: str, options: Mapping | None) -> None:
    """Both checks: the keys ``method`` knows, then the schema's value rules."""
    options = dict(options or {})
    check_option_keys(method, options)
    check_option_values(options)
