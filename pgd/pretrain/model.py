"""The synthetic pretraining model and metric, and the backbone of a detector size.

``BackboneClassifier`` is the ImageNet-classifier analogue: the detector's backbone, global
average pooling of its last output and one linear layer, trained with cross-entropy on the
shape class of object crops (:mod:`pgd.pretrain.data`). Only the backbone is kept
(``backbone.pth``); the pooling and linear head are discarded like an ImageNet classifier's fc.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import METRICS, MODELS
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch import nn

from pgd.paths import REPO_ROOT

SIZES_DIR = REPO_ROOT / 'config' / 'detectors' / '_base_' / 'sizes'
# The detectors' input normalisation (config/detectors/_base_/models/*.py): pretraining must
# feed the backbone the same normalised RGB inputs the detector will.
DETECTOR_PREPROCESSOR = dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                             std=[58.395, 57.12, 57.375], bgr_to_rgb=True)


def known_sizes() -> List[str]:
    return sorted(p.stem for p in SIZES_DIR.glob('*.py'))


def size_backbone(size: str):
    """``(backbone_cfg, size_name, path)`` of ``config/detectors/_base_/sizes/<size>.py``.

    The config is the detectors' own ``size_backbone`` without the config-merge key
    ``_delete_`` and without ``init_cfg`` (pretraining starts from the backbone's default
    random init); frozen stages and frozen/eval BatchNorm (the paper sizes, made for ImageNet
    weights) are switched off, since pretraining from scratch must train every layer. None of
    this changes the parameter names or shapes, so the weights fit the detector's backbone."""
    from mmengine.config import Config

    from pgd.errors import UserError
    path = SIZES_DIR / f'{size}.py'
    if not path.is_file():
        raise UserError(f"unknown backbone size '{size}' (known: {', '.join(known_sizes())}, "
                        f'the files in config/detectors/_base_/sizes/)')
    cfg = Config.fromfile(str(path))
    backbone = copy.deepcopy(cfg.size_backbone.to_dict())
    for key in ('_delete_', 'init_cfg', 'pretrained'):
        backbone.pop(key, None)
    backbone.update(frozen_stages=-1, norm_eval=False)
    if 'norm_cfg' in backbone:
        backbone['norm_cfg'] = dict(backbone['norm_cfg'], requires_grad=True)
    return backbone, cfg.get('size_name', size), path


@MODELS.register_module()
class BackboneClassifier(BaseModel):
    """Backbone + global average pooling of its last output + linear layer, cross-entropy.

    ``forward(mode='loss')`` returns ``{'loss_cls': ...}``; ``mode='predict'`` returns one dict
    per crop with its class ``scores`` (softmax) and the ``gt_label`` it is scored against.
    """

    def __init__(self, backbone: dict, num_classes: int,
                 data_preprocessor: Optional[dict] = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor or DETECTOR_PREPROCESSOR,
                         init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.head = nn.Linear(self._out_channels(), num_classes)

    def _out_channels(self) -> int:
        """Channels of the backbone's last output (one probe forward: no per-architecture
        table to keep in sync with the size files)."""
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            channels = self.backbone(torch.zeros(1, 3, 64, 64))[-1].shape[1]
        self.backbone.train(was_training)
        return int(channels)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(inputs)[-1]
        return self.head(F.adaptive_avg_pool2d(feat, 1).flatten(1))

    def forward(self, inputs: torch.Tensor, data_samples: Optional[Sequence] = None,
                mode: str = 'tensor'):
        logits = self.logits(inputs)
        if mode == 'tensor':
            return logits
        labels = torch.stack(list(data_samples)).to(logits.device).long()
        if mode == 'loss':
            return {'loss_cls': F.cross_entropy(logits, labels)}
        if mode == 'predict':
            scores = logits.softmax(dim=1).detach().cpu()
            return [{'scores': s, 'gt_label': int(t)} for s, t in zip(scores, labels)]
        raise ValueError(f'unknown mode {mode!r}')


@METRICS.register_module()
class CropAccuracy(BaseMetric):
    """Shape classification of the held-out pretraining val crops, in percent: ``accuracy``
    (top-1), ``mean_class_accuracy`` (top-1 averaged over the classes) and ``chance``
    (the most frequent class's share: what always answering it scores)."""

    default_prefix = 'pretrain'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append((int(sample['scores'].argmax()), sample['gt_label']))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        pred = np.array([r[0] for r in results])
        gt = np.array([r[1] for r in results])
        per_class = [float((pred[gt == c] == c).mean()) for c in np.unique(gt)]
        return {'accuracy': 100 * float((pred == gt).mean()),
                'mean_class_accuracy': 100 * float(np.mean(per_class)),
                'chance': 100 * float(np.bincount(gt).max() / len(gt))}
