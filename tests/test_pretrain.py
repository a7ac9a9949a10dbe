"""Synthetic pretraining (`pgd pretrain-backbone`) and loading its backbone into detectors.

One tiny pretraining per mini backbone size is run once per module (12 scenes, 1 epoch, the CLI
in subprocesses as the workflow runs it); the tests then check the checkpoint's format, that every
mini detector config loads it through ``backbone.init_cfg`` (Pretrained) bit for bit, and that
missing or mismatched checkpoints stop with one line before anything is trained.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PYTHON, REPO, run_pgd

MINI_CONFIGS = sorted((REPO / 'config' / 'detectors' / 'mini').glob('*.py'))
SIZES = ('mini_r18', 'mini_r34', 'mini_mbv2')
TINY = ('--num-train', 12, '--num-val', 6, '--epochs', 1, '--batch-size', 16,
        '--crop-size', 32, '--device', 'cpu', '--difficulty', 'max_objects=4')


def _pretrain(out: Path, size: str, *extra):
    return run_pgd('pretrain-backbone', '--size', size, '--out', out, *TINY, *extra,
                   timeout=300)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory) -> dict:
    """``{size: DIR}``: one tiny synthetic pretraining per mini backbone size, plus
    ``'mini_r18 again'`` (the same command once more, for the determinism test). The four
    commands run side by side, one thread each: most of their time is importing mmdet."""
    root = tmp_path_factory.mktemp('pretrain')
    jobs = {size: (size, root / size) for size in SIZES}
    jobs['mini_r18 again'] = ('mini_r18', root / 'mini_r18_again')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = {name: subprocess.Popen(
        [PYTHON, '-m', 'pgd', 'pretrain-backbone', '--size', size, '--out', str(out),
         *map(str, TINY)], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for name, (size, out) in jobs.items()}
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f'{name}: {output[-3000:]}'
    return {name: out for name, (_, out) in jobs.items()}


def _state(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def _size_of(config: Path) -> str:
    return re.search(r"sizes/(mini_\w+)\.py", config.read_text()).group(1)


def _config_with(config: Path, checkpoint):
    """The config with its backbone loading ``checkpoint``; ``None``: from scratch
    (``pretrain_scale=none``, which drops the size file's placeholder init)."""
    from pgd.engine.config_utils import load_config
    _, cfg = load_config(str(config))
    if checkpoint is not None:
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(checkpoint))
    else:
        from pgd.pretrain.check import resolve_pretrained
        cfg.pretrain_scale = 'none'
        assert resolve_pretrained(cfg) == []
    return cfg


# ----------------------------------------------------------------------------- data

def test_pretraining_images_are_never_detection_images():
    from pgd.data import synthetic as syn
    from pgd.pretrain.data import pretrain_crops, pretrain_rng, pretrain_scene
    diff = syn.make_difficulty('shapes', max_objects=8)
    for seed in (0, 1):
        for index in range(3):
            scene, objects = pretrain_scene(seed, 'pretrain', index, 128, diff)
            val_scene, _ = pretrain_scene(seed, 'pretrain_val', index, 128, diff)
            det = [syn.generate_image('shapes', seed, split, index, 128, diff)[0]
                   for split in ('train', 'val')]
            assert not any(np.array_equal(scene, d) for d in det + [val_scene])
            # one 64-px crop per object the generator kept, labelled with its class
            crops = pretrain_crops(seed, 'pretrain', index, 128, diff, crop_size=64)
            assert [label + 1 for _, label in crops] == [o['category_id'] for o in objects]
            assert all(c.shape == (64, 64, 3) and c.dtype == np.uint8 for c, _ in crops)
            again = pretrain_crops(seed, 'pretrain', index, 128, diff, crop_size=64)
            assert all(np.array_equal(c, d) for (c, _), (d, _) in zip(crops, again))
    with pytest.raises(ValueError, match='part must be one of'):
        pretrain_rng(0, 'train', 0)


