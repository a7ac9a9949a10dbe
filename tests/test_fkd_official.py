"""FKD attention term: official-code form (default) vs the paper's L1 form.

The reference below re-implements, image by image and cell by cell, the official one-stage code's
``kd_channel_loss`` / ``kd_spatial_loss`` (supplementary material of the ICLR 2021 paper,
``SingleStageDetector.forward_train``)::

    kd_channel_loss += dist(mean_hw(T), Linear(mean_hw(S))) * 4e-3 * 6
    kd_spatial_loss += dist(mean_c(T), Conv3x3_{1->1}(mean_c(S))) * 4e-3 * 6

where ``dist`` is the L2 norm over the whole batch tensor.
"""
from __future__ import annotations

import math

import pytest
import torch

from mmdet.registry import MODELS
from pgd.distill.inputs import CapturedFeatures, DistillBatch, level_points, pad_gts
from pgd.distill.losses.fkd_loss import FKDLoss

DT = torch.float64
SIZES = [(8, 8), (4, 4)]
STRIDES = [8, 16]
NUM_CLS = 3
TWO_IMAGES = [[[16., 16., 40., 48.]], [[0., 0., 24., 16.], [40., 8., 64., 40.]]]


def make_batch(boxes_per_image, cs=4, ct=4, seed=0, student=None, teacher=None):
    g = torch.Generator().manual_seed(seed)
    b = len(boxes_per_image)

    def feats(c, given):
        if given is not None:
            f = [x.clone().detach().requires_grad_(True) for x in given]
        else:
            f = [torch.randn(b, c, h, w, generator=g, dtype=DT).requires_grad_(True)
                 for h, w in SIZES]
        return CapturedFeatures(neck=f, cls_feat=f, reg_feat=f)

    pts, _ = level_points(SIZES, STRIDES, dtype=DT)
    boxes = [torch.tensor(bb, dtype=DT).reshape(-1, 4) for bb in boxes_per_image]
    labels = [torch.zeros(len(bb), dtype=torch.long) for bb in boxes]
    gt_bboxes, gt_labels, gt_valid = pad_gts(boxes, labels)
    n = pts.shape[0]
    return DistillBatch(
        student=feats(cs, student), teacher=feats(ct, teacher),
        teacher_cls_prob=torch.rand(b, n, 1, NUM_CLS, generator=g, dtype=DT),
        teacher_boxes=torch.rand(b, n, 1, 4, generator=g, dtype=DT),
        points=pts, level_sizes=list(SIZES), strides=list(STRIDES), gt_bboxes=gt_bboxes,
        gt_labels=gt_labels, gt_valid=gt_valid, batch_input_shape=(64, 64),
        teacher_cls_logits=[torch.randn(b, NUM_CLS, h, w, generator=g, dtype=DT)
                            for h, w in SIZES],
        student_cls_logits=[torch.randn(b, NUM_CLS, h, w, generator=g, dtype=DT)
                            .requires_grad_(True) for h, w in SIZES])


# ------------------------------------------------------------------ reference (official)
def ref_channel(t, s, linear):
    """L2 norm over (B, C_t) of mean_hw(T) - Linear(mean_hw(S)), image by image."""
    acc = 0.
    wt, bias = linear.weight.detach(), linear.bias.detach()
    for b in range(t.shape[0]):
        tc = torch.stack([t[b, c].sum() / t[b, c].numel() for c in range(t.shape[1])])
        sm = torch.stack([s[b, c].sum() / s[b, c].numel() for c in range(s.shape[1])])
        sc = torch.stack([(wt[o] * sm).sum() + bias[o] for o in range(wt.shape[0])])
        acc += ((tc - sc) ** 2).sum().item()
    return math.sqrt(acc)


def ref_spatial(t, s, conv):
    """L2 norm over (B, 1, H, W) of mean_c(T) - Conv3x3(mean_c(S)) (zero padding 1)."""
    k, bias = conv.weight.detach()[0, 0], conv.bias.detach()[0].item()
    _, _, h, w = t.shape
    acc = 0.
    for b in range(t.shape[0]):
        tp = t[b].mean(0)
        sp = s[b].mean(0)
        for i in range(h):
            for j in range(w):
                v = bias
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        ii, jj = i + di, j + dj
                        if 0 <= ii < h and 0 <= jj < w:
                            v += k[di + 1, dj + 1].item() * sp[ii, jj].item()
                acc += (tp[i, j].item() - v) ** 2
    return math.sqrt(acc)


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize('cs,ct', [(4, 4), (3, 5)])
def test_code_attention_matches_official_semantics(cs, ct):
    torch.manual_seed(1)
    m = FKDLoss(cs, ct, num_levels=2).double()
    assert m.attention_term == 'code'
    with torch.no_grad():  # non-trivial biases
        for lin in m.channel_adapt:
            lin.bias.normal_()
        for conv in m.spatial_adapt:
            conv.bias.normal_()
    batch = make_batch(TWO_IMAGES, cs=cs, ct=ct)
    out = m(batch)
    assert set(out) == {'loss_fkd_feat', 'loss_fkd_channel', 'loss_fkd_spatial',
                        'loss_fkd_nonlocal'}
    ch = sp = 0.
    for lvl in range(2):
        t = batch.teacher.neck[lvl].detach()
        s = batch.student.neck[lvl].detach()
        ch += ref_channel(t, s, m.channel_adapt[lvl])
        sp += ref_spatial(t, s, m.spatial_adapt[lvl])
    w = 4e-3 * 6
    assert math.isclose(out['loss_fkd_channel'].item(), w * ch, rel_tol=1e-5)
    assert math.isclose(out['loss_fkd_spatial'].item(), w * sp, rel_tol=1e-5)


