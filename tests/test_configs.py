"""Detector configs: the paper scale matches §4.1 exactly; every config builds a real detector."""
from __future__ import annotations

import pytest
import torch
from mmengine.config import Config

from pgd.engine.config_utils import CONFIG_ROOT, known_config_names

DETECTORS = ('atss', 'fcos', 'gfl', 'ddod', 'autoassign')
HEADS = {'atss': 'ATSSHead', 'fcos': 'FCOSHead', 'gfl': 'GFLHead', 'ddod': 'DDODHead',
         'autoassign': 'AutoAssignHead'}


def load(name: str) -> Config:
    return Config.fromfile(str(CONFIG_ROOT / f'{name}.py'))


def test_every_detector_has_every_role_at_both_scales():
    names = set(known_config_names())
    for det in DETECTORS:
        for role in ('r18_student', 'r34_teacher', 'mbv2_student'):
            assert f'mini/{det}_{role}' in names
        for role in ('r50_student', 'r101_teacher', 'mbv2_student'):
            assert f'paper/{det}_{role}' in names
    for role in ('mini/ddod_r18_student_crowd', 'mini/ddod_r34_teacher_crowd',
                 'paper/ddod_r50_student_crowdhuman', 'paper/ddod_r101_teacher_crowdhuman'):
        assert role in names


def _assert_frozen_bn_pretrained(backbone, checkpoint):
    assert backbone.norm_cfg == dict(type='BN', requires_grad=False)
    assert backbone.norm_eval is True
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=checkpoint)


def _assert_batch32_lr002(cfg):
    # 8 GPUs x 4 images = 32, lr 0.02 for that batch (paper §4.1)
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=32)
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == 0.02


@pytest.mark.parametrize('det', DETECTORS)
def test_paper_teacher_is_r101_3x_multiscale(det):
    cfg = load(f'paper/{det}_r101_teacher')
    assert cfg.model.bbox_head.type == HEADS[det]
    assert cfg.model.backbone.type == 'ResNet' and cfg.model.backbone.depth == 101
    _assert_frozen_bn_pretrained(cfg.model.backbone, 'torchvision://resnet101')
    assert cfg.train_cfg.max_epochs == 36
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'RandomResize' and resize.scale == [(1333, 480), (1333, 960)]
    _assert_batch32_lr002(cfg)
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    assert cfg.test_dataloader.dataset.ann_file == 'annotations/instances_val2017.json'
    assert cfg.model.bbox_head.num_classes == 80


@pytest.mark.parametrize('det', DETECTORS)
def test_paper_student_is_r50_1x_single_scale(det):
    cfg = load(f'paper/{det}_r50_student')
    assert cfg.model.backbone.depth == 50
    _assert_frozen_bn_pretrained(cfg.model.backbone, 'torchvision://resnet50')
    assert cfg.train_cfg.max_epochs == 12
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'Resize' and resize.scale == (1333, 800)
    _assert_batch32_lr002(cfg)
    assert cfg.model.neck.out_channels == cfg.model.bbox_head.feat_channels == 256


@pytest.mark.parametrize('det', ('atss', 'fcos'))
def test_paper_mobilenet_student(det):
    cfg = load(f'paper/{det}_mbv2_student')
    assert cfg.model.backbone.type == 'MobileNetV2'
    _assert_frozen_bn_pretrained(cfg.model.backbone, 'mmcls://mobilenet_v2')
    assert cfg.train_cfg.max_epochs == 12
    _assert_batch32_lr002(cfg)


def test_paper_crowdhuman_configs():
    t = load('paper/ddod_r101_teacher_crowdhuman')
    s = load('paper/ddod_r50_student_crowdhuman')
    for cfg in (t, s):
        assert cfg.model.bbox_head.num_classes == 1
        assert cfg.train_dataloader.dataset.metainfo.classes == ('person', )
        assert 'crowdhuman' in cfg.test_dataloader.dataset.ann_file
    assert t.train_cfg.max_epochs == 36 and s.train_cfg.max_epochs == 12


def test_fcos_uses_stride_normalised_regression():
    # The decode in pgd.distill.head_decoding depends on this flag.
    assert load('paper/fcos_r50_student').model.bbox_head.norm_on_bbox is True


def test_synthetic_class_names_match_generator():
    from pgd.data.synthetic import CROWD_CLASSES, SHAPES_CLASSES
    shapes = load('mini/atss_r18_student')
    assert tuple(shapes.train_dataloader.dataset.metainfo.classes) == tuple(SHAPES_CLASSES)
    assert shapes.model.bbox_head.num_classes == len(SHAPES_CLASSES)
    crowd = load('mini/ddod_r18_student_crowd')
    assert tuple(crowd.train_dataloader.dataset.metainfo.classes) == tuple(CROWD_CLASSES)
    assert shapes.dataset_is_synthetic is True and crowd.dataset_is_synthetic is True


def test_mini_teacher_is_bigger_and_longer_than_student():
    for det in DETECTORS:
        s, t = load(f'mini/{det}_r18_student'), load(f'mini/{det}_r34_teacher')
        assert t.model.backbone.depth > s.model.backbone.depth
        assert t.model.backbone.base_channels > s.model.backbone.base_channels
        # PGD has no adaptation layer: teacher and student FPN/head widths must match
        assert t.model.neck.out_channels == s.model.neck.out_channels
        assert t.train_cfg.max_epochs > s.train_cfg.max_epochs
        # both start from the scale's SYNTHETIC pretraining (the paper's ImageNet weights)
        for cfg, size in ((s, 'mini_r18'), (t, 'mini_r34')):
            assert cfg.model.backbone.init_cfg == dict(
                type='Pretrained', checkpoint=f'results/{{scale}}/pretrain/{size}/backbone.pth')


@pytest.mark.parametrize('name', [n for n in known_config_names() if n.startswith('mini/')])
def test_mini_configs_build_and_run_forward(name):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(load(name).model).eval()
    with torch.no_grad():
        outs = model._forward(torch.rand(1, 3, 128, 128))
    assert len(outs[0]) == 5  # P3..P7
    assert outs[0][0].shape[-2:] == (16, 16)


@pytest.mark.parametrize('name', [n for n in known_config_names() if n.startswith('paper/')])
def test_paper_configs_parse(name):
    cfg = load(name)
    assert cfg.model.bbox_head.type in HEADS.values()
    assert cfg.default_scope == 'mmdet'
