"""LGD appearance encoding, inter-object relation adapter and intra-object knowledge mapper
(Zhang et al., AAAI 2022, §3.1 (2), §3.2, §3.3), batched over images, padded objects and levels.

Object masks (§3.1 (2)). For object i with pixel box (x1, y1, x2, y2), at an FPN level of
stride s and size (H_l, W_l)::

    m_i[y, x] = 1  if  x1 <= (x + 0.5) s <= x2  and  y1 <= (y + 0.5) s <= y2,
                   or  (y, x) is the cell containing the box centre,
                0  otherwise

i.e. the cells whose centre lies in the box (the input-level mask "down-scaled" to the level),
plus the centre cell so that small objects never get an empty mask on coarse levels (the public
code's masks can be empty there, giving a zero appearance embedding). The context object's box is
the un-padded image, so m_0 covers the image and not the batch padding.

Appearance embeddings (mask pooling)::

    a_i = sum_{y,x} m_i[y, x] F_proj(X)[:, y, x] / max(1, sum m_i)

``F_proj`` is one 3x3 conv (paper) followed by GroupNorm(1) + ReLU (public code's
``student_proj_2D``), shared across levels. The paper writes "global sum pooling"; the public
code divides by the mask area ("object size-invariant"), which is what is done here.

Inter-object relation adapter (Eq. 1-3): multi-head cross-attention per level with the
appearance embeddings as queries and the (level-independent) label embeddings as keys/values,
T = 8 heads, attention restricted to the objects of the same image (padding masked out; the
context object is always present, so no row is fully masked, also for images without GT).

Intra-object knowledge mapper (Eq. 4)::

    X^I = F_ref[ m_0 F_ctx(e_0)^T + G( sum_{i>=1} m_i F_inst(e_i)^T ) ]

F_ctx, F_inst: one Linear each; G: one 3x3 conv; F_ref: ReLU then three 3x3 convs (paper), with
GroupNorm(1, non-affine) after each conv and ReLU between them as in the public code's
``refinement_module``. All mapper modules are shared across levels.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .label_encoder import LabelEncoder, build_label_descriptors


def object_masks(boxes: Tensor, valid: Tensor, level_size: Tuple[int, int],
                 stride: float) -> Tensor:
    """Binary object masks of one level.

    Args:
        boxes: (B, M, 4) xyxy pixel boxes.
        valid: (B, M) bool; invalid objects get an all-zero mask.
        level_size: (H_l, W_l).
        stride: the level's stride in pixels.

    Returns:
        (B, M, H_l, W_l) float mask (see the module docstring for the rule).
    """
    h, w = level_size
    dtype = boxes.dtype
    ys = (torch.arange(h, device=boxes.device, dtype=dtype) + 0.5) * stride
    xs = (torch.arange(w, device=boxes.device, dtype=dtype) + 0.5) * stride
    x1, y1, x2, y2 = boxes.unbind(-1)                                 # (B, M)
    in_x = (xs >= x1[..., None]) & (xs <= x2[..., None])              # (B, M, W)
    in_y = (ys >= y1[..., None]) & (ys <= y2[..., None])              # (B, M, H)
    inside = in_y[..., :, None] & in_x[..., None, :]                  # (B, M, H, W)
    cx = torch.floor((x1 + x2) * 0.5 / stride).long().clamp(0, w - 1)
    cy = torch.floor((y1 + y2) * 0.5 / stride).long().clamp(0, h - 1)
    centre = (torch.nn.functional.one_hot(cy, h)[..., :, None].bool()
              & torch.nn.functional.one_hot(cx, w)[..., None, :].bool())
    return ((inside | centre) & valid[..., None, None]).to(dtype)


def mask_pool(feat: Tensor, masks: Tensor) -> Tensor:
    """Area-normalised mask pooling: feat (B, C, H, W), masks (B, M, H, W) -> (B, M, C)."""
    summed = torch.einsum('bchw,bmhw->bmc', feat, masks)
    area = masks.flatten(2).sum(-1).clamp(min=1.0)
    return summed / area[..., None]


class AppearanceEncoder(nn.Module):
    """F_proj (3x3 conv + GN(1) + ReLU, shared over levels) followed by mask pooling."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(1, channels, affine=False), nn.ReLU(inplace=True))

    def forward(self, feat: Tensor, masks: Tensor) -> Tensor:
        return mask_pool(self.proj(feat), masks)