def test_adapter_shapes_and_official_weight():
    m = MODELS.build(dict(type='FKDLoss', student_channels=3, teacher_channels=5))
    assert len(m.channel_adapt) == len(m.spatial_adapt) == 5
    assert isinstance(m.channel_adapt[0], torch.nn.Linear)
    assert (m.channel_adapt[0].in_features, m.channel_adapt[0].out_features) == (3, 5)
    conv = m.spatial_adapt[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == \
        (1, 1, (3, 3), (1, 1))
    assert math.isclose(m.at_weight, 2.4e-2)
    assert MODELS.build(dict(type='FKDLoss', student_channels=3, teacher_channels=5,
                             preset='two_stage')).at_weight == 4e-3


def test_switch_between_code_and_paper():
    torch.manual_seed(2)
    code = FKDLoss(4, 4, num_levels=2).double()
    paper = FKDLoss(4, 4, num_levels=2, attention_term='paper').double()
    assert not hasattr(paper, 'channel_adapt') and not hasattr(paper, 'spatial_adapt')
    missing, unexpected = paper.load_state_dict(code.state_dict(), strict=False)
    assert not missing and all(k.startswith(('channel_adapt', 'spatial_adapt'))
                               for k in unexpected)
    batch = make_batch(TWO_IMAGES)
    a, b = code(batch), paper(batch)
    assert set(b) == {'loss_fkd_feat', 'loss_fkd_att', 'loss_fkd_nonlocal'}
    # the feature and non-local terms do not depend on the switch
    for k in ('loss_fkd_feat', 'loss_fkd_nonlocal'):
        assert torch.allclose(a[k], b[k], rtol=1e-12)
    with pytest.raises(ValueError):
        FKDLoss(4, 4, attention_term='both')
    from pgd.engine.distill import load_method, method_losses
    assert method_losses(load_method('fkd'), 'atss', None)['fkd']['attention_term'] == 'code'
    cfg = method_losses(load_method('fkd'), 'atss', {'attention_term': 'paper'})['fkd']
    built = MODELS.build(dict(cfg, student_channels=4, teacher_channels=4))
    assert built.attention_term == 'paper'


def test_gradients_reach_student_and_adapters_not_teacher():
    m = FKDLoss(3, 5, num_levels=2).double()
    batch = make_batch(TWO_IMAGES, cs=3, ct=5)
    out = m(batch)
    (out['loss_fkd_channel'] + out['loss_fkd_spatial']).backward()
    for mod in list(m.channel_adapt) + list(m.spatial_adapt):
        assert mod.weight.grad is not None and mod.weight.grad.abs().sum() > 0
        assert mod.bias.grad is not None
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in batch.student.neck)
    assert all(t.grad is None for t in batch.teacher.neck)


def test_identity_adapters_and_identical_features_give_zero():
    m = FKDLoss(4, 4, num_levels=2).double()
    with torch.no_grad():
        for lin in m.channel_adapt:
            lin.weight.copy_(torch.eye(4, dtype=DT))
            lin.bias.zero_()
        for conv in m.spatial_adapt:
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.
            conv.bias.zero_()
    feats = [torch.randn(2, 4, h, w, dtype=DT) for h, w in SIZES]
    batch = make_batch(TWO_IMAGES, student=feats, teacher=feats)
    out = m(batch)
    assert abs(out['loss_fkd_channel'].item()) < 1e-12
    assert abs(out['loss_fkd_spatial'].item()) < 1e-12
    sum(out.values()).backward()  # norms at 0: finite (zero) subgradients
    assert all(torch.isfinite(f.grad).all() for f in batch.student.neck)


def test_adapters_are_in_the_distiller_optimizer():
    """The loss is a submodule of the distiller, so the default optimizer constructor (what the
    Runner uses) picks up the adapters, and one SGD step changes them."""
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper

    from pgd.engine.distill import load_method, method_losses
    from tests.test_distiller import build, samples
    register_all_modules()
    torch.manual_seed(0)
    model = build('atss', method_losses(load_method('fkd'), 'atss', None))
    model.init_weights()
    model.train()
    fkd = model.distill_losses['fkd']
    adapters = list(fkd.channel_adapt.parameters()) + list(fkd.spatial_adapt.parameters())
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    in_opt = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert all(id(p) in in_opt for p in adapters)
    before = [p.detach().clone() for p in adapters]
    x = torch.rand(2, 3, 128, 128)
    losses = model.loss(x, samples([[[10, 12, 70, 100]], []]))
    assert {'loss_fkd_channel', 'loss_fkd_spatial'} <= set(losses)
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(t.sum() for t in v)
                for k, v in losses.items() if 'loss' in k)
    wrapper.update_params(total)
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, adapters))
