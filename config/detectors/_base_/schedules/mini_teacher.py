# Mini scale: the teacher trains 2.5x longer than the student (the paper: 3x vs 1x), within the
# CPU budget of <= 10 min per teacher on 2 cores (see README "Mini scale").
_base_ = './mini_student.py'
max_epochs = 15
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[13], gamma=0.1)
]
