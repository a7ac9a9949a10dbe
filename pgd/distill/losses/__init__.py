"""Distillation loss modules (importing this package registers them in mmdet's MODELS)."""
from .pgd_loss import PGDLoss

__all__ = ['PGDLoss']
