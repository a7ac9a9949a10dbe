"""Adding a distillation method touches three files (workflow/ADDING_A_METHOD.md) -- proved
with a toy feature-imitation method added from fixtures, without editing the repository:

1. the loss: ``tests/fixtures/toy_method/toy_loss.py`` (a new method's goes to
   ``pgd/distill/losses/<name>_loss.py``, imported by that package by itself);
2. its config: ``tests/fixtures/toy_method/config/distill/toy.py`` (``config/distill/``: the
   test points ``pgd.method_options.METHOD_ROOT``, the one place the folder is read, there);
3. its catalog entry: ``Method('toy', 'Toy')`` appended to ``pgd.catalog.METHODS``.

Then the method's options validate, ``pgd distill``'s composition picks the feature engine
from the catalog, and one training step of the mini ATSS student/teacher (random weights)
reports the toy loss.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

from gt_samples import gt_samples  # tests/ helper
from pgd import catalog
from pgd.engine.registry import register_all

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'toy_method'
SIZE = 128

register_all_modules()
register_all()


@pytest.fixture
def toy_method(monkeypatch):
    """The three additions, undone after the test."""
    # 1. the loss module (registers ToyLoss in mmdet's MODELS)
    name = 'pgd_fixture_toy_loss'
    spec = importlib.util.spec_from_file_location(name, FIXTURE / 'toy_loss.py')
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    # 2. the method config folder
    import pgd.method_options as method_options
    monkeypatch.setattr(method_options, 'METHOD_ROOT', FIXTURE / 'config' / 'distill')
    # 3. the catalog entry
    monkeypatch.setattr(catalog, 'METHODS', catalog.METHODS + (catalog.Method('toy', 'Toy'),))
    yield module
    MODELS._module_dict.pop('ToyLoss', None)


def samples():
    return gt_samples(SIZE, lambda n: torch.zeros(n, dtype=torch.long))


def compose(tmp_path, options=None):
    from pgd.engine.distill import compose as compose_run
    ckpt = tmp_path / 'teacher.pth'
    ckpt.write_bytes(b'')  # composition only checks that it exists; the test uses random weights
    args = argparse.Namespace(student='mini/atss_r18_student', teacher='mini/atss_r34_teacher',
                              teacher_ckpt=str(ckpt), method='toy', loss_options=options,
                              cfg_options=None, no_init_from_teacher=False)
    return compose_run(args)[1]


def test_the_fixture_is_three_files():
    files = sorted(p.relative_to(FIXTURE).as_posix() for p in FIXTURE.rglob('*.py'))
    assert files == ['config/distill/toy.py', 'toy_loss.py']  # + the catalog entry
    assert 'toy' not in catalog.method_names()  # nothing of the repository was edited


def test_a_toy_method_added_from_fixtures_trains_a_step(toy_method, tmp_path):
    from pgd.errors import UserError
    from pgd.method_options import check_method_options, known_options

    # the catalog
    assert catalog.setting_label('toy') == 'Toy'
    assert catalog.method('toy').engine == 'feature' and 'toy' in catalog.distill_method_names()
    assert 'toy' in catalog.feature_method_names()         # the benchmarks time it by default

    # --loss-options: its keys come from ToyLoss.__init__, values by the workflow schema
    assert known_options('toy') == {'loss_scale', 'loss_weight', 'num_levels'}
    check_method_options('toy', {'loss_weight': 2.0, 'num_levels': 3, 'loss_scale': 0.5})
    with pytest.raises(UserError, match='unknown loss option k for method toy'):
        check_method_options('toy', {'k': 9})

    # composition: the feature engine, the toy loss, loss_scale folded into its loss_weight
    cfg = compose(tmp_path, {'loss_scale': 0.5, 'num_levels': 3})
    assert cfg.model['type'] == 'TeacherStudentDistiller'
    assert cfg.model['distill_losses'] == {
        'toy': {'type': 'ToyLoss', 'loss_weight': 0.5, 'num_levels': 3}}
    assert cfg.distill['method'] == 'toy' and cfg.distill['loss_scale'] == 0.5
    assert cfg.optim_wrapper['clip_grad']['max_norm'] == 35
    with pytest.raises(UserError, match='loss_scale must be a positive number'):
        compose(tmp_path, {'loss_scale': -1})

    # one forward/backward step on a tiny synthetic batch
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('teacher_ckpt')
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    assert isinstance(model.distill_losses['toy'], toy_method.ToyLoss)
    losses = model.loss(torch.rand(2, 3, SIZE, SIZE), samples())
    assert 'loss_toy_feat' in losses and torch.isfinite(losses['loss_toy_feat'])
    assert losses['loss_toy_feat'].item() > 0
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(t.sum() for t in v)
                for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert model.distill_losses['toy'].adapt[0].weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_a_method_without_a_catalog_entry_is_refused(toy_method, tmp_path, monkeypatch):
    from pgd.errors import UserError
    monkeypatch.setattr(catalog, 'METHODS', tuple(m for m in catalog.METHODS if m.name != 'toy'))
    with pytest.raises(UserError, match="method 'toy' has a config/distill/toy.py but no entry"):
        compose(tmp_path)


def test_feature_methods_are_the_competitors_and_pgd():
    """What the step benchmarks time by default: every feature-imitation method, not the
    controls nor LD / LGD (their own engines)."""
    from pgd import catalog
    assert catalog.feature_method_names() == ('defeat', 'frs', 'fgfi', 'fkd', 'fgd', 'pgd')
