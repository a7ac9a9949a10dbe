# Mini scale: the teacher trains 1.5x longer than the student (the paper: 3x vs 1x) to fit the
# CPU budget of <= 10 min per teacher (0.62 s/iter measured on 2 cores, 100 iters/epoch).
_base_ = './mini_student.py'
max_epochs = 9
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[6, 8], gamma=0.1)
]
