# FRS -- Feature-Richness Score (Du et al., NeurIPS 2021), pgd.distill.losses.FRSLoss. Presets
# from the authors' configs: GFL-type (ATSS, GFL, DDOD) feature 0.1 / cls 0.05; FCOS-type
# (FCOS, AutoAssign) 0.01 / 0.05; linear warm-up over 500 iterations.
distill_losses = dict(frs=dict(type='FRSLoss', preset='gfl', warmup_iters=500))
detector_overrides = dict(
    atss=dict(), gfl=dict(), ddod=dict(),
    fcos=dict(frs=dict(preset='fcos')),
    autoassign=dict(frs=dict(preset='fcos')))
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
# No teacher-init: the official FRS code loads the teacher checkpoint into its own teacher
# model only (duzhixing/FRS, detectors/distill_frs_single.py: init_detector(teacher_cfg,
# teacher_model_path)); the student starts from its ImageNet backbone.
init_student_from_teacher = False
