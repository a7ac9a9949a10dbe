# Mini scale: the teacher trains 2x longer than the student (the paper: 3x vs 1x), within the
# CPU budget of ~10 min per teacher.
_base_ = './mini_student.py'
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[8, 11], gamma=0.1)
]
