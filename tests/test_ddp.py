"""Multi-process training: 2 CPU processes (gloo) launched exactly like the workflow launches a
multi-GPU job (``python -m torch.distributed.run --standalone --nproc_per_node=N -m pgd``).

* ``pgd train`` on the mini ATSS student (16 SYNTHETIC images, 1 epoch): both ranks train
  (half of the images each), checkpoints and ``final.pth`` are written by rank 0 only, and
  the weights evaluate with ``pgd test`` to metrics of the same structure as a
  single-process run's;
* ``pgd distill --method pgd`` with a (randomly initialised) mini R-34 teacher: a probe hook
  checks on every rank that the model is DDP-wrapped and the teacher is present, frozen
  (no grad, eval mode) and still equal to its checkpoint after training;
* linear LR scaling (paper §4.1: lr 0.02 at total batch 32): a paper config built on 2 ranks
  x 4 images per rank gets lr 0.02 x 8 / 32 (Runner built, optimizer built and scaled the
  way ``Runner.train`` does it; no training).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pgd import workflow as wp

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
NPROC = 2
ONE_EPOCH = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1']

# Records, on every rank, what the Runner set up; imported by the probe launcher below.
PROBE_MODULE = '''
"""`python ddp_probe.py OUT_DIR <pgd command line>`: run `pgd` like `python -m pgd`, with a hook
that writes OUT_DIR/rank<R>.json (world size, DDP wrapper, teacher state, images seen)."""
import json
import sys
from pathlib import Path

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

import pgd.engine.train as train_mod


@HOOKS.register_module()
class DDPProbeHook(Hook):
    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.img_ids = []
        self.info = {}

    def before_train(self, runner):
        groups = runner.optim_wrapper.optimizer.param_groups
        self.info['initial_lr'] = sorted({g.get('initial_lr', g['lr']) for g in groups})

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.img_ids += [int(s.img_id) for s in data_batch['data_samples']]

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        info = dict(self.info, rank=runner.rank, world_size=runner.world_size,
                    wrapper=type(runner.model).__name__, img_ids=sorted(self.img_ids))
        teacher = getattr(model, 'teacher', None)
        if teacher is not None:
            ref = torch.load(model.teacher_ckpt, map_location='cpu', weights_only=False)
            ref = ref.get('state_dict', ref)
            live = teacher.state_dict()
            info['teacher'] = dict(
                params=sum(p.numel() for p in teacher.parameters()),
                requires_grad=any(p.requires_grad for p in teacher.parameters()),
                training=teacher.training,
                max_abs_diff_to_ckpt=max(float((live[k].float() - ref[k].float()).abs().max())
                                         for k in live if live[k].numel()),
                same_keys=set(live) == set(ref))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f'rank{runner.rank}.json').write_text(json.dumps(info))


_train_config = train_mod.train_config


def probed_train_config(cfg, args, label):
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='DDPProbeHook', out_dir=OUT_DIR, priority='LOWEST')]
    return _train_config(cfg, args, label)


if __name__ == '__main__':
    OUT_DIR = sys.argv[1]
    train_mod.train_config = probed_train_config
    from pgd.cli import main
    sys.exit(main(sys.argv[2:]))
'''

# Builds a Runner from a config on every rank, then its optimizer, and scales the lr the way
# Runner.train() does (build_optim_wrapper, then scale_lr); writes OUT/rank<R>.json.
LR_PROBE = '''
import json
import sys
from argparse import Namespace
from pathlib import Path

from pgd.engine.config_utils import load_config
from pgd.engine.registry import register_all
from pgd.engine.train import settle_runtime

config, data_root, work_dir, out = sys.argv[1:5]
_, cfg = load_config(config)
settle_runtime(cfg, Namespace(data_root=data_root, device='cpu', work_dir=work_dir, seed=0,
                              no_resume=True))
register_all()
from mmengine.runner import Runner

runner = Runner.from_cfg(cfg)
base = sorted({g['lr'] for g in runner.build_optim_wrapper(cfg.optim_wrapper)
               .optimizer.param_groups})
optim = runner.build_optim_wrapper(runner.optim_wrapper)
runner.scale_lr(optim, runner.auto_scale_lr)
Path(out).mkdir(parents=True, exist_ok=True)
(Path(out) / f'rank{runner.rank}.json').write_text(json.dumps(dict(
    rank=runner.rank, world_size=runner.world_size, base_lr=base,
    batch_per_rank=cfg.train_dataloader.batch_size,
    auto_scale_lr=dict(cfg.auto_scale_lr),
    lr=sorted({g['lr'] for g in optim.optimizer.param_groups}))))
'''


def torchrun(nproc: int = NPROC) -> list:
    """The workflow's launcher for ``nproc`` processes (rules/common.smk ``launcher``)."""
    argv = shlex.split(wp.launcher(nproc, PYTHON))
    assert argv[-2:] == ['-m', 'pgd'] and f'--nproc_per_node={nproc}' in argv
    return argv


