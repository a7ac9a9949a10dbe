"""End to end on CPU: train a mini detector, resume it, evaluate it, distil from it.

Runs the real CLI (MMEngine Runner, pycocotools) on a 16-image SYNTHETIC dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_pgd

pytestmark = pytest.mark.slow
ONE_EPOCH = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1']


@pytest.fixture(scope='module')
def trained(tiny_shapes, tmp_path_factory):
    work = tmp_path_factory.mktemp('atss_student')
    first = run_pgd('train', 'mini/atss_r18_student', '--work-dir', work, '--data-root',
                    tiny_shapes, '--seed', 1, *ONE_EPOCH)
    assert first.returncode == 0, first.stdout[-3000:]
    return work, first


def test_train_writes_checkpoints_and_final_weights(trained):
    work, first = trained
    assert (work / 'epoch_1.pth').is_file() and (work / 'last_checkpoint').is_file()
    final = torch.load(work / 'final.pth', map_location='cpu', weights_only=True)
    assert final['meta']['seed'] == 1
    assert any(k.startswith('bbox_head.') for k in final['state_dict'])
    assert 'resuming' not in first.stdout


def test_rerun_resumes_from_last_checkpoint(trained, tiny_shapes):
    work, _ = trained
    second = run_pgd('train', 'mini/atss_r18_student', '--work-dir', work, '--data-root',
                     tiny_shapes, '--seed', 1, '--cfg-options', 'train_cfg.max_epochs=2',
                     'train_cfg.val_interval=2')
    assert second.returncode == 0, second.stdout[-3000:]
    assert 'resuming' in second.stdout
    assert 'resumed epoch: 1' in second.stdout  # MMEngine restored epoch 1 instead of restarting
    assert (work / 'epoch_2.pth').is_file()


def test_evaluate_writes_metrics_with_provenance(trained, tiny_shapes, tmp_path):
    work, _ = trained
    out = tmp_path / 'metrics.json'
    res = run_pgd('test', 'mini/atss_r18_student', work / 'final.pth', '--out', out,
                  '--data-root', tiny_shapes, '--run-info', 'table=table1', 'detector=atss',
                  'setting=student', 'seed=1',
                  # an almost untrained model scores below the default 0.05 threshold
                  '--cfg-options', 'model.test_cfg.score_thr=0.0')
    assert res.returncode == 0, res.stdout[-3000:]
    data = json.loads(out.read_text())
    for key in ('AP', 'AP50', 'AP75', 'APS', 'APM', 'APL'):
        assert isinstance(data['metrics'][key], float) and 0.0 <= data['metrics'][key] <= 100.0
    prov = data['provenance']
    assert prov['seed'] == 1 and prov['dataset']['synthetic'] is True
    assert prov['dataset']['name'] == 'synthetic_shapes'
    assert len(prov['config_file_sha256']) == 64 and prov['git_commit']
    assert data['run'] == {'table': 'table1', 'detector': 'atss', 'setting': 'student',
                           'seed': 1}
    assert not list(tmp_path.glob('.metrics.json.*'))  # no temporary left behind


def test_pgd_distillation_run_exports_a_plain_student(trained, tiny_shapes, tmp_path):
    work, _ = trained
    res = run_pgd('distill', '--student', 'mini/atss_r18_student', '--teacher',
                  'mini/atss_r18_student', '--teacher-ckpt', work / 'final.pth', '--method',
                  'pgd', '--loss-options', 'k=9', '--work-dir', tmp_path / 'pgd',
                  '--data-root', tiny_shapes, *ONE_EPOCH)
    assert res.returncode == 0, res.stdout[-3000:]
    assert 'loss_pgd_fea_cls' in res.stdout and 'loss_pgd_att_reg' in res.stdout
    final = torch.load(tmp_path / 'pgd' / 'final.pth', map_location='cpu', weights_only=True)
    assert not any(k.startswith(('teacher.', 'student.', 'distill_losses.'))
                   for k in final['state_dict'])
    composed = (tmp_path / 'pgd' / 'distill_config.py').read_text()
    assert "'k': 9" in composed or 'k=9' in composed


@pytest.mark.parametrize('args, message', [
    (['test', 'mini/atss_r18_student', '/nonexistent/final.pth', '--out', '/tmp/x.json'],
     'checkpoint not found'),
    (['train', 'mini/yolo_r18_student', '--work-dir', '/tmp/pgd-x'], 'unknown detector'),
    (['train', 'mini/atss_r18_student', '--work-dir', '/tmp/pgd-x', '--device', 'cuda'],
     'CUDA requested'),
    (['distill', '--student', 'mini/atss_r18_student', '--method', 'nosuch', '--work-dir',
      '/tmp/pgd-x'], 'unknown distillation method'),
])
def test_clear_one_line_errors(args, message, tiny_shapes):
    if 'cuda' in args and torch.cuda.is_available():
        pytest.skip('a GPU is present')
    if args[0] == 'train':
        args = args + ['--data-root', str(tiny_shapes)]
    res = run_pgd(*args)
    assert res.returncode == 2
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last and 'Traceback' not in res.stdout


def test_missing_and_corrupt_annotation_files(tmp_path):
    res = run_pgd('train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                  '--data-root', tmp_path / 'nothing')
    assert res.returncode == 2 and 'annotation file not found' in res.stdout
    ann = tmp_path / 'bad' / 'annotations'
    ann.mkdir(parents=True)
    (ann / 'synthetic_shapes_train.json').write_text('{"images": [')
    res = run_pgd('train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                  '--data-root', tmp_path / 'bad')
    assert res.returncode == 2 and 'corrupt annotation file' in res.stdout


def test_synthetic_images_of_another_size_are_refused(tmp_path):
    from pgd.data.make_data import make_dataset
    make_dataset('shapes', str(tmp_path / 'd96'), num_train=2, num_val=2, image_size=96, seed=0)
    res = run_pgd('train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                  '--data-root', tmp_path / 'd96')
    assert res.returncode == 2
    assert '96-px SYNTHETIC images' in res.stdout and 'image_size=128' in res.stdout
    assert '--cfg-options image_size=96' in res.stdout
    # a Resize set to some other size cannot follow image_size: refused, naming the step
    res = run_pgd('train', 'mini/atss_r18_student', '--work-dir', tmp_path / 'w',
                  '--data-root', tmp_path / 'd96', '--cfg-options', 'image_size=96',
                  'train_dataloader.dataset.pipeline.2.scale=(112,112)')
    assert res.returncode == 2
    assert ('train_dataloader.dataset.pipeline.2 (Resize, scale (112, 112)) cannot follow'
            in res.stdout), res.stdout


def test_image_size_option_resizes_every_pipeline(tmp_path):
    """`--cfg-options image_size=N` (what the workflow passes when a dataset is drawn at
    another size than the config's) moves every loader's Resize to N px, so N-px data is
    accepted; without it the same data is refused. A size-dependent multi-scale step cannot
    follow and stops with one line; a nonsense size too."""
    from pgd.data.make_data import make_dataset
    from pgd.engine.config_utils import load_config, retarget_data_root
    from pgd.errors import UserError
    make_dataset('shapes', str(tmp_path / 'd96'), num_train=2, num_val=2, image_size=96, seed=0)
    _, cfg = load_config('mini/atss_r18_student', {'image_size': 96})
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        scales = [t['scale'] for t in cfg[key].dataset.pipeline if t['type'] == 'Resize']
        assert scales == [(96, 96)], (key, scales)
    retarget_data_root(cfg, str(tmp_path / 'd96'))            # accepted
    _, plain = load_config('mini/atss_r18_student')
    with pytest.raises(UserError, match='96-px SYNTHETIC images'):
        retarget_data_root(plain, str(tmp_path / 'd96'))
    ms = tmp_path / 'ms.py'
    repo = Path(__file__).resolve().parents[1]
    ms.write_text(f"_base_ = ['{repo}/config/detectors/mini/atss_r18_student.py']\n"
                  "train_dataloader = dict(dataset=dict(pipeline=[\n"
                  "    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),\n"
                  "    dict(type='RandomResize', scale=[(96, 96), (160, 160)], keep_ratio=True),\n"
                  "    dict(type='PackDetInputs')]))\n")
    with pytest.raises(UserError, match=r'pipeline.2 \(RandomResize, scale .*\) cannot follow'):
        load_config(str(ms), {'image_size': 256})
    for bad in (10, 'abc', 2.5):
        with pytest.raises(UserError, match='image_size must be an integer >= 64'):
            load_config('mini/atss_r18_student', {'image_size': bad})


def test_ld_runs_through_mmdetections_kd_detector(tiny_shapes, tmp_path):
    """LD (GFL only) uses mmdet's KnowledgeDistillationSingleStageDetector with the official
    LD head (main LD + VLR LD + main KD, pgd.distill.ld_vlr_head, an LDHead subclass); its
    exported student loads into the plain GFL student config."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from pgd.engine.config_utils import resolve_config
    register_all_modules()
    teacher = MODELS.build(Config.fromfile(str(resolve_config('mini/gfl_r34_teacher'))).model)
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, ckpt)
    res = run_pgd('distill', '--student', 'mini/gfl_r18_student', '--teacher',
                  'mini/gfl_r34_teacher', '--teacher-ckpt', ckpt, '--method', 'ld',
                  '--work-dir', tmp_path / 'ld', '--data-root', tiny_shapes, *ONE_EPOCH)
    assert res.returncode == 0, res.stdout[-3000:]
    assert 'loss_ld' in res.stdout
    student = MODELS.build(Config.fromfile(str(resolve_config('mini/gfl_r18_student'))).model)
    final = torch.load(tmp_path / 'ld' / 'final.pth', map_location='cpu', weights_only=True)
    student.load_state_dict(final['state_dict'], strict=True)
    # and LD is refused on other detectors with a clear error
    res = run_pgd('distill', '--student', 'mini/atss_r18_student', '--teacher',
                  'mini/atss_r34_teacher', '--teacher-ckpt', ckpt, '--method', 'ld',
                  '--work-dir', tmp_path / 'ld2', '--data-root', tiny_shapes)
    assert res.returncode == 2 and 'LD is defined for' in res.stdout


def test_lgd_runs_without_a_teacher(tiny_shapes, tmp_path):
    res = run_pgd('distill', '--student', 'mini/atss_r18_student', '--method', 'lgd',
                  '--work-dir', tmp_path / 'lgd', '--data-root', tiny_shapes,
                  '--loss-options', 'distill_start_ratio=0.0', *ONE_EPOCH)
    assert res.returncode == 0, res.stdout[-3000:]
    assert 'loss_lgd_distill' in res.stdout and 'loss_lgd_inst' in res.stdout
    final = torch.load(tmp_path / 'lgd' / 'final.pth', map_location='cpu', weights_only=True)
    assert not any('lgd' in k or k.startswith('student.') for k in final['state_dict'])


def test_undefined_coco_buckets_are_none_not_minus_100():
    from pgd.engine.test import coco_metrics
    raw = {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5, 'coco/bbox_mAP_75': 0.2,
           'coco/bbox_mAP_s': 0.1, 'coco/bbox_mAP_m': 0.3, 'coco/bbox_mAP_l': -1.0}
    got = coco_metrics(raw)
    assert got['AP'] == 25.0 and got['APS'] == 10.0 and got['APL'] is None
