"""LGD label encoding (Zhang et al., "LGD: Label-guided Self-distillation for Object Detection",
AAAI 2022, §3.1 (1)).

Every object of an image is described by its normalised box and its one-hot category; a virtual
*context object* with box (0, 0, 1, 1) and an all-zero category vector covering the whole image
is added at index 0 (paper Fig. 2 / Eq. 4; the public code appends the context box with no class
bit set). The descriptor is rescaled from [0, 1] to [-1, 1] as in the public code::

    d_i = 2 * [x1/w, y1/h, x2/w, y2/h, onehot(c_i)] - 1          (k = 4 + num_classes)

(w, h) is the un-padded image size (``img_shape``); boxes are clamped to the image first.

The descriptors of one image form a point set that a PointNet (Qi et al., CVPR 2017) encodes
into label embeddings l_i in R^C, with LayerNorm instead of BatchNorm (paper: "replace the
BatchNorm with LayerNorm to adapt the small-batch detection setting")::

    x   = d @ T_in                          input transform (T-Net, k x k, per image)
    f1  = ReLU(LN(W1 x))                    64
    f1' = f1 @ T_feat                       feature transform (T-Net, 64 x 64, per image)
    f2  = ReLU(LN(W2 f1'))                  128
    f3  = ReLU(LN(W3 f2))                   1024
    g   = max over the image's objects f3   (global feature; padding excluded)
    l_i = ReLU(LN(Linear([f1'_i, g])))      C         (PointNet segmentation-style local+global)
    l_i = ReLU(LN(Linear(l_i)))             C         (label projection, public code's
                                                       ``canoni_proj_1D``)

Widths 64/128/1024 and the local(64)+global(1024) fusion follow PointNet and the public LGD
code; LayerNorm is non-affine as in the public code. The T-Nets are proper PointNet T-Nets
(max-pooled over the image's objects, identity-initialised); the public code applies them to
one object at a time, which makes them per-object transforms — a deviation recorded here.

Images are batched by padding to ``M = 1 + G`` objects with a validity mask; every operation is
per object except the masked max, so the encoder is permutation-equivariant over objects and
padding never changes the valid objects' embeddings.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def build_label_descriptors(gt_bboxes: Tensor, gt_labels: Tensor, gt_valid: Tensor,
                            img_shapes: Sequence[Tuple[int, int]],
                            num_classes: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Descriptors of the context object + padded GTs.

    Args:
        gt_bboxes: (B, G, 4) xyxy in input pixels (padded).
        gt_labels: (B, G) long, padding -1.
        gt_valid: (B, G) bool.
        img_shapes: per image (h, w) of the un-padded image.
        num_classes: number of foreground classes.

    Returns:
        desc: (B, 1 + G, 4 + num_classes) in [-1, 1]; index 0 is the context object.
        boxes: (B, 1 + G, 4) pixel boxes (clamped), context box = (0, 0, w, h).
        valid: (B, 1 + G) bool, the context object is always valid.
    """
    b, g = gt_labels.shape
    device, dtype = gt_bboxes.device, gt_bboxes.dtype
    hw = torch.as_tensor([list(s[:2]) for s in img_shapes], dtype=dtype, device=device)
    h, w = hw[:, 0:1], hw[:, 1:2]                                     # (B, 1)
    scale = torch.stack([w, h, w, h], dim=-1)                        # (B, 1, 4)
    boxes = torch.minimum(gt_bboxes.clamp(min=0), scale)
    ctx_box = torch.cat([torch.zeros_like(scale[..., :2]), scale[..., 2:]], dim=-1)
    all_boxes = torch.cat([ctx_box, boxes], dim=1)                   # (B, 1+G, 4)
    norm_boxes = all_boxes / scale
    onehot = F.one_hot(gt_labels.clamp(min=0), num_classes).to(dtype)
    onehot = onehot * gt_valid[..., None].to(dtype)
    onehot = torch.cat([onehot.new_zeros(b, 1, num_classes), onehot], dim=1)
    desc = torch.cat([norm_boxes, onehot], dim=-1) * 2.0 - 1.0
    valid = torch.cat([gt_valid.new_ones(b, 1), gt_valid], dim=1)
    desc = desc * valid[..., None].to(dtype)                         # zero the padding
    return desc, all_boxes, valid


def masked_max(x: Tensor, valid: Tensor) -> Tensor:
    """Max over dim 1 of (B, M, C) restricted to ``valid`` (B, M); each row needs one valid."""
    fill = torch.finfo(x.dtype).min
    return x.masked_fill(~valid[..., None], fill).max(dim=1).values


class _PointMLP(nn.Module):
    """Per-object Linear -> LayerNorm (non-affine) -> ReLU stack (PointNet's shared 1x1 convs)."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        layers = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Linear(cin, cout), nn.LayerNorm(cout, elementwise_affine=False),
                       nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TNet(nn.Module):
    """PointNet transform network: a per-image k x k matrix from the image's object set,
    initialised to the identity (zero last layer)."""

    def __init__(self, k: int, hidden: Sequence[int] = (64, 128, 256)):
        super().__init__()
        self.k = k
        self.point_mlp = _PointMLP([k, *hidden])
        self.fc = nn.Sequential(nn.Linear(hidden[-1], hidden[-1] // 2),
                                nn.LayerNorm(hidden[-1] // 2, elementwise_affine=False),
                                nn.ReLU(inplace=True), nn.Linear(hidden[-1] // 2, k * k))
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.zeros_(self.fc[-1].bias)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (B, M, k), valid (B, M) -> (B, k, k)."""
        g = masked_max(self.point_mlp(x), valid)
        eye = torch.eye(self.k, device=x.device, dtype=x.dtype)
        return self.fc(g).view(-1, self.k, self.k) + eye


class LabelEncoder(nn.Module):
    """PointNet label encoder with LayerNorm: descriptors (B, M, k) -> embeddings (B, M, C).

    Args:
        num_classes: foreground classes (descriptor length 4 + num_classes).
        embed_dims: C, the FPN width (paper: C = 256).
        mlp_channels: PointNet widths (64, 128, 1024) (PointNet / public LGD code).
        use_tnet: use the input and feature T-Nets (the paper's "spatial transformer").
    """

    def __init__(self, num_classes: int, embed_dims: int,
                 mlp_channels: Sequence[int] = (64, 128, 1024), use_tnet: bool = True):
        super().__init__()
        c1, c2, c3 = mlp_channels
        self.in_dims = 4 + num_classes
        self.use_tnet = use_tnet
        if use_tnet:
            self.tnet_in = TNet(self.in_dims)
            self.tnet_feat = TNet(c1)
        self.mlp1 = _PointMLP([self.in_dims, c1])
        self.mlp2 = _PointMLP([c1, c2, c3])
        self.fuse = _PointMLP([c1 + c3, embed_dims])
        self.proj = _PointMLP([embed_dims, embed_dims])

    def forward(self, desc: Tensor, valid: Tensor) -> Tensor:
        """desc (B, M, k), valid (B, M) bool (>= 1 valid per image) -> (B, M, C); padded rows
        are zero."""
        x = desc
        if self.use_tnet:
            x = torch.bmm(x, self.tnet_in(x, valid))
        local = self.mlp1(x)
        if self.use_tnet:
            local = torch.bmm(local, self.tnet_feat(local, valid))
        glob = masked_max(self.mlp2(local), valid)                   # (B, 1024)
        fused = torch.cat([local, glob[:, None].expand(-1, local.shape[1], -1)], dim=-1)
        out = self.proj(self.fuse(fused))
        return out * valid[..., None].to(out.dtype)