class InterObjectRelationAdapter(nn.Module):
    """Cross-attention: queries = appearance (B, M, C), keys/values = labels (B, M, C)."""

    def __init__(self, channels: int, num_heads: int = 8):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'embedding width {channels} not divisible by {num_heads} heads')
        self.attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)

    def forward(self, appearance: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
        """-> interacted embeddings (B, M, C); padded rows are zero."""
        out, _ = self.attn(appearance, labels, labels, key_padding_mask=~valid,
                           need_weights=False)
        return out * valid[..., None].to(out.dtype)


class IntraObjectKnowledgeMapper(nn.Module):
    """Renders interacted embeddings into their masks and refines them (Eq. 4)."""

    def __init__(self, channels: int):
        super().__init__()
        self.inst_fc = nn.Linear(channels, channels)
        self.ctx_fc = nn.Linear(channels, channels)
        self.inst_conv = nn.Conv2d(channels, channels, 3, padding=1)

        def conv_gn():
            return [nn.Conv2d(channels, channels, 3, padding=1),
                    nn.GroupNorm(1, channels, affine=False)]
        self.refine = nn.Sequential(nn.ReLU(), *conv_gn(), nn.ReLU(inplace=True), *conv_gn(),
                                    nn.ReLU(inplace=True), *conv_gn())

    def forward(self, embeds: Tensor, masks: Tensor, valid: Tensor) -> Tensor:
        """embeds (B, M, C) with the context object at index 0, masks (B, M, H, W),
        valid (B, M) -> instructive feature map (B, C, H, W)."""
        inst = self.inst_fc(embeds[:, 1:]) * valid[:, 1:, None].to(embeds.dtype)
        inst_map = self.inst_conv(torch.einsum('bgc,bghw->bchw', inst, masks[:, 1:]))
        ctx = self.ctx_fc(embeds[:, 0])                                # (B, C)
        ctx_map = ctx[:, :, None, None] * masks[:, 0:1]
        return self.refine(ctx_map + inst_map)


class InstructiveKnowledge(nn.Module):
    """The whole LGD "implicit teacher": labels + student FPN -> instructive features per level.

    Args:
        num_classes: foreground classes.
        channels: FPN width C (embedding width).
        num_heads: attention heads T (paper §4.1: 8).
        label_mlp_channels, use_tnet: see :class:`~pgd.distill.lgd.label_encoder.LabelEncoder`.
    """

    def __init__(self, num_classes: int, channels: int, num_heads: int = 8,
                 label_mlp_channels: Sequence[int] = (64, 128, 1024), use_tnet: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.label_encoder = LabelEncoder(num_classes, channels, label_mlp_channels, use_tnet)
        self.appearance = AppearanceEncoder(channels)
        self.relation = InterObjectRelationAdapter(channels, num_heads)
        self.mapper = IntraObjectKnowledgeMapper(channels)

    def forward(self, feats: Sequence[Tensor], strides: Sequence[float], gt_bboxes: Tensor,
                gt_labels: Tensor, gt_valid: Tensor,
                img_shapes: Sequence[Tuple[int, int]]) -> List[Tensor]:
        """feats: student FPN levels (B, C, H_l, W_l) (detach them for a detached appearance);
        GTs padded as in :func:`pgd.distill.inputs.pad_gts` -> instructive features, same
        shapes as ``feats``."""
        desc, boxes, valid = build_label_descriptors(gt_bboxes, gt_labels, gt_valid,
                                                     img_shapes, self.num_classes)
        labels = self.label_encoder(desc.to(feats[0].dtype), valid)
        out = []
        for feat, stride in zip(feats, strides):
            masks = object_masks(boxes, valid, tuple(feat.shape[-2:]), stride).to(feat.dtype)
            appearance = self.appearance(feat, masks)
            embeds = self.relation(appearance, labels, valid)
            out.append(self.mapper(embeds, masks, valid))
        return out
