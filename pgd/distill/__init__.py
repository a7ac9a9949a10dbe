"""Distillation components.

Kept light (torch only): importing ``pgd.distill`` does not import mmdet. Loss modules are
registered in ``mmdet.registry.MODELS`` when ``pgd.distill.losses`` is imported (add it to
``custom_imports`` in configs).
"""
from . import attention, inputs, pgw
from .attention import (channel_attention, channel_attention_pooled, spatial_attention,
                        spatial_attention_fgd)
from .inputs import CapturedFeatures, DistillBatch, level_points, pad_gts
from .pgw import (PredictionGuidedWeighting, fit_gaussian, gaussian_importance,
                  normalise_per_level, pgw_masks, prediction_guided_weighting, quality_scores,
                  topk_candidates)

__all__ = [
    'attention', 'inputs', 'pgw', 'CapturedFeatures', 'DistillBatch', 'level_points', 'pad_gts',
    'channel_attention', 'channel_attention_pooled', 'spatial_attention',
    'spatial_attention_fgd', 'PredictionGuidedWeighting', 'fit_gaussian',
    'gaussian_importance', 'normalise_per_level', 'pgw_masks', 'prediction_guided_weighting',
    'quality_scores', 'topk_candidates'
]
