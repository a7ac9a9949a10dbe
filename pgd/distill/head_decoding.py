"""Decode a dense head's raw outputs into per-location class probabilities and image boxes.

PGW needs, for every prediction of the teacher, its sigmoid class probabilities and its box in
image pixels. Each MMDetection 3.3 head encodes boxes differently:

* ATSS, DDOD (anchor based): ``DeltaXYWHBBoxCoder`` deltas w.r.t. the level's anchors.
* FCOS: distances (l, t, r, b) from the point; with ``norm_on_bbox`` the head divides them by
  the level's stride *in training mode only* (in eval mode ``forward_single`` has already
  multiplied them back) -- so multiply by the stride exactly when the head is training.
* GFL: a discrete distribution over ``reg_max + 1`` bins per side; the integral is in units of
  the level's own stride, so multiply by *that level's* stride.
* AutoAssign: distances already multiplied by the stride in ``forward_single``.

Locations are the head's own priors: anchor centres ``(j*s, i*s)`` for anchor heads
(``AnchorGenerator`` uses ``center_offset=0``), points ``((j+0.5)*s, (i+0.5)*s)`` for point
heads. Points are (x, y) -- mmdet's order -- and flattened level by level, row-major.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

ANCHOR_HEADS = ('ATSSHead', 'DDODHead')
POINT_HEADS = ('FCOSHead', 'AutoAssignHead')
DISTRIBUTION_HEADS = ('GFLHead',)
SUPPORTED_HEADS = ANCHOR_HEADS + POINT_HEADS + DISTRIBUTION_HEADS


@dataclass
class DecodedPredictions:
    """Flattened dense predictions of one head for one batch.

    Attributes:
        cls_prob: (B, N, A, C) sigmoid class probabilities.
        boxes: (B, N, A, 4) decoded boxes, xyxy image pixels.
        points: (N, 2) location centres (x, y).
        level_sizes: [(H_l, W_l)].
        strides: per-level stride in pixels.
    """

    cls_prob: Tensor
    boxes: Tensor
    points: Tensor
    level_sizes: List[Tuple[int, int]]
    strides: List[int]


def head_type(head) -> str:
    name = type(head).__name__
    if name not in SUPPORTED_HEADS:
        raise NotImplementedError(
            f'distillation supports {", ".join(SUPPORTED_HEADS)}; got {name}')
    return name


def _per_location(x: Tensor, per_prior: int) -> Tensor:
    """(B, A*K, H, W) -> (B, H*W, A, K), mmdet's flattening order (location, then prior)."""
    b, ak, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, ak // per_prior, per_prior)


def head_strides(head) -> List[int]:
    strides = head.prior_generator.strides
    return [int(s[0]) if isinstance(s, (tuple, list)) else int(s) for s in strides]


# Priors are a pure function of (prior generator, level sizes, device) but cost ~20 small ops
# per level to build; at paper scale on a GPU the step is bound by the host (benchmarks/
# README.md), so they are built once per shape. A few shapes per generator are kept
# (multi-scale training changes the sizes from batch to batch); a generator's entries go with it.
_PRIOR_CACHE_SHAPES = 8
_prior_cache: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def prior_centres(head, level_sizes: Sequence[Tuple[int, int]], device) -> Tuple[Tensor, Tensor]:
    """All levels' priors, flattened level by level: (N, A, 4) anchors or (N, 1, 2) points, and
    the (N, 2) location centres. Cached (see ``_PRIOR_CACHE_SHAPES``): never modify in place."""
    key = (tuple((int(h), int(w)) for h, w in level_sizes), torch.device(device))
    shapes = _prior_cache.setdefault(head.prior_generator, OrderedDict())
    if key in shapes:
        shapes.move_to_end(key)
        return shapes[key]
    priors = head.prior_generator.grid_priors(list(key[0]), device=device)
    out_priors, centres = [], []
    for p, (h, w) in zip(priors, key[0]):
        if p.shape[-1] == 4:  # anchors, A per location
            p = p.reshape(h * w, -1, 4)
            centres.append((p[:, 0, :2] + p[:, 0, 2:]) / 2)
        else:  # points (x, y) (possibly with stride columns when with_stride=True)
            p = p[:, :2].reshape(h * w, 1, 2)
            centres.append(p[:, 0])
        out_priors.append(p)
    shapes[key] = (torch.cat(out_priors), torch.cat(centres))
    if len(shapes) > _PRIOR_CACHE_SHAPES:
        shapes.popitem(last=False)
    return shapes[key]


def _distance_to_box(points: Tensor, dist: Tensor) -> Tensor:
    """points (N, 1, 2) or (N, 2) broadcast against dist (B, N, A, 4) of (l, t, r, b)."""
    if points.dim() == 2:
        points = points[:, None]
    x, y = points[..., 0], points[..., 1]
    return torch.stack([x - dist[..., 0], y - dist[..., 1], x + dist[..., 2], y + dist[..., 3]],
                       dim=-1)


@torch.no_grad()
def decode_head_outputs(head, outs: Sequence[Sequence[Tensor]]) -> DecodedPredictions:
    """Decode ``outs = head(feats)`` (the tuple of per-level lists a head returns).

    Only ``cls_scores = outs[0]`` and ``bbox_preds = outs[1]`` are used; quality branches
    (centerness, IoU, objectness) are not part of PGD's quality score.
    """
    kind = head_type(head)
    cls_scores, bbox_preds = outs[0], outs[1]
    level_sizes = [tuple(x.shape[-2:]) for x in cls_scores]
    strides = head_strides(head)[:len(level_sizes)]
    device = cls_scores[0].device
    priors, points = prior_centres(head, level_sizes, device)
    num_classes = head.cls_out_channels
    # one box decode for all levels: its ops are elementwise per prediction, so this equals the
    # per-level decode bit for bit with a fifth of the operator launches. Kept per level: the
    # sigmoid (its vectorised kernel rounds a few elements differently by position in the
    # tensor, measured) and the GFL integral (a reduction over bins).
    cls_prob = torch.cat([_per_location(c.float(), num_classes).sigmoid() for c in cls_scores],
                         1)
    if kind in ANCHOR_HEADS:
        deltas = torch.cat([_per_location(r.float(), 4) for r in bbox_preds], 1)
        anchors = priors[None].expand_as(deltas)
        boxes = head.bbox_coder.decode(anchors.reshape(-1, 4),
                                       deltas.reshape(-1, 4)).reshape(deltas.shape)
    elif kind in DISTRIBUTION_HEADS:
        dist = []
        for lvl, reg in enumerate(bbox_preds):
            b = reg.shape[0]
            flat = reg.float().permute(0, 2, 3, 1).reshape(-1, 4 * (head.reg_max + 1))
            dist.append(head.integral(flat).reshape(b, -1, 1, 4) * strides[lvl])
        boxes = _distance_to_box(points, torch.cat(dist, 1))
    else:  # point heads
        dist = [_per_location(r.float(), 4) for r in bbox_preds]
        if kind == 'FCOSHead' and head.norm_on_bbox and head.training:
            dist = [d * s for d, s in zip(dist, strides)]
        boxes = _distance_to_box(priors, torch.cat(dist, 1))
    return DecodedPredictions(cls_prob=cls_prob, boxes=boxes, points=points,
                              level_sizes=level_sizes, strides=strides)
