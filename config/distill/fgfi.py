# FGFI -- Fine-grained Feature Imitation (Wang et al., CVPR 2019), pgd.distill.losses.FGFILoss:
# psi = 0.5, lambda = 0.01 (paper; official code github.com/twangnh/Distilling-Object-Detectors,
# trainval_net_sup.py --ilw 0.01). Imitation mask from IoU of the detector's own anchors with
# the GTs; for ATSS/GFL/DDOD that is one 8*stride square anchor centred at (j*s, i*s)
# (center_offset=0, mmdet's AnchorGenerator); anchor-free heads use the same virtual anchor.
# As the official code: adapter = 3x3 conv + ReLU (vgg11.py stu_feature_adap; ShuffleDet
# shuffleDet_sup.py 'adaptation'), kernel init truncated normal std 1e-4, bias 0 (ShuffleDet
# code, twangnh/Distilling-Object-Detectors-Shuffledet), N_p = masked locations of the batch,
# 1 / (2 N_p) (trainval_net_sup.py), no imitation during the first 400 iterations of the first
# epoch (trainval_net_sup.py --ws 400). The former variant of this project (plain conv, PyTorch
# init, no warm-up): --loss-options adapt_act=none adapt_init=pytorch warmup_iters=0.
distill_losses = dict(fgfi=dict(type='FGFILoss', loss_weight=0.01, psi=0.5, center_offset=0.0,
                                adapt_act='relu', adapt_init='trunc_normal', adapt_std=1e-4,
                                warmup_iters=400))
detector_overrides = dict(atss=dict(), gfl=dict(), ddod=dict(), fcos=dict(), autoassign=dict())
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
# No teacher-init: the official FGFI code loads the teacher ("supervisor") checkpoint into a
# separate network; the student starts from its ImageNet backbone
# (twangnh/Distilling-Object-Detectors, trainval_net_sup.py).
init_student_from_teacher = False
