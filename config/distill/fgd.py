# FGD -- Focal and Global Distillation (Yang et al., CVPR 2022), pgd.distill.losses.FGDLoss,
# on FPN neck outputs. Presets from the public FGD configs: RetinaNet-type (used for ATSS, GFL,
# DDOD) T=0.5, alpha=1e-3, beta=5e-4, gamma=5e-4, lambda=5e-6; FCOS-type (FCOS, AutoAssign)
# T=0.8, alpha=1.6e-3, beta=8e-4, gamma=8e-4, lambda=8e-6.
distill_losses = dict(fgd=dict(type='FGDLoss', preset='retinanet'))
detector_overrides = dict(
    atss=dict(), gfl=dict(), ddod=dict(),
    fcos=dict(fgd=dict(preset='fcos')),
    autoassign=dict(fgd=dict(preset='fcos')))
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
# Teacher-init: the official FGD configs set init_student=True (yzd-v/FGD,
# configs/distillers/fgd/*.py); its distiller then copies every non-backbone tensor of the
# teacher into the student (mmdet/distillation/distillers/detection_distiller.py).
init_student_from_teacher = True
