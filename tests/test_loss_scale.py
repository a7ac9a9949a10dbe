"""``loss_scale`` is applied in one place (``pgd.engine.distill_common.scale_loss_weights``, at
config-composition time) and means the same for every engine: for each catalog method, the
config composed by ``pgd distill`` with ``loss_scale=S`` has S x the loss weights of the
unscaled one, and the model built from it returns S x every distillation term (and the same
detection terms) on the same weights and inputs."""
from __future__ import annotations

import argparse
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.logging import MessageHub

from gt_samples import gt_samples  # tests/ helper
from pgd import catalog
from pgd.engine.registry import register_all

register_all_modules()
register_all()

SIZE = 128
SCALE = 2.5
#: the distillation terms of each engine (every other term must be unchanged by loss_scale)
LD_TERMS = {'loss_ld', 'loss_ld_vlr', 'loss_kd'}
LGD_TERMS = {'loss_lgd_distill', 'loss_lgd_adapter_warmup'}


def is_distill_term(method: catalog.Method, key: str, model_cfg) -> bool:
    if method.engine == 'ld':
        return key in LD_TERMS
    if method.engine == 'lgd':
        return key in LGD_TERMS
    # a feature loss named N logs loss_N_* (zero.py reuses PGD's loss: loss_pgd_*)
    return key.startswith(tuple(f'loss_{n}_' for n in model_cfg['distill_losses']))


def samples():
    return gt_samples(SIZE, lambda n: torch.arange(n, dtype=torch.long) % 3)


def compose(method: catalog.Method, tmp_path, options):
    from pgd.engine.distill import compose as compose_run
    det = 'gfl' if method.detectors is None else method.detectors[0]
    ckpt = tmp_path / 'teacher.pth'
    ckpt.write_bytes(b'')  # only checked for existence; the model is built without it
    args = argparse.Namespace(
        student=f'mini/{det}_r18_student',
        teacher=None if method.teacher_free else f'mini/{det}_r34_teacher',
        teacher_ckpt=None if method.teacher_free else str(ckpt), method=method.name,
        loss_options=options, cfg_options=None, no_init_from_teacher=False)
    return compose_run(args)[1]


def loss_weights(method: catalog.Method, model_cfg) -> dict:
    """The composed config's distillation loss weights, by loss name."""
    if method.engine == 'ld':
        head = model_cfg['bbox_head']
        return {t: head[t]['loss_weight'] for t in LD_TERMS if head.get(t)}
    if method.engine == 'lgd':
        return {'lgd': model_cfg['loss_weight']}
    return {n: c['loss_weight'] for n, c in model_cfg['distill_losses'].items()}


def run_losses(model_cfg) -> dict:
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.pop('teacher_ckpt', None)  # random weights; identical for both builds (seeded)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    torch.manual_seed(1)
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        losses = model.loss(x, samples())
    return {k: float(sum(v) if isinstance(v, (list, tuple)) else v) for k, v in losses.items()
            if 'loss' in k}


@pytest.fixture
def past_warmups(monkeypatch):
    """A late iteration, so that the FGFI / FRS warm-ups no longer gate the terms to 0."""
    info = MessageHub.get_current_instance().runtime_info
    monkeypatch.setitem(info, 'iter', 10_000)
    monkeypatch.setitem(info, 'epoch', 3)
    monkeypatch.setitem(info, 'max_iters', None)


@pytest.mark.parametrize('name', catalog.method_names())
def test_loss_scale_multiplies_every_distillation_term(name, tmp_path, past_warmups):
    method = catalog.method(name)
    base = compose(method, tmp_path, None)
    scaled = compose(method, tmp_path, {'loss_scale': SCALE})
    assert base.distill['loss_scale'] == 1.0 and scaled.distill['loss_scale'] == SCALE
    # the configs: only the distillation losses' loss_weight differs, by the factor S
    w1, ws = loss_weights(method, base.model), loss_weights(method, scaled.model)
    assert set(w1) == set(ws)
    for key in w1:
        assert ws[key] == pytest.approx(SCALE * w1[key], rel=1e-12), key
    if method.engine == 'feature':
        assert 'loss_scale' not in scaled.model
    # the numbers: S x every distillation term, the detection terms unchanged
    got1, gots = run_losses(base.model), run_losses(scaled.model)
    assert set(got1) == set(gots)
    distill = [k for k in got1 if is_distill_term(method, k, base.model)]
    if method.control:  # inherit: no distillation term; zero: PGD's terms, weighted by 0
        assert all(got1[k] == 0 for k in distill) and all(w == 0 for w in w1.values())
        assert (name == 'zero') == bool(distill)
    else:
        assert distill and any(got1[k] != 0 for k in distill), got1
    for key, value in got1.items():
        factor = SCALE if key in distill else 1.0
        assert gots[key] == pytest.approx(factor * value, rel=1e-5, abs=1e-12), key


def test_scale_loss_weights_is_the_one_place():
    from pgd.engine.distill_common import scale_loss_weights
    import pgd.distill.losses  # noqa: F401
    cfgs = {'fgfi': dict(type='FGFILoss', loss_weight=0.01),   # its own loss_weight
            'fgfi_default': dict(type='FGFILoss'),            # -> FGFILoss's default 0.01
            'pgd': dict(type='PGDLoss'),                      # no loss_weight arg -> 1.0
            'lgd': dict(loss_weight=1.0)}                     # LGD's parameters (no type)
    scale_loss_weights(cfgs, 3.0)
    assert [c['loss_weight'] for c in cfgs.values()] == pytest.approx([0.03, 0.03, 3.0, 3.0])
    cfgs = {'pgd': dict(type='PGDLoss'), 'ld': dict(loss_weight=0.25)}
    scale_loss_weights(cfgs, 1.0)
    assert cfgs['pgd']['loss_weight'] == 1.0 and cfgs['ld']['loss_weight'] == 0.25


def test_distiller_no_longer_takes_loss_scale():
    import inspect

    from pgd.distill.distiller import TeacherStudentDistiller
    assert 'loss_scale' not in inspect.signature(TeacherStudentDistiller.__init__).parameters
