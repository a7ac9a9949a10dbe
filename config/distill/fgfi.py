# FGFI -- Fine-grained Feature Imitation (Wang et al., CVPR 2019), pgd.distill.losses.FGFILoss:
# psi = 0.5, lambda = 0.01 (paper). Imitation mask from IoU of the detector's own anchors with
# the GTs; for ATSS/GFL/DDOD that is one 8*stride square anchor centred at (j*s, i*s)
# (center_offset=0, mmdet's AnchorGenerator); anchor-free heads use the same virtual anchor.
distill_losses = dict(fgfi=dict(type='FGFILoss', loss_weight=0.01, psi=0.5, center_offset=0.0))
detector_overrides = dict(atss=dict(), gfl=dict(), ddod=dict(), fcos=dict(), autoassign=dict())
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
