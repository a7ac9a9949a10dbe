"""Base class of the training-time wrappers around a student detector.

The distillers (teacher-student and teacher-free LGD) only change how the student is trained:
at inference, feature extraction and export everything goes to ``self.student``, so the saved
``final.pth`` is a plain MMDetection detector of the student's own config.
"""
from __future__ import annotations

from mmdet.models.detectors.base import BaseDetector
from torch import Tensor, nn


class StudentWrapperDetector(BaseDetector):
    """Subclasses set ``self.student`` and implement ``loss``."""

    student: nn.Module

    def deployable_detector(self) -> nn.Module:
        return self.student

    def extract_feat(self, batch_inputs: Tensor):
        return self.student.extract_feat(batch_inputs)

    def _forward(self, batch_inputs, batch_data_samples=None):
        return self.student._forward(batch_inputs, batch_data_samples)

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        return self.student.predict(batch_inputs, batch_data_samples, rescale=rescale)
