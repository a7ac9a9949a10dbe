"""torch>=2.6 safe loading of MMEngine checkpoints without disabling weights_only."""
from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from pgd.engine.safe_load import _history_buffer_getattr, allow_mmengine_checkpoints


def _mmengine_like_checkpoint(path):
    buf = HistoryBuffer()
    buf.update(1.5)
    buf.update(2.5)
    torch.save({'state_dict': {'w': torch.ones(2)},
                'message_hub': {'log_scalars': {'train/lr': buf}},
                'meta': {'seed': np.int64(3), 'eta': np.float64(1.0)},
                'param_schedulers': [{'milestones': collections.Counter({8: 1, 11: 1})}]}, path)


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'ckpt.pth'
    _mmengine_like_checkpoint(path)
    allow_mmengine_checkpoints()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['message_hub']['log_scalars']['train/lr'].mean() == pytest.approx(2.0)
    assert int(ckpt['meta']['seed']) == 3


def test_getattr_stand_in_only_resolves_history_buffer_statistics():
    assert _history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        _history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError):
        _history_buffer_getattr(torch, 'load')


def test_arbitrary_globals_are_still_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    path = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, path)
    allow_mmengine_checkpoints()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
