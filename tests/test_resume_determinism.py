"""Honest under faults: a killed run resumes to the same weights, a truncated checkpoint is
skipped, checkpoints are written atomically and a diverged run fails.

Runs the real CLI (MMEngine Runner) on 8 SYNTHETIC 128-px images, batch 2: 4 iterations per
epoch, RandomFlip on (the augmentation whose random state a plain resume used to lose).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, run_pgd

pytestmark = pytest.mark.slow
EPOCHS = 3
ITERS = 4  # 8 images / batch 2


def train_args(data, work, *extra):
    return ['train', 'mini/atss_r18_student', '--work-dir', work, '--data-root', data,
            '--seed', 0, '--device', 'cpu', '--cfg-options', f'train_cfg.max_epochs={EPOCHS}',
            'train_cfg.val_begin=100', 'train_dataloader.batch_size=2',
            'default_hooks.logger.interval=1', *extra]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    from pgd.data.make_data import make_dataset
    out = tmp_path_factory.mktemp('resume_data')
    make_dataset('shapes', str(out), num_train=8, num_val=2, image_size=128, seed=5,
                 max_size=0.85)
    return out


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory) -> Path:
    """An uninterrupted run: its work dir."""
    work = tmp_path_factory.mktemp('reference')
    res = run_pgd(*train_args(data, work))
    assert res.returncode == 0, res.stdout[-3000:]
    return work


def run_until_killed(args, work: Path, when, timeout=300) -> list:
    """Start ``python -m pgd ARGS``, SIGKILL it as soon as ``when(lines, work)`` is true;
    returns its output lines. Fails if the run ended by itself first."""
    proc = subprocess.Popen([PYTHON, '-m', 'pgd', *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not when(lines, work):
        assert proc.poll() is None, 'run finished before the kill point:\n' + ''.join(lines[-20:])
        assert time.monotonic() < deadline, 'kill point not reached in time'
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(10)
    assert proc.returncode == -signal.SIGKILL
    return lines


def after_first_checkpoint(lines, work):
    return (work / 'last_checkpoint').is_file()


def at_iteration(epoch: int, it: int):
    tag = f'Epoch(train) [{epoch}][{it}/{ITERS}]'
    return lambda lines, work: any(tag in line for line in list(lines))


def test_killed_three_times_gives_the_same_final_weights(reference, data, tmp_path):
    work = tmp_path / 'killed'
    args = train_args(data, work)
    run_until_killed(args, work, after_first_checkpoint)
    # resumes from epoch 1, killed half-way through epoch 2
    out = run_until_killed(args, work, at_iteration(2, 2))
    assert any('resuming from epoch_1.pth' in line for line in out), ''.join(out[-20:])
    # resumes from epoch 1 again, finishes epoch 2, killed in epoch 3
    run_until_killed(args, work, at_iteration(3, 3))
    last = run_pgd(*args)
    assert last.returncode == 0, last.stdout[-3000:]
    assert 'resuming from epoch_2.pth' in last.stdout
    assert sha256(work / 'final.pth') == sha256(reference / 'final.pth')
    note = json.loads((work / 'resumes.json').read_text())
    assert [r['from_epoch'] for r in note['resumes']] == [1, 1, 2]
    assert note['final_sha256'] == sha256(work / 'final.pth')
    # the evaluation carries the resume history into the metrics provenance
    out = tmp_path / 'metrics.json'
    res = run_pgd('test', 'mini/atss_r18_student', work / 'final.pth', '--out', out,
                  '--data-root', data, '--device', 'cpu')
    assert res.returncode == 0, res.stdout[-3000:]
    training = json.loads(out.read_text())['provenance']['training']
    assert training['resumed'] is True
    assert [r['from_epoch'] for r in training['resumes']] == [1, 1, 2]


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(reference, data, tmp_path):
    work = tmp_path / 'truncated'
    shutil.copytree(reference, work)
    (work / 'final.pth').unlink()
    last = work / 'epoch_3.pth'
    assert (work / 'last_checkpoint').read_text().strip().endswith('epoch_3.pth')
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # disk full while saving
    res = run_pgd(*train_args(data, work))
    assert res.returncode == 0, res.stdout[-3000:]
    fallback = [line for line in res.stdout.splitlines() if 'does not load' in line]
    assert fallback == ['[pgd] last checkpoint epoch_3.pth does not load; resuming from '
                        'epoch_2.pth (epoch 2) instead']
    assert 'resumed epoch: 2' in res.stdout
    # the retrained epoch 3 replaces the bad file, and the run ends where the reference did
    assert sha256(work / 'final.pth') == sha256(reference / 'final.pth')
    assert not list(work.glob('.*.tmp'))


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous file under the real name untouched."""
    from mmengine.runner import Runner

    from pgd.engine.runtime import AtomicCheckpointRunner
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'previous good checkpoint')

    def dies_half_way(self, out_dir, filename, *args, **kwargs):
        Path(out_dir, filename).write_bytes(b'PK\x03\x04 trunc')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(Runner, 'save_checkpoint', dies_half_way)
    runner = AtomicCheckpointRunner.__new__(AtomicCheckpointRunner)
    with pytest.raises(OSError, match='No space left'):
        runner.save_checkpoint(str(tmp_path), 'epoch_1.pth')
    assert target.read_bytes() == b'previous good checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']  # no temporary left

    def writes(self, out_dir, filename, *args, **kwargs):
        Path(out_dir, filename).write_bytes(b'new checkpoint')

    monkeypatch.setattr(Runner, 'save_checkpoint', writes)
    runner._work_dir = str(tmp_path)
    (tmp_path / 'superseded-old').mkdir()  # a guard-workdir leftover: dropped once saved
    runner.save_checkpoint(str(tmp_path), 'epoch_1.pth')
    assert target.read_bytes() == b'new checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


