# Sanity control, not a method of the paper: PGD's distiller and losses (config/distill/pgd.py,
# all of them computed every step) with every distillation loss weight 0 and no teacher-init:
#     L = L_det(student) + 0 * L_PGD,   student initialised exactly as the plain student run
# With the same seed it must train the plain student bit for bit (same final weights, same
# AP): the distiller adds nothing but its losses. `pgd sanity-check` compares the two runs.
_base_ = ['./pgd.py']
distill_losses = dict(pgd=dict(loss_weight=0.0))
init_student_from_teacher = False
