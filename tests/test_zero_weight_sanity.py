"""The distiller adds nothing but its losses: with every distillation loss weight 0 and no
teacher-init (config/distill/zero.py) a distillation run trains the plain student bit for bit
(same seed, same data order, same augmentation, same final weights). This is the sanity row
of Table 1 (``pgd sanity-check`` compares the two runs in the workflow).

Real CLI and MMEngine Runner on 16 SYNTHETIC 128-px images, batch 4, 2 epochs, from scratch
(every student tensor is drawn from the RNG, so any extra draw by the teacher or the losses
would show), RandomFlip on.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_pgd

pytestmark = pytest.mark.slow
COMMON = ('--seed', 3, '--device', 'cpu', '--cfg-options', 'train_cfg.max_epochs=2',
          'train_cfg.val_begin=100', 'train_dataloader.batch_size=4')


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised R34 ATSS teacher (its predictions only feed the zeroed losses)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    from pgd.engine.config_utils import resolve_config
    from pgd.engine.registry import register_all
    register_all()
    torch.manual_seed(0)
    teacher = MODELS.build(Config.fromfile(str(resolve_config('mini/atss_r34_teacher'))).model)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, path)
    return path


@pytest.fixture(scope='module')
def student_run(tiny_shapes, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp('student')
    res = run_pgd('train', 'mini/atss_r18_student', '--work-dir', work, '--data-root',
                  tiny_shapes, *COMMON)
    assert res.returncode == 0, res.stdout[-3000:]
    return work


def distill(tiny_shapes, teacher_ckpt, work, method, *extra):
    res = run_pgd('distill', '--student', 'mini/atss_r18_student', '--teacher',
                  'mini/atss_r34_teacher', '--teacher-ckpt', teacher_ckpt, '--method', method,
                  '--work-dir', work, '--data-root', tiny_shapes, *extra, *COMMON)
    assert res.returncode == 0, res.stdout[-3000:]
    return res


def final_weights(work: Path) -> dict:
    return torch.load(Path(work) / 'final.pth', map_location='cpu',
                      weights_only=True)['state_dict']


def differing(a: dict, b: dict) -> list:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_zero_weight_distiller_equals_the_plain_student_bit_for_bit(
        tiny_shapes, teacher_ckpt, student_run, tmp_path):
    res = distill(tiny_shapes, teacher_ckpt, tmp_path / 'zero', 'zero')
    # the PGD terms were computed (and weighted by 0), the student was not teacher-initialised
    assert 'loss_pgd_fea_cls' in res.stdout
    assert 'student neck/head tensors' not in res.stdout
    assert differing(final_weights(student_run), final_weights(tmp_path / 'zero')) == []


def test_the_comparison_sees_a_real_loss(tiny_shapes, teacher_ckpt, student_run, tmp_path):
    """Negative control: the same run with PGD's real weights ends elsewhere."""
    distill(tiny_shapes, teacher_ckpt, tmp_path / 'pgd', 'pgd', '--no-init-from-teacher')
    assert len(differing(final_weights(student_run), final_weights(tmp_path / 'pgd'))) > 10


def test_sanity_check_command_reports_pass_and_fail(tiny_shapes, teacher_ckpt, student_run,
                                                    tmp_path):
    distill(tiny_shapes, teacher_ckpt, tmp_path / 'zero', 'zero')
    distill(tiny_shapes, teacher_ckpt, tmp_path / 'inherit', 'inherit')
    out = tmp_path / 'sanity.json'
    res = run_pgd('sanity-check', '--student', student_run / 'final.pth', '--zero',
                  tmp_path / 'zero' / 'final.pth', '--out', out)
    assert res.returncode == 0, res.stdout[-3000:]
    doc = json.loads(out.read_text())
    assert doc['pass'] is True and doc['tensors_differing'] == 0 and doc['max_abs_diff'] == 0.0
    # a teacher-initialised run is not the plain student: reported as a failure, exit 0
    res = run_pgd('sanity-check', '--student', student_run / 'final.pth', '--zero',
                  tmp_path / 'inherit' / 'final.pth', '--out', out)
    assert res.returncode == 0, res.stdout[-3000:]
    doc = json.loads(out.read_text())
    assert doc['pass'] is False and doc['tensors_differing'] > 0
