"""Distillation loss modules; importing this package registers them in mmdet's ``MODELS``.

Every ``*_loss.py`` module of this package is imported (so a new loss only needs its file);
an import error in one of them is raised, not hidden.
"""
import importlib
import pkgutil

from .pgd_loss import PGDLoss

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.endswith('_loss'):
        importlib.import_module(f'{__name__}.{_info.name}')
del _info

__all__ = ['PGDLoss']
