# Control, not a method of the paper: the student starts from the teacher's neck and head
# (as PGD and FGD do, following their official codes: `init_student_from_teacher`) and then
# trains with its detection loss only -- no distillation term:
#     L = L_det(student),   student.{neck, bbox_head} <- teacher.{neck, bbox_head} at step 0
# Comparing a method's row with this one separates what its loss adds from what the inherited
# weights give (at the mini scale, trained from scratch, that start alone is worth several AP).
distill_losses = dict()
detector_overrides = dict(atss=dict(), fcos=dict(), gfl=dict(), ddod=dict(), autoassign=dict())
# The control's point: the student starts from the teacher's neck and head.
init_student_from_teacher = True
