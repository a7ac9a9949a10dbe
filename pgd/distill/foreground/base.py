"""The strategy registry and the helpers every foreground strategy shares.

Kept apart from the package ``__init__`` so the strategy modules import it without importing
the package that imports them (no import cycle).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from pgd.distill.pgw import batch_level_index, normalise_per_level, points_inside_boxes

__all__ = [
    'STRATEGIES', 'register_strategy', 'build_strategy', 'ForegroundStrategy', 'batch_geometry',
    'combine_gts', 'out_dtype'
]

#: name -> strategy class (filled by :func:`register_strategy` when the modules are imported).
STRATEGIES: Dict[str, Callable] = {}


def register_strategy(name: str) -> Callable:
    """Class decorator registering a foreground strategy under ``name`` (lower case)."""
    key = name.lower()

    def deco(cls):
        old = STRATEGIES.get(key)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ValueError(f'foreground strategy {key!r} is already registered as '
                             f'{old.__module__}.{old.__qualname__}')
        STRATEGIES[key] = cls
        cls.strategy_name = key
        return cls

    return deco


def build_strategy(name: str, **cfg):
    """Instantiate the strategy registered as ``name`` (case-insensitive) with ``cfg``.

    Raises:
        ValueError: unknown name (the message lists the known names).
        TypeError: ``cfg`` has keywords the strategy does not accept.
    """
    key = str(name).lower()
    if key not in STRATEGIES:
        raise ValueError(f'unknown foreground strategy {name!r}; known strategies: '
                         f'{", ".join(sorted(STRATEGIES))}')
    return STRATEGIES[key](**cfg)


# ----------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------
def out_dtype(batch) -> torch.dtype:
    """float64 when the teacher probabilities are float64, else float32 (as PGW)."""
    return torch.float64 if batch.teacher_cls_prob.dtype == torch.float64 else torch.float32


def batch_geometry(batch) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Detached geometry of a batch on the teacher's device.

    Returns:
        points (N, 2), level_index (N,), gt_bboxes (B, G, 4), gt_valid (B, G) bool and the
        strict inside mask (B, G, N) bool (False for padded GTs).
    """
    device = batch.teacher_cls_prob.device
    points = batch.points.detach().to(device)
    gt_bboxes = batch.gt_bboxes.detach().to(device)
    gt_valid = batch.gt_valid.to(device=device, dtype=torch.bool)
    level_index = batch_level_index(batch.level_sizes, device=device)
    inside = points_inside_boxes(points, gt_bboxes, gt_valid)
    return points, level_index, gt_bboxes, gt_valid, inside


@torch.no_grad()
def combine_gts(per_gt: Tensor, batch) -> Tensor:
    """(B, G, N) per-GT importance -> (B, N) mask: max over GTs, then Eq. 4 normalisation."""
    level_index = batch_level_index(batch.level_sizes, device=per_gt.device)
    per_gt = per_gt.detach().to(out_dtype(batch))
    if per_gt.shape[1] == 0:
        imp = per_gt.new_zeros(per_gt.shape[0], per_gt.shape[2])
    else:
        imp = per_gt.amax(dim=1)
    return normalise_per_level(imp, level_index, len(batch.level_sizes))


class ForegroundStrategy:
    """Base class: subclasses implement :meth:`per_gt` (one (B, G, N) tensor per ``xi``)."""

    strategy_name = None
    #: whether the strategy depends on ``xi`` (teacher quality); if not, it is computed once.
    uses_quality = False

    def per_gt(self, batch, xis: Sequence[float]) -> List[Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def masks(self, batch, xis: Sequence[float]) -> List[Tensor]:
        xis = [float(x) for x in xis]
        if not xis:
            return []
        if not self.uses_quality:
            mask = combine_gts(self.per_gt(batch, xis[:1])[0], batch)
            return [mask for _ in xis]
        return [combine_gts(p, batch) for p in self.per_gt(batch, xis)]

    def __call__(self, batch, xi: float) -> Tensor:
        return self.masks(batch, (xi, ))[0]

    def _extra_repr(self) -> str:
        return ''

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self._extra_repr()})'
