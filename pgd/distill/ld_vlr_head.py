"""LD with the valuable localisation region (VLR) and main-region classification KD, for
MMDetection 3.x -- the LD of Zheng et al., "Localization Distillation for Dense Object
Detection", CVPR 2022, as released in the authors' code (github.com/HikariTJU/LD).

MMDetection's own :class:`~mmdet.models.dense_heads.LDHead` keeps only LD's *main region* term.
The official head (``mmdet/models/dense_heads/ld_head.py`` of HikariTJU/LD, class ``LDHead``)
adds two more terms, both on by default there (constructor defaults; the GFL-LD configs
``configs/ld/ld_r18_gflv1_r101_fpn_coco_1x.py`` etc. do not override them and
``configs/ld/ld_r50_gflv1_r101_fpn_coco_1x.py`` spells them out). Its README labels the result
"Main KD + Main LD + VLR LD" (R101 -> R50 GFL 1x: 42.1 AP, the CVPR 2022 number).

Notation, per FPN level l, for the flattened locations n of all images: ``p_n`` the student's
box-side logits (4 sides x (reg_max + 1) bins), ``q_n`` the teacher's, ``z_n``/``t_n`` the
student's/teacher's classification logits (C classes), ``KL_T(a, b) = T^2 * mean_bins
KL(softmax(b / T) || softmax(a / T))`` (``KnowledgeDistillationKLDivLoss``)::

    loss_ld     = w_ld  * sum_{n in P_l} sum_{side} s_n * KL_10(p_n,side, q_n,side) / 4
    loss_ld_vlr = w_vlr * sum_{n in V_l} sum_{side} v_n * KL_10(p_n,side, q_n,side) / 16
    loss_kd     = w_kd  * sum_{n in P_l} KL_2(z_n, t_n) / |P_l|          (0 if P_l is empty)

    P_l  = the ATSS positives of level l (the student's own assignment, as mmdet's LDHead)
    s_n  = max_c sigmoid(z_n)_c (detached), as in mmdet's LDHead
    V_l  = {n : v_n > 0}                     (positives are *not* removed, as in the official code)
    v_n  = max_{g : n in VLR(g)} IoU(a_n, g)  (0 if n is in no VLR)
    VLR(g) = {n : alpha * thr_g <= DIoU(a_n, g) < thr_g}
    thr_g  = mean + std of IoU(a_m, g) over the ``topk`` anchors per level whose centres are
             nearest g's centre (the ATSS threshold of g)

The three terms are reported per level (lists, summed by MMEngine), like mmdet's ``loss_ld``.
Each term is one registered ``KnowledgeDistillationKLDivLoss``; ``loss_ld_vlr=None`` /
``loss_kd=None`` switch a term off (both off = mmdet's LDHead).

Constants (all from HikariTJU/LD):

* ``loss_ld``: weight 0.25, T = 10 (``configs/ld/ld_r18_gflv1_r101_fpn_coco_1x.py``; also
  mmdet's ``configs/ld``); ``avg_factor=4.0`` (``ld_head.py``, ``loss_single``).
* ``loss_ld_vlr``: weight 0.25, T = 10 (``ld_head.py`` ``LDHead.__init__`` default,
  ``configs/ld/ld_r50_gflv1_r101_fpn_coco_1x.py``); ``avg_factor=16.0`` and per-location weight
  ``v_n`` (``ld_head.py``, ``loss_single``).
* ``loss_kd``: weight 10, T = 2, on the positives, weight ``label_weights`` (1 for positives),
  ``avg_factor`` = number of positives of the level (same files).
* ``alpha = 0.25``, VLR upper bound = the ATSS threshold, ``topk`` = the ATSS assigner's
  (9), DIoU vs. IoU as written above, over the anchors inside the image
  (``mmdet/core/bbox/assigners/atss_assigner.py``, ``ATSSAssigner.get_vlr_region``).

Not reproduced (documented): the official ``loss_kd_neg`` is multiplied by 0 there (always 0);
its feature-imitation ``loss_im`` has weight 0 by default (commit 9f8c9f88, "fix imitation
loss") and is a separate method; ``gt_bboxes_ignore`` handling (off with the default
``ignore_iof_thr=-1``); an image without GTs has an empty VLR (the official code does not
handle that case).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.dense_heads.ld_head import LDHead
from mmdet.models.task_modules.prior_generators import anchor_inside_flags
from mmdet.models.utils import images_to_levels, multi_apply, unmap, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor
from mmdet.utils import reduce_mean
from torch import Tensor

_KL = 'KnowledgeDistillationKLDivLoss'


def iou_and_diou(boxes: Tensor, gts: Tensor, eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Pairwise IoU and DIoU (Zheng et al., AAAI 2020) of ``boxes`` (N, 4) and ``gts`` (G, 4).

    ``DIoU = IoU - |c_box - c_gt|^2 / diag(enclosing box)^2`` with the denominators clamped at
    ``eps`` (as ``bbox_overlaps(mode='diou')`` of HikariTJU/LD,
    ``mmdet/core/bbox/iou_calculators/iou2d_calculator.py``). Returns two (N, G) tensors.
    """
    iou = bbox_overlaps(boxes, gts, eps=eps)
    ctr_b = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    ctr_g = (gts[None, :, :2] + gts[None, :, 2:]) / 2
    rho2 = (ctr_b - ctr_g).pow(2).sum(-1)
    enc = (torch.max(boxes[:, None, 2:], gts[None, :, 2:])
           - torch.min(boxes[:, None, :2], gts[None, :, :2])).clamp(min=0)
    c2 = enc.pow(2).sum(-1).clamp(min=eps)
    return iou, iou - rho2 / c2