def test_object_crop_is_centred_on_the_box():
    from pgd.pretrain.data import CONTEXT, object_crop
    img = np.zeros((128, 128, 3), np.uint8)
    img[40:60, 10:30] = 255  # a 20x20 white box at x 10-29, y 40-59
    crop = object_crop(img, [10, 40, 20, 20], crop_size=56)
    inner = int(round(56 / CONTEXT))  # the box's side in the crop
    lo = (56 - inner) // 2
    assert crop[lo + 2:lo + inner - 2, lo + 2:lo + inner - 2].min() == 255
    assert crop[:lo - 2].max() == 0 and crop[:, :lo - 2].max() == 0
    # a box at the border: the window is padded by replicating the edge, never wrapped
    edge = object_crop(img, [0, 0, 10, 10], crop_size=32)
    assert edge.shape == (32, 32, 3)


def test_crop_accuracy_metric():
    from pgd.pretrain.model import CropAccuracy
    results = [(0, 0), (1, 1), (2, 1), (1, 1)]  # (predicted, true)
    metrics = CropAccuracy().compute_metrics(results)
    assert metrics['accuracy'] == 75.0
    assert metrics['mean_class_accuracy'] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert metrics['chance'] == 75.0


# ----------------------------------------------------------------------------- the command

def test_checkpoint_holds_exactly_the_backbone_and_report_is_portable(pretrained):
    from mmdet.registry import MODELS

    from pgd.engine.registry import register_all
    from pgd.pretrain.model import size_backbone
    register_all()
    for size in SIZES:
        out = pretrained[size]
        ckpt = torch.load(out / 'backbone.pth', map_location='cpu', weights_only=True)
        backbone = MODELS.build(size_backbone(size)[0])
        expected = backbone.state_dict()
        assert list(ckpt['state_dict']) == list(expected), size  # same names, no prefix
        assert all(ckpt['state_dict'][k].shape == v.shape for k, v in expected.items())
        assert ckpt['meta']['size'] == size and 'synthetic pretraining' in ckpt['meta']['task']
        text = (out / 'pretrain.json').read_text()
        report = json.loads(text)
        assert report['task'].startswith('synthetic pretraining')
        assert report['size'] == size and report['epochs'] == 1
        assert report['provenance']['dataset']['synthetic'] is True
        assert report['provenance']['config'] == f'config/detectors/_base_/sizes/{size}.py'
        val = report['val']
        assert 0 <= val['accuracy'] <= 100 and len(val['per_epoch']['accuracy']) == 1
        assert report['provenance']['dataset']['train_crops'] > 12  # several objects a scene
        assert report['wall_time_s'] > 0
        assert str(out) not in text and str(REPO) not in text  # no machine-absolute paths


def test_pretraining_is_deterministic_on_cpu(pretrained):
    first = _state(pretrained['mini_r18'] / 'backbone.pth')
    second = _state(pretrained['mini_r18 again'] / 'backbone.pth')
    assert list(first) == list(second)
    assert all(torch.equal(first[k], second[k]) for k in first)
    # it trained: BatchNorm running statistics left their initial zeros
    assert first['bn1.running_mean'].abs().sum() > 0


def test_bad_arguments_stop_with_one_line(tmp_path):
    proc = _pretrain(tmp_path / 'x', 'mini_r50')
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()]
    assert "unknown backbone size 'mini_r50'" in proc.stdout and 'mini_r18' in proc.stdout
    proc = _pretrain(tmp_path / 'x', 'mini_r18', '--difficulty', 'colour=3')
    assert proc.returncode == 2 and 'unknown difficulty knob' in proc.stdout
    assert not (tmp_path / 'x' / 'backbone.pth').exists()


# ----------------------------------------------------------------------------- loading

