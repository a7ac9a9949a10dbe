# Mini scale: the shared recipe of every mini teacher (ATSS, FCOS, GFL, DDOD, AutoAssign;
# Table 1's teachers among them): synthetically pretrained ResNet-34/w32 (sizes/mini_r34.py),
# single-scale, 18 epochs x 80 iterations, AdamW lr 1e-3, one lr step at epoch 16.
# Measured (2026-12-03, shapes geometry of config/config.yaml, one thread on a shared 2-core
# VM): ATSS 14.3 AP (587 CPU-s), FCOS 10.5 AP (572 CPU-s) -- from scratch the ATSS teacher
# had 8.3 and FCOS needed 48 multi-scale epochs (mini_teacher_long.py) for 27.5 on the earlier
# small-object data. The lr is written out: the student schedule it derives from uses 2e-3.
_base_ = './mini_student.py'
max_epochs = 18
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[16], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.001))
