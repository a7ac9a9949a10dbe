# Mini scale: the teacher trains 3x longer than the student (18 vs 6 epochs), like the paper's
# 3x vs 1x schedules, one lr step at epoch 16. Within the CPU budget of <= 10 min per teacher
# (see README "Mini scale"). The FCOS teacher needs longer: mini_teacher_long.py.
_base_ = './mini_student.py'
max_epochs = 18
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[16], gamma=0.1)
]
