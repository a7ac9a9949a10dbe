"""ATen operator counts: the host-side cost of a step where the device is not the bottleneck.

On a GPU each dispatched operator costs host time (dispatch, at least one kernel launch) whatever
its size; at paper scale on an H200 a PGD step was bound by the host (benchmarks/README.md), so
the count of operators a method adds is what its step time follows there. The count is
deterministic for a given input, so it can be compared across commits on any machine.
"""
from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def aten_op_count(fn) -> int:
    """Number of ATen operators one call of ``fn`` dispatches (forward, autograd's backward and
    the optimiser step alike; views included)."""
    counter = _Count()
    with counter:
        fn()
    return counter.n
