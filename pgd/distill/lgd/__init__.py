"""LGD: Label-Guided Self-Distillation (Zhang et al., AAAI 2022), teacher-free.

``label_encoder`` and ``interaction`` are plain torch; ``detector`` (imported lazily, it needs
mmdet) registers :class:`LabelGuidedSelfDistiller` in ``mmdet.registry.MODELS``.
"""
from .interaction import (AppearanceEncoder, InstructiveKnowledge, InterObjectRelationAdapter,
                          IntraObjectKnowledgeMapper, mask_pool, object_masks)
from .label_encoder import LabelEncoder, build_label_descriptors

__all__ = [
    'AppearanceEncoder', 'InstructiveKnowledge', 'InterObjectRelationAdapter',
    'IntraObjectKnowledgeMapper', 'mask_pool', 'object_masks', 'LabelEncoder',
    'build_label_descriptors'
]
