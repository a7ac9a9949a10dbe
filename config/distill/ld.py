# LD -- Localization Distillation (Zheng et al., CVPR 2022), GFL only, with MMDetection's own
# implementation: KnowledgeDistillationSingleStageDetector + LDHead, KL divergence between the
# temperature-softened edge distributions of teacher and student at the student's positives
# (T = 10, weight 0.25, as in mmdet's configs/ld and the LD README). Self-LD: teacher = student.
ld_head = dict(
    type='LDHead',
    loss_ld=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10))
supported_detectors = ['gfl']