@pytest.mark.parametrize('config', MINI_CONFIGS, ids=lambda p: p.stem)
def test_every_mini_detector_loads_the_pretrained_backbone(pretrained, config):
    from mmdet.registry import MODELS

    from pgd.engine.registry import register_all
    from pgd.pretrain.check import check_pretrained
    register_all()
    ckpt_path = pretrained[_size_of(config)] / 'backbone.pth'
    ckpt = _state(ckpt_path)
    cfg = _config_with(config, ckpt_path)
    assert check_pretrained(cfg) == 1
    torch.manual_seed(0)
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    loaded = detector.backbone.state_dict()
    assert list(loaded) == list(ckpt)
    assert all(torch.equal(loaded[k], ckpt[k]) for k in ckpt), config.stem
    # control: the config's default (from scratch) does not happen to give these weights
    scratch = MODELS.build(_config_with(config, None).model)
    scratch.init_weights()
    assert not all(torch.equal(scratch.backbone.state_dict()[k], ckpt[k]) for k in ckpt)


# ----------------------------------------------------------------------------- bad input

def _one_line_error(cfg) -> str:
    from pgd.errors import UserError
    from pgd.pretrain.check import check_pretrained
    with pytest.raises(UserError) as info:
        check_pretrained(cfg)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_missing_or_mismatched_checkpoint_is_one_line_naming_file_and_backbone(pretrained,
                                                                               tmp_path):
    from pgd.pretrain.check import check_pretrained
    student = REPO / 'config/detectors/mini/atss_r18_student.py'
    expected = 'ResNet(depth=18, base_channels=16) [r18-w16]'
    missing = tmp_path / 'nowhere' / 'backbone.pth'
    msg = _one_line_error(_config_with(student, missing))
    assert 'not found' in msg and str(missing) in msg and expected in msg
    for other in ('mini_r34', 'mini_mbv2'):  # a wider ResNet; another architecture
        wrong = pretrained[other] / 'backbone.pth'
        msg = _one_line_error(_config_with(student, wrong))
        assert 'does not fit' in msg and str(wrong) in msg and expected in msg
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    msg = _one_line_error(_config_with(student, junk))
    assert 'not a readable checkpoint' in msg and str(junk) in msg
    # from scratch (the mini default) and remote ImageNet weights (paper) are not checked here
    assert check_pretrained(_config_with(student, None)) == 0
    remote = _config_with(student, None)
    remote.model.backbone.init_cfg = dict(type='Pretrained', checkpoint='torchvision://resnet18')
    assert check_pretrained(remote) == 0


