"""``sum(w * (F^T - F^S)^2)`` with its gradient written out: the feature-imitation core of
PGD's Eq. 5 / Eq. 6 (and of every "weighted MSE to a frozen teacher" term).

Autograd of the plain expression ``(w * (f_t - f_s).pow(2)).sum()`` records a subtraction, a
power and a product and replays them backwards (~8 passes over the feature map). The gradient
is known in closed form, ``d/dF^S = -2 w (F^T - F^S) = 2 w (F^S - F^T)``, so here the forward
is three passes (difference, weighted difference, dot product) and the backward one product of
the saved weighted difference. Part of the PGD loss's -13 to -18 % (forward + backward, mini
detectors, 1 thread; ``benchmarks/README.md``). The teacher features and the weights
must not require gradients (they are detached teacher quantities in every caller); that is
checked, so the missing gradients cannot pass silently.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _WeightedSquaredError(torch.autograd.Function):

    @staticmethod
    def forward(ctx, f_t: Tensor, f_s: Tensor, w: Tensor) -> Tensor:
        # in the callers' dtype (float32): a sum over a whole feature map must not be reduced
        # in half precision under autocast
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            diff = f_s - f_t
            w_diff = (w * diff).reshape(-1)
            ctx.save_for_backward(w_diff)
            ctx.shape = diff.shape
            return torch.dot(w_diff, diff.reshape(-1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (w_diff, ) = ctx.saved_tensors
        return None, (w_diff * (2 * grad)).view(ctx.shape), None


def weighted_squared_error(f_t: Tensor, f_s: Tensor, w: Tensor) -> Tensor:
    """``sum(w * (f_t - f_s)^2)``: a scalar; gradient to ``f_s`` only.

    Args:
        f_t: teacher tensor (any shape), no gradient.
        f_s: student tensor, same shape and dtype as ``f_t``.
        w: weights broadcastable to that shape (same dtype), no gradient.
    """
    if f_t.requires_grad or w.requires_grad:
        raise ValueError('weighted_squared_error: the teacher tensor and the weights must be '
                         'detached (their gradients are not computed)')
    if f_t.shape != f_s.shape or f_t.dtype != f_s.dtype:
        raise ValueError(f'weighted_squared_error: teacher {tuple(f_t.shape)} {f_t.dtype} vs '
                         f'student {tuple(f_s.shape)} {f_s.dtype}')
    return _WeightedSquaredError.apply(f_t, f_s, w.expand_as(f_s))
