# LD -- Localization Distillation (Zheng et al., "Localization Distillation for Dense Object
# Detection", CVPR 2022), GFL only, through MMDetection's KnowledgeDistillationSingleStageDetector
# (the teacher's raw head outputs are handed to the student's head). Self-LD: teacher = student.
#
# ld_variant selects the head (override per run with `--loss-options ld_variant=main`):
#
# 'vlr' (default) -- the LD of the authors' code, github.com/HikariTJU/LD, reported there as
#   "Main KD + Main LD + VLR LD" (R101 -> R50 GFL 1x: 42.1 AP): pgd.distill.ld_vlr_head.LDVLRHead.
#   * loss_ld: KL of the T-softened box-side distributions at the student's ATSS positives,
#     weight 0.25, T = 10 (configs/ld/ld_r18_gflv1_r101_fpn_coco_1x.py; same in mmdet's
#     configs/ld and the LD README).
#   * loss_ld_vlr: the same KL on the valuable localisation region (anchors with
#     0.25 * thr_g <= DIoU(anchor, g) < thr_g, thr_g the ATSS IoU threshold of GT g), weighted by
#     the anchor's IoU with g, weight 0.25, T = 10 (mmdet/models/dense_heads/ld_head.py LDHead
#     defaults, configs/ld/ld_r50_gflv1_r101_fpn_coco_1x.py;
#     mmdet/core/bbox/assigners/atss_assigner.py get_vlr_region: 0.25, topk = the assigner's 9).
#   * loss_kd: KL of the class logits (softmax over classes) at the positives, weight 10, T = 2
#     (same files). The official feature-imitation term (loss_im) has weight 0 there and the
#     official loss_kd_neg is multiplied by 0, so neither is used.
# 'main' -- MMDetection 3.3's own LDHead: loss_ld only (main region), weight 0.25, T = 10.
#
# --loss-options: ld_variant=vlr|main; vlr_alpha / vlr_topk / vlr_exclude_pos go to the head;
# any other key (e.g. T, loss_weight) updates both LD KL terms (loss_ld and loss_ld_vlr).
# loss_scale multiplies every distillation term (loss_ld, loss_ld_vlr, loss_kd).
ld_variant = 'vlr'
ld_heads = dict(
    vlr=dict(
        type='LDVLRHead',
        loss_ld=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10),
        loss_ld_vlr=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10),
        loss_kd=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=10.0, T=2),
        vlr_alpha=0.25,
        vlr_exclude_pos=False),
    main=dict(
        type='LDHead',
        loss_ld=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10)))
# The distillation terms of the heads (those loss_scale multiplies).
ld_distill_terms = ('loss_ld', 'loss_ld_vlr', 'loss_kd')
ld_head_options = ('vlr_alpha', 'vlr_topk', 'vlr_exclude_pos')
ld_head_module = 'pgd.distill.ld_vlr_head'  # registers LDVLRHead (custom_imports)
# The detectors LD supports (GFL only: its KL needs the general distribution head) are declared
# in pgd/catalog.py, the one home of that fact.
# No teacher-init: LD's student (MMDetection's KnowledgeDistillationSingleStageDetector)
# starts from its ImageNet backbone; the teacher only supplies soft targets.
init_student_from_teacher = False
