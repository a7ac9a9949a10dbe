# FKD -- Feature-based KD (Zhang & Ma, ICLR 2021), pgd.distill.losses.FKDLoss. Weights of the
# public code (T=0.1, feature 4.2e-4, attention 2.4e-2, non-local 4.2e-4), which differ from the
# paper's text; the public code's values are the ones the reported numbers came from. The
# attention term follows the public code too (attention_term='code': L2 between the teacher's
# pooled features and Linear / 3x3-conv adapted student pooled features); attention_term='paper'
# selects the paper's L1 between attention maps.
distill_losses = dict(fkd=dict(type='FKDLoss', attention_term='code'))
detector_overrides = dict(atss=dict(), gfl=dict(), ddod=dict(), fcos=dict(), autoassign=dict())
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
# No teacher-init: the FKD paper describes no teacher initialisation, and among the official
# codes checked only PGD's and FGD's do it (their configs' init_student); the student
# starts from its ImageNet backbone. (FKD's own code was not checked.)
init_student_from_teacher = False
