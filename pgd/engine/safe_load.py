"""Let torch>=2.6's safe ``torch.load(weights_only=True)`` read MMEngine checkpoints.

MMEngine writes its message hub (``HistoryBuffer`` objects holding numpy arrays) and a few numpy
scalars into ``checkpoint['message_hub']``/``['meta']``. torch>=2.6 loads with
``weights_only=True`` by default and refuses those globals, which breaks ``resume``. Instead of
switching safe loading off, we allow-list exactly the classes MMEngine checkpoints contain.
"""
from __future__ import annotations

import numpy as np
import torch


def _numpy_globals():
    # Pickled numpy arrays/scalars reference these by name; the module of ``_reconstruct``
    # moved from numpy.core to numpy._core in numpy 2.
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32,
                                                 np.bool_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def mmengine_safe_globals() -> list:
    """The exact globals found in checkpoints written by MMEngine's CheckpointHook/Runner."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, *_numpy_globals()]


def allow_mmengine_checkpoints() -> None:
    """Register the allow-list once per process (idempotent)."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 has no safe-globals list and no weights_only default
        add(mmengine_safe_globals())
