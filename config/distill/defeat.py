# DeFeat -- Distilling object detectors via decoupled features (Guo et al., CVPR 2021),
# pgd.distill.losses.DeFeatLoss. Neck term: fg weight 3, bg weight 12, FPN level of each GT by its
# scale. Head term: decoupled fg/bg KL on the class scores, fg weight 2, bg weight 2, T = 1
# (with_head=False drops it). All values from the only public DeFeat config
# (ggjy/DeFeat.pytorch configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py,
# two-stage), so they are an assumption for dense detectors -- recorded here so the choice is
# visible.
distill_losses = dict(defeat=dict(
    type='DeFeatLoss', fg_weight=3.0, bg_weight=12.0,
    with_head=True, head_fg_weight=2.0, head_bg_weight=2.0, head_temperature=1.0,
    head_kl='sigmoid'))
detector_overrides = dict(atss=dict(), gfl=dict(), ddod=dict(), fcos=dict(), autoassign=dict())
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
# No teacher-init: the official DeFeat code loads the teacher checkpoint into the teacher only;
# the student starts from its ImageNet backbone (or an optional student checkpoint)
# (ggjy/DeFeat.pytorch, tools/train_kd.py: --checkpoint_t / --checkpoint_s).
init_student_from_teacher = False
