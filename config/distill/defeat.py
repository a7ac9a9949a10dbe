# DeFeat -- Distilling object detectors via decoupled features (Guo et al., CVPR 2021),
# pgd.distill.losses.DeFeatLoss: fg weight 3, bg weight 12, FPN level of each GT by its scale
# (public DeFeat config; the only public one is two-stage, so these weights are an assumption
# for dense detectors -- recorded here so the choice is visible).
distill_losses = dict(defeat=dict(type='DeFeatLoss', fg_weight=3.0, bg_weight=12.0))
detector_overrides = dict(atss=dict(), gfl=dict(), ddod=dict(), fcos=dict(), autoassign=dict())
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