def test_train_stops_before_training_on_a_mismatched_checkpoint(pretrained, tiny_shapes,
                                                                tmp_path):
    train_py = (REPO / 'pgd' / 'engine' / 'train.py').read_text()
    if 'check_pretrained' not in train_py:
        pytest.skip('pgd train does not call pgd.pretrain.check.check_pretrained yet')
    wrong = pretrained['mini_r34'] / 'backbone.pth'
    work = tmp_path / 'work'
    proc = run_pgd('train', 'mini/atss_r18_student', '--work-dir', work, '--data-root',
                   tiny_shapes, '--device', 'cpu', '--cfg-options',
                   'model.backbone.init_cfg.type=Pretrained',
                   f'model.backbone.init_cfg.checkpoint={wrong}', 'train_cfg.max_epochs=1',
                   timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert 'does not fit' in proc.stdout and str(wrong) in proc.stdout
    assert not work.exists() or not any(work.rglob('*.pth'))  # no final.pth, no epoch_*.pth


# ----------------------------------------------------------------------------- the workflow path

def _default_checkpoint(config: Path):
    from pgd.engine.config_utils import load_config
    _, cfg = load_config(str(config), resolve=False)
    return cfg.get('pretrain_scale'), (cfg.model.backbone.get('init_cfg') or {})


@pytest.mark.parametrize('config', MINI_CONFIGS, ids=lambda p: p.stem)
def test_every_mini_config_names_its_scale_pretraining_output(config):
    """The size files name ``results/{scale}/pretrain/<size>/backbone.pth`` (the pretrain
    rule's output); the default scale is none (from scratch: the workflow passes its scale),
    and the planner's helper fills any scale in."""
    from pgd.pretrain.required import required_checkpoints
    size = _size_of(config)
    scale, init = _default_checkpoint(config)
    assert scale == 'none'
    assert init == dict(type='Pretrained',
                        checkpoint=f'results/{{scale}}/pretrain/{size}/backbone.pth')
    name = f'mini/{config.stem}'
    for s in ('mini', 'smoke', 'tuning'):
        assert required_checkpoints(name, s) == [f'results/{s}/pretrain/{size}/backbone.pth']
    assert required_checkpoints(name, 'none') == []


def test_paper_configs_need_no_local_checkpoint():
    from pgd.pretrain.required import required_checkpoints
    for config in sorted((REPO / 'config' / 'detectors' / 'paper').glob('*.py')):
        assert required_checkpoints(f'paper/{config.stem}', 'paper') == [], config.stem


@pytest.mark.parametrize('config', ['atss_r18_student', 'fcos_r34_teacher', 'gfl_mbv2_student'])
def test_placeholder_resolves_to_the_scale_and_loads(pretrained, config, tmp_path, monkeypatch):
    """The default config, run from a directory holding ``results/<scale>/pretrain/<size>/``
    (as the workflow runs from the repository root), loads that file bit for bit."""
    import shutil

    from mmdet.registry import MODELS

    from pgd.engine.config_utils import load_config
    from pgd.engine.registry import register_all
    from pgd.pretrain.check import check_pretrained
    register_all()
    path = REPO / 'config' / 'detectors' / 'mini' / f'{config}.py'
    size = _size_of(path)
    target = tmp_path / 'results' / 'smoke' / 'pretrain' / size / 'backbone.pth'
    target.parent.mkdir(parents=True)
    shutil.copy(pretrained[size] / 'backbone.pth', target)
    _, cfg = load_config(str(path), {'pretrain_scale': 'smoke'})
    monkeypatch.chdir(tmp_path)
    assert check_pretrained(cfg) == 1
    assert cfg.model.backbone.init_cfg.checkpoint == f'results/smoke/pretrain/{size}/backbone.pth'
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    ckpt = _state(target)
    loaded = detector.backbone.state_dict()
    assert all(torch.equal(loaded[k], ckpt[k]) for k in ckpt)


def test_missing_scale_checkpoint_is_one_line_naming_file_size_and_backbone(tmp_path,
                                                                           monkeypatch):
    from pgd.engine.config_utils import load_config
    _, cfg = load_config('mini/atss_r34_teacher', {'pretrain_scale': 'nowhere'})
    monkeypatch.chdir(tmp_path)
    msg = _one_line_error(cfg)
    assert 'not found: results/nowhere/pretrain/mini_r34/backbone.pth' in msg
    assert 'ResNet(depth=34, base_channels=32) [r34-w32]' in msg
    assert 'pretrain-backbone --size mini_r34' in msg


def test_placeholder_without_a_scale_is_one_line():
    from pgd.engine.config_utils import load_config
    from mmengine.config import Config
    _, cfg = load_config('mini/atss_r18_student', resolve=False)
    plain = cfg.to_dict()
    plain.pop('pretrain_scale')
    msg = _one_line_error(Config(plain))
    assert 'pretrain_scale' in msg and '{scale}' in msg


def test_distiller_teacher_needs_no_pretrained_file():
    """A distiller's teacher is loaded strictly from its final.pth: its backbone's Pretrained
    init is dropped, so only the student's file is required (and checked)."""
    from pgd.engine.config_utils import load_config
    from pgd.pretrain.check import pretrained_inits, resolve_pretrained
    _, student = load_config('mini/atss_r18_student', {'pretrain_scale': 'mini'}, resolve=False)
    _, teacher = load_config('mini/atss_r34_teacher', resolve=False)
    cfg = student
    cfg.model = dict(type='TeacherStudentDistiller', student=student.model.to_dict(),
                     teacher=teacher.model.to_dict(), teacher_ckpt='teacher/final.pth')
    assert resolve_pretrained(cfg) == ['results/mini/pretrain/mini_r18/backbone.pth']
    assert [where for where, _, _ in pretrained_inits(cfg.model)] == ['model.student.backbone']
