"""Constants and the working dtype shared by every PGW module.

Kept in their own module so that every other module of the package can import them without
importing each other (no cycles); the choice of the ridge is explained in the package docstring.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Ridge added to the MLE covariance, in px^2 (see the package docstring for the choice).
DEFAULT_RIDGE = 1e-2
CANDIDATE_MODES = ('inside', 'all_then_mask')
#: Soft bound on the number of elements of one (pairs x A) or (B x G_chunk x N x A) block.
DEFAULT_CHUNK_ELEMS = 1 << 24


def _work_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32
