# SYNTHETIC crowd-scene dataset (`python -m pgd make-data --kind crowd`): one class, heavily
# overlapping instances, full boxes as `bbox` and visible boxes kept as `vbox` (CrowdHuman style).
# Crowd metrics (MR^-2, AP, JI) are computed by `pgd test --crowd` from the same annotations.
_base_ = './synthetic_shapes.py'
dataset_name = 'synthetic_crowd'
data_root = 'data/synthetic_crowd/'
classes = ('person', )
num_classes = 1
train_dataloader = dict(
    dataset=dict(
        metainfo=dict(classes=classes),
        data_root=data_root,
        ann_file='annotations/synthetic_crowd_train.json'))
val_dataloader = dict(
    dataset=dict(
        metainfo=dict(classes=classes),
        data_root=data_root,
        ann_file='annotations/synthetic_crowd_val.json'))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/synthetic_crowd_val.json')
test_evaluator = val_evaluator
