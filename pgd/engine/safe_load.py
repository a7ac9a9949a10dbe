"""Let torch>=2.6's safe ``torch.load(weights_only=True)`` read MMEngine checkpoints.

MMEngine writes its message hub (``HistoryBuffer`` objects holding numpy arrays), numpy scalars
and the LR scheduler's ``collections.Counter`` milestones into every checkpoint. torch>=2.6
loads with ``weights_only=True`` by default and refuses those globals, which breaks ``resume``.
Instead of switching safe loading off, we allow-list exactly the globals such checkpoints
contain (found by disassembling one: ``pickletools.genops`` over ``data.pkl``).

One of them is ``builtins.getattr``: ``HistoryBuffer.__getstate__`` pickles its statistics
functions (``HistoryBuffer.min`` ...), which pickle resolves as ``getattr(HistoryBuffer,
'min')``. Allowing the real ``getattr`` would let a checkpoint reach any attribute of any
allowed object, so the name is bound to a restricted stand-in that resolves only the
statistics methods of ``HistoryBuffer`` and raises for anything else.
"""
from __future__ import annotations

import numpy as np
import torch

_HISTORY_BUFFER_STATS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name):
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATS:
        return getattr(HistoryBuffer, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer statistics '
        f'methods {_HISTORY_BUFFER_STATS} are allowed')


def _numpy_globals() -> list:
    # numpy 2 moved these from numpy.core to numpy._core; pickles name the module they were
    # written with, so register both spellings that can occur.
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma
    dtype_classes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                                 np.int32, np.int8, np.uint8, np.bool_)}
    return [ma._reconstruct, ma.scalar, np.ndarray, np.dtype, *dtype_classes]


def mmengine_safe_globals() -> list:
    """The exact globals found in checkpoints written by MMEngine's CheckpointHook/Runner."""
    import _codecs
    import collections

    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, collections.Counter, _codecs.encode, *_numpy_globals(),
            (_history_buffer_getattr, '__builtin__.getattr'),
            (_history_buffer_getattr, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    """Register the allow-list (idempotent)."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # older torch has no allow-list and no weights_only default
        add(mmengine_safe_globals())
