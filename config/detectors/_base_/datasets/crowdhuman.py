# Real CrowdHuman (paper scale, Table 3): the .odgt files converted to COCO json with
# `python -m pgd convert-crowdhuman` (full boxes as bbox, ignore/mask regions as iscrowd=1),
# loaded by MMDetection's CocoDataset; MR^-2/AP/JI from pgd's crowd metrics.
_base_ = './coco.py'
dataset_name = 'crowdhuman'
data_root = 'data/crowdhuman/'
classes = ('person', )
num_classes = 1
train_dataloader = dict(
    dataset=dict(
        metainfo=dict(classes=classes),
        data_root=data_root,
        ann_file='annotations/crowdhuman_train.json',
        data_prefix=dict(img='Images/')))
val_dataloader = dict(
    dataset=dict(
        metainfo=dict(classes=classes),
        data_root=data_root,
        ann_file='annotations/crowdhuman_val.json',
        data_prefix=dict(img='Images/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/crowdhuman_val.json')
test_evaluator = val_evaluator