def test_epoch_seeds_depend_on_seed_epoch_and_rank():
    from pgd.engine.runtime import derived_seed
    seeds = {derived_seed(s, e, r) for s in (0, 1) for e in (0, 1, 2) for r in (0, 1)}
    assert len(seeds) == 12
    assert derived_seed(0, 1, 0) == derived_seed(0, 1, 0)


def test_non_finite_loss_stops_training(data, tmp_path):
    work = tmp_path / 'diverged'
    res = run_pgd('train', 'mini/atss_r18_student', '--work-dir', work, '--data-root', data,
                  '--seed', 0, '--device', 'cpu', '--cfg-options', 'train_cfg.max_epochs=1',
                  'train_cfg.val_begin=100', 'train_dataloader.batch_size=2',
                  'optim_wrapper.optimizer.lr=1e6', 'optim_wrapper.clip_grad=None')
    assert res.returncode == 2, res.stdout[-3000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith('error: training diverged at iteration '), last
    assert 'loss=nan' in last and 'loss_cls=nan' in last and 'Traceback' not in res.stdout
    assert not (work / 'final.pth').exists()
    assert not list(work.glob('epoch_*.pth'))  # no checkpoint of the diverged model


def test_non_finite_terms_names_only_bad_loss_terms():
    import torch

    from pgd.engine.runtime import non_finite_terms
    got = non_finite_terms({'loss': torch.tensor(float('nan')), 'loss_cls': torch.tensor(1.0),
                            'loss_bbox': torch.tensor(float('inf')), 'acc': float('nan')})
    assert list(got) == ['loss', 'loss_bbox']


def test_killed_distillation_resumes_to_the_same_student(reference, data, tmp_path):
    """Distillation goes through the same training code: kill it in its 2nd epoch, rerun,
    and the exported student equals an uninterrupted distillation's."""
    def args(work):
        return ['distill', '--student', 'mini/atss_r18_student', '--teacher',
                'mini/atss_r18_student', '--teacher-ckpt', reference / 'final.pth',
                '--method', 'pgd', '--loss-options', 'k=9', '--work-dir', work,
                '--data-root', data, '--seed', 0, '--device', 'cpu', '--cfg-options',
                'train_cfg.max_epochs=2', 'train_cfg.val_begin=100',
                'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1']
    whole = run_pgd(*args(tmp_path / 'whole'))
    assert whole.returncode == 0, whole.stdout[-3000:]
    work = tmp_path / 'killed'
    run_until_killed(args(work), work, at_iteration(2, 3))
    rerun = run_pgd(*args(work))
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert 'resuming from epoch_1.pth' in rerun.stdout
    assert sha256(work / 'final.pth') == sha256(tmp_path / 'whole' / 'final.pth')
