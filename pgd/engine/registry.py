"""Import every module that registers pgd components into MMDetection's registries.

MMEngine builds objects by name from configs, so the classes must be imported (registered)
before a Runner is built; keeping the list here avoids import side effects elsewhere.
"""
import importlib

_MODULES = (
    'mmdet.models',
    'pgd.distill.distiller',
    'pgd.distill.losses',
    'pgd.distill.lgd.detector',
    'pgd.distill.ld_vlr_head',
    'pgd.pretrain.data', 'pgd.pretrain.model',
)


def register_all() -> None:
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    for name in _MODULES:
        importlib.import_module(name)