def vlr_weights(anchors: Tensor, num_level_anchors: Sequence[int], gt_bboxes: Tensor,
                topk: int = 9, alpha: float = 0.25) -> Tensor:
    """Per-anchor VLR weight ``v_n`` of one image (module docstring), shape (N,).

    Args:
        anchors: (N, 4) anchors of all levels (level-major), xyxy pixels.
        num_level_anchors: N_l per level (sum N).
        gt_bboxes: (G, 4) GT boxes.
        topk: ATSS candidates per level for the threshold.
        alpha: lower bound factor of the VLR (``0.25`` officially).
    """
    n, g = anchors.size(0), gt_bboxes.size(0)
    if n == 0 or g == 0:
        return anchors.new_zeros(n)
    iou, diou = iou_and_diou(anchors, gt_bboxes)
    ctr_a = (anchors[:, :2] + anchors[:, 2:]) / 2
    ctr_g = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2
    dist = (ctr_a[:, None] - ctr_g[None]).pow(2).sum(-1).sqrt()  # (N, G)
    cands, start = [], 0
    for n_l in num_level_anchors:
        k = min(topk, n_l)
        if k > 0:
            cands.append(dist[start:start + n_l].topk(k, dim=0, largest=False).indices + start)
        start += n_l
    cand_iou = iou.gather(0, torch.cat(cands))  # (K, G)
    thr = cand_iou.mean(0) + cand_iou.std(0)  # (G,) the ATSS IoU threshold per GT
    in_vlr = (diou < thr) & (diou >= alpha * thr)
    best = iou.masked_fill(~in_vlr, float('-inf')).amax(dim=1)
    return torch.where(torch.isfinite(best), best, best.new_zeros(()))


