"""Composition of an LD run (``engine='ld'`` in :mod:`pgd.catalog`; GFL only, checked from the
catalog's ``Method.supports`` by :mod:`pgd.engine.distill`).

LD goes through MMDetection's KnowledgeDistillationSingleStageDetector with the head that
``ld_variant`` of config/distill/ld.py selects (default: the official LD with VLR,
:class:`pgd.distill.ld_vlr_head.LDVLRHead`; ``main``: mmdet's own LDHead).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

from pgd.engine.distill_common import (add_custom_import, detector_name, finish_config,
                                       scale_loss_weights)


def compose_ld(cfg, method_cfg, args):
    """The runnable mmengine config of an LD run.

    ``--loss-options``: ``ld_variant``; the head options ``ld_head_options``; every other key
    updates the LD KL terms (``loss_ld`` and, when present, ``loss_ld_vlr``). ``loss_scale``
    multiplies the ``loss_weight`` of every distillation term of the head
    (``ld_distill_terms``), through :func:`scale_loss_weights`."""
    from pgd.engine.config_utils import resolve_config
    from pgd.errors import UserError
    detector = detector_name(cfg.model)
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
    scale_loss_weights({term: bbox_head[term]
                        for term in method_cfg.get('ld_distill_terms', ('loss_ld',))
                        if bbox_head.get(term)}, getattr(args, 'loss_scale', 1.0))
    module = method_cfg.get('ld_head_module')
    if module and head['type'] != 'LDHead':
        add_custom_import(cfg, module)
    finish_config(cfg, args, args.method, detector, str(args.teacher))
    return cfg