def run(argv, cwd, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_ranks(out_dir: Path) -> list:
    files = sorted(out_dir.glob('rank*.json'))
    assert [f.name for f in files] == [f'rank{r}.json' for r in range(NPROC)], files
    return [json.loads(f.read_text()) for f in files]


def rank0_outputs(work: Path, out: str):
    """Rank 0 alone writes checkpoints and final.pth (one `[pgd] wrote`, both ranks train)."""
    assert out.count('(world size 2)') == NPROC, out[-3000:]
    assert out.count('[pgd] wrote') == 1, out[-3000:]
    files = {p.name for p in work.iterdir() if p.is_file()}
    assert {'epoch_1.pth', 'last_checkpoint', 'final.pth'} <= files, files
    assert not [f for f in files if f.endswith(('.tmp', '.part')) or f.startswith('.')], files
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['epoch'] == 1
    # one iteration per epoch: 16 images split over 2 ranks, batch 8 per rank
    assert 'Epoch(train) [1][1/1]' in out


def evaluate(final: Path, data: Path, out: Path, cwd: Path) -> dict:
    res = run([PYTHON, '-m', 'pgd', 'test', 'mini/atss_r18_student', final, '--out', out,
               '--data-root', data, '--run-info', 'table=table1', 'detector=atss',
               'setting=student', 'seed=0', '--cfg-options', 'model.test_cfg.score_thr=0.0'],
              cwd)
    assert res.returncode == 0, res.stdout[-3000:]
    return json.loads(out.read_text())


def structure(obj):
    """Keys and value types of a nested JSON object (not the values)."""
    if isinstance(obj, dict):
        return {k: structure(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [structure(v) for v in obj[:1]]
    return 'number' if isinstance(obj, (int, float)) and not isinstance(obj, bool) else \
        type(obj).__name__


@pytest.fixture(scope='module')
def ddp_train(tiny_shapes, tmp_path_factory):
    work = tmp_path_factory.mktemp('ddp_train')
    res = run([*torchrun(), 'train', 'mini/atss_r18_student', '--work-dir', work / 'run',
               '--data-root', tiny_shapes, '--seed', 0, '--device', 'cpu', *ONE_EPOCH], work)
    assert res.returncode == 0, res.stdout[-4000:]
    return work / 'run', res.stdout


def test_ddp_train_two_processes(ddp_train):
    work, out = ddp_train
    rank0_outputs(work, out)
    assert 'Distributed training: True' in out
    final = torch.load(work / 'final.pth', map_location='cpu', weights_only=True)
    assert final['meta']['epoch'] == 1
    assert any(k.startswith('bbox_head.') for k in final['state_dict'])
    assert not any(k.startswith('module.') for k in final['state_dict'])  # unwrapped DDP


def test_ddp_final_weights_and_metrics_match_single_process(ddp_train, tiny_shapes, tmp_path):
    work, _ = ddp_train
    single = tmp_path / 'single'
    res = run([PYTHON, '-m', 'pgd', 'train', 'mini/atss_r18_student', '--work-dir', single,
               '--data-root', tiny_shapes, '--seed', 0, '--device', 'cpu', *ONE_EPOCH],
              tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]
    assert 'Epoch(train) [1][2/2]' in res.stdout  # 16 images, batch 8, one process
    ddp_sd = torch.load(work / 'final.pth', map_location='cpu', weights_only=True)
    one_sd = torch.load(single / 'final.pth', map_location='cpu', weights_only=True)
    assert set(ddp_sd) == set(one_sd) and set(ddp_sd['meta']) == set(one_sd['meta'])
    assert {k: v.shape for k, v in ddp_sd['state_dict'].items()} == \
        {k: v.shape for k, v in one_sd['state_dict'].items()}
    m_ddp = evaluate(work / 'final.pth', tiny_shapes, tmp_path / 'ddp.json', tmp_path)
    m_one = evaluate(single / 'final.pth', tiny_shapes, tmp_path / 'one.json', tmp_path)
    assert structure(m_ddp) == structure(m_one)
    assert set(m_ddp['metrics']) >= {'AP', 'AP50', 'AP75', 'APS', 'APM', 'APL'}


@pytest.fixture(scope='module')
def random_teacher(tmp_path_factory) -> Path:
    """A randomly initialised mini R-34 ATSS teacher, saved like `pgd train`'s final.pth."""
    out = tmp_path_factory.mktemp('teacher') / 'final.pth'
    script = textwrap.dedent(f'''
        import torch
        from mmdet.registry import MODELS
        from pgd.engine.config_utils import load_config
        from pgd.engine.registry import register_all
        register_all()
        torch.manual_seed(0)
        _, cfg = load_config('mini/atss_r34_teacher')
        model = MODELS.build(cfg.model)
        model.init_weights()
        torch.save({{'meta': {{'epoch': 0, 'seed': 0}}, 'state_dict': model.state_dict()}},
                   {str(out)!r})
    ''')
    res = run([PYTHON, '-c', script], out.parent)
    assert res.returncode == 0 and out.is_file(), res.stdout[-3000:]
    return out


def test_ddp_pgd_distillation_teacher_frozen_on_every_rank(tiny_shapes, random_teacher,
                                                           tmp_path):
    (tmp_path / 'ddp_probe.py').write_text(PROBE_MODULE)
    work, probe = tmp_path / 'run', tmp_path / 'probe'
    argv = torchrun()[:-2] + ['ddp_probe.py', probe, 'distill', '--student',
                              'mini/atss_r18_student', '--teacher', 'mini/atss_r34_teacher',
                              '--teacher-ckpt', random_teacher, '--method', 'pgd',
                              '--work-dir', work, '--data-root', tiny_shapes, '--seed', 0,
                              '--device', 'cpu', *ONE_EPOCH]
    res = run(argv, tmp_path)
    out = res.stdout
    assert res.returncode == 0, out[-4000:]
    rank0_outputs(work, out)
    assert 'loss_pgd_fea_cls' in out and 'loss_pgd_att_reg' in out
    final = torch.load(work / 'final.pth', map_location='cpu', weights_only=True)
    assert not any(k.startswith(('teacher.', 'student.', 'distill_losses.', 'module.'))
                   for k in final['state_dict'])
    ranks = read_ranks(probe)
    for r, info in enumerate(ranks):
        assert info['rank'] == r and info['world_size'] == NPROC
        assert info['wrapper'] == 'MMDistributedDataParallel'
        t = info['teacher']
        assert t['params'] > 0 and t['same_keys']
        assert not t['requires_grad'] and not t['training']
        assert t['max_abs_diff_to_ckpt'] == 0.0, t  # frozen: still the checkpoint's weights
        assert len(info['img_ids']) == 8  # each rank trains on its half of the 16 images
    assert not set(ranks[0]['img_ids']) & set(ranks[1]['img_ids'])
    assert ranks[0]['initial_lr'] == ranks[1]['initial_lr']


def test_linear_lr_scaling_uses_world_size_times_batch(tmp_path):
    """paper/atss_r50_student: lr 0.02 for a total batch of 32 -> 2 ranks x 4 images = 8 ->
    lr 0.005 (MMEngine's auto_scale_lr with the real world size)."""
    import cv2
    import numpy as np
    data = tmp_path / 'coco'
    (data / 'annotations').mkdir(parents=True)
    for split in ('train2017', 'val2017'):
        # one valid image and box: `pgd train` checks the data before building the Runner
        (data / split).mkdir()
        cv2.imwrite(str(data / split / 'a.jpg'), np.full((64, 64, 3), 127, np.uint8))
        (data / 'annotations' / f'instances_{split}.json').write_text(json.dumps({
            'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 64, 'height': 64}],
            'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1,
                             'bbox': [8, 8, 32, 32], 'area': 1024, 'iscrowd': 0}],
            'categories': [{'id': 1, 'name': 'person'}]}))
    (tmp_path / 'lr_probe.py').write_text(LR_PROBE)
    out = tmp_path / 'lr'
    res = run(torchrun()[:-2] + ['lr_probe.py', 'paper/atss_r50_student', data,
                                 tmp_path / 'work', out], tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:]
    for info in read_ranks(out):
        assert info['world_size'] == NPROC
        assert info['auto_scale_lr'] == {'enable': True, 'base_batch_size': 32}
        assert info['batch_per_rank'] == 4 and info['base_lr'] == [0.02]
        assert info['lr'] == [pytest.approx(0.02 * NPROC * 4 / 32)]
    assert 'current batch size is 8' in res.stdout