@MODELS.register_module()
class LDVLRHead(LDHead):
    """GFL head with LD on the main region and the VLR plus main-region cls KD (see module
    docstring for formulas and sources).

    Args:
        loss_ld: main-region LD (mmdet's LDHead term). Default weight 0.25, T 10.
        loss_ld_vlr: VLR LD, or None to switch it off. Default weight 0.25, T 10.
        loss_kd: main-region classification KD, or None. Default weight 10, T 2.
        vlr_topk: ATSS candidates per level for the VLR threshold; None = the head's ATSS
            assigner's ``topk`` (9 in the GFL configs), 9 if it has none.
        vlr_alpha: VLR lower-bound factor (0.25).
        vlr_exclude_pos: drop the student's positives from the VLR (False = official code;
            True = the paper's wording of "the rest of the locations").
        **kwargs: as :class:`mmdet.models.dense_heads.GFLHead`.

    ``loss(x, out_teacher, batch_data_samples)`` takes the teacher head's raw outputs
    ``(cls_scores, bbox_preds)`` (as mmdet's KnowledgeDistillationSingleStageDetector passes
    them) and returns ``loss_cls/bbox/dfl/ld`` plus ``loss_ld_vlr`` and ``loss_kd`` when on.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 loss_ld: dict = dict(type=_KL, loss_weight=0.25, T=10),
                 loss_ld_vlr: Optional[dict] = dict(type=_KL, loss_weight=0.25, T=10),
                 loss_kd: Optional[dict] = dict(type=_KL, loss_weight=10.0, T=2),
                 vlr_topk: Optional[int] = None,
                 vlr_alpha: float = 0.25,
                 vlr_exclude_pos: bool = False,
                 **kwargs) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, loss_ld=loss_ld,
                         **kwargs)
        self.loss_ld_vlr = MODELS.build(loss_ld_vlr) if loss_ld_vlr else None
        self.loss_kd = MODELS.build(loss_kd) if loss_kd else None
        if vlr_topk is None:
            vlr_topk = getattr(getattr(self, 'assigner', None), 'topk', 9)
        self.vlr_topk = int(vlr_topk)
        self.vlr_alpha = float(vlr_alpha)
        self.vlr_exclude_pos = bool(vlr_exclude_pos)

    # ------------------------------------------------------------------ targets
    def get_vlr_targets(self, anchor_list: List[List[Tensor]],
                        valid_flag_list: List[List[Tensor]], batch_gt_instances,
                        batch_img_metas: List[dict]) -> List[Tensor]:
        """Per level (B, N_l) VLR weights ``v_n``, over the anchors inside each image (the
        set the assigner sees), 0 elsewhere. Does not modify its arguments."""
        num_level_anchors = [a.size(0) for a in anchor_list[0]]
        weights = []
        for anchors, flags, gts, meta in zip(anchor_list, valid_flag_list,
                                             batch_gt_instances, batch_img_metas):
            flat, flat_flags = torch.cat(anchors), torch.cat(flags)
            inside = anchor_inside_flags(flat, flat_flags, meta['img_shape'][:2],
                                         self.train_cfg['allowed_border'])
            w = vlr_weights(flat[inside], self.get_num_level_anchors_inside(
                num_level_anchors, inside), get_box_tensor(gts.bboxes).to(flat),
                self.vlr_topk, self.vlr_alpha)
            weights.append(unmap(w, flat.size(0), inside))
        return images_to_levels(weights, num_level_anchors)

    # ------------------------------------------------------------------ losses
    def loss(self, x: List[Tensor], out_teacher: Tuple[Tensor], batch_data_samples) -> dict:
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = \
            unpack_gt_instances(batch_data_samples)
        outs = self(x)
        return self.loss_by_feat(*outs, batch_gt_instances, batch_img_metas, out_teacher[1],
                                 soft_labels=out_teacher[0],
                                 batch_gt_instances_ignore=batch_gt_instances_ignore)

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                     batch_gt_instances, batch_img_metas: List[dict],
                     soft_targets: List[Tensor], soft_labels: Optional[List[Tensor]] = None,
                     batch_gt_instances_ignore=None) -> dict:
        """As mmdet's ``LDHead.loss_by_feat`` plus ``soft_labels`` (teacher cls logits per
        level, (B, C, H, W); required when ``loss_kd`` is on)."""
        if self.loss_kd is not None and soft_labels is None:
            raise ValueError('LDVLRHead: loss_kd needs the teacher cls logits (soft_labels)')
        featmap_sizes = [f.size()[-2:] for f in cls_scores]
        assert len(featmap_sizes) == self.prior_generator.num_levels
        device = cls_scores[0].device
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas,
                                                        device=device)
        vlr_list = (self.get_vlr_targets(anchor_list, valid_flag_list, batch_gt_instances,
                                         batch_img_metas)
                    if self.loss_ld_vlr is not None else [None] * len(featmap_sizes))
        (anchor_list, labels_list, label_weights_list, bbox_targets_list, _,
         avg_factor) = self.get_targets(anchor_list, valid_flag_list, batch_gt_instances,
                                        batch_img_metas,
                                        batch_gt_instances_ignore=batch_gt_instances_ignore)
        avg_factor = reduce_mean(
            torch.tensor(avg_factor, dtype=torch.float, device=device)).item()
        if soft_labels is None:
            soft_labels = [None] * len(featmap_sizes)
        (losses_cls, losses_bbox, losses_dfl, losses_ld, losses_ld_vlr, losses_kd,
         weight_sums) = multi_apply(
             self.loss_by_feat_single, anchor_list, cls_scores, bbox_preds, labels_list,
             label_weights_list, bbox_targets_list, self.prior_generator.strides,
             soft_targets, soft_labels, vlr_list, avg_factor=avg_factor)
        weight_sum = reduce_mean(sum(weight_sums) + 1e-6).item()
        losses = dict(loss_cls=losses_cls,
                      loss_bbox=[v / weight_sum for v in losses_bbox],
                      loss_dfl=[v / weight_sum for v in losses_dfl],
                      loss_ld=losses_ld)
        if self.loss_ld_vlr is not None:
            losses['loss_ld_vlr'] = losses_ld_vlr
        if self.loss_kd is not None:
            losses['loss_kd'] = losses_kd
        return losses

    def loss_by_feat_single(self, anchors: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                            labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
                            stride: Tuple[int], soft_targets: Tensor,
                            soft_label: Optional[Tensor], vlr: Optional[Tensor],
                            avg_factor: float):
        """One level: mmdet's LDHead terms, then the VLR LD and the main-region cls KD.

        Shapes: ``cls_score``/``soft_label`` (B, C, H, W); ``bbox_pred``/``soft_targets``
        (B, 4 (R + 1), H, W); ``labels``/``label_weights``/``vlr`` (B, H W).
        """
        loss_cls, loss_bbox, loss_dfl, loss_ld, weight_sum = super().loss_by_feat_single(
            anchors, cls_score, bbox_pred, labels, label_weights, bbox_targets, stride,
            soft_targets, avg_factor)
        bins = self.reg_max + 1
        labels = labels.reshape(-1)
        pos = (labels >= 0) & (labels < self.num_classes)
        loss_ld_vlr = loss_kd = None
        if self.loss_ld_vlr is not None:
            pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
            region_w = vlr.reshape(-1)
            region = region_w > 0
            if self.vlr_exclude_pos:
                region &= ~pos
            if region.any():
                soft = soft_targets.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
                loss_ld_vlr = self.loss_ld_vlr(
                    pred[region].reshape(-1, bins), soft[region].reshape(-1, bins),
                    weight=region_w[region][:, None].expand(-1, 4).reshape(-1),
                    avg_factor=16.0)
            else:
                loss_ld_vlr = bbox_pred.sum() * 0
        if self.loss_kd is not None:
            if pos.any():
                c = self.cls_out_channels
                score = cls_score.permute(0, 2, 3, 1).reshape(-1, c)
                teacher = soft_label.permute(0, 2, 3, 1).reshape(-1, c)
                loss_kd = self.loss_kd(score[pos], teacher[pos],
                                       weight=label_weights.reshape(-1)[pos],
                                       avg_factor=int(pos.sum()))
            else:
                loss_kd = cls_score.sum() * 0
        return loss_cls, loss_bbox, loss_dfl, loss_ld, loss_ld_vlr, loss_kd, weight_sum
