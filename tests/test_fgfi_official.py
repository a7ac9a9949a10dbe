"""FGFI as in the authors' code (twangnh/Distilling-Object-Detectors, PyTorch, and
twangnh/Distilling-Object-Detectors-Shuffledet, TensorFlow): conv 3x3 + ReLU adapter with a
truncated-normal (std 1e-4) init, imitation multiplied by 0 during the first 400 iterations of
the first epoch, 1 / (2 N_p) with N_p the masked locations of the batch, weight 0.01.

The reference below re-implements ``trainval_net_sup.py`` / ``anchor_target_layer.py`` of the
PyTorch code with loops (one GT, one anchor, one location at a time).
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmengine.logging import MessageHub

from pgd.distill.inputs import CapturedFeatures, DistillBatch, level_points, pad_gts
from pgd.distill.losses.fgfi_loss import FGFILoss

SIZES = [(8, 8), (4, 4)]
STRIDES = [8, 16]
DT = torch.float64
BOXES = [[[16.3, 14.1, 41.2, 47.9]], [[1.5, 0.7, 25.3, 17.2], [38.4, 6.6, 63.1, 41.9]]]


def _batch(boxes_per_image, cs=4, ct=5, seed=0, cur_iter=None):
    g = torch.Generator().manual_seed(seed)
    b = len(boxes_per_image)

    def feats(c, grad):
        f = [torch.randn(b, c, h, w, generator=g, dtype=DT).requires_grad_(grad)
             for h, w in SIZES]
        return CapturedFeatures(neck=f, cls_feat=f, reg_feat=f)

    pts, _ = level_points(SIZES, STRIDES, dtype=DT)
    boxes = [torch.tensor(bb, dtype=DT).reshape(-1, 4) for bb in boxes_per_image]
    gt_bboxes, gt_labels, gt_valid = pad_gts(boxes, [torch.zeros(len(x), dtype=torch.long)
                                                     for x in boxes])
    n = pts.shape[0]
    return DistillBatch(
        student=feats(cs, True), teacher=feats(ct, True),
        teacher_cls_prob=torch.rand(b, n, 1, 3, generator=g, dtype=DT),
        teacher_boxes=torch.rand(b, n, 1, 4, generator=g, dtype=DT), points=pts,
        level_sizes=list(SIZES), strides=list(STRIDES), gt_bboxes=gt_bboxes,
        gt_labels=gt_labels, gt_valid=gt_valid, batch_input_shape=(64, 64), cur_iter=cur_iter)


def _iou(a, b):
    iw = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _official_mask(boxes, anchors, size):
    """anchor_target_layer.py: mask_per_im += #anchors(IoU > 0.5 * max IoU of the GT); > 0."""
    h, w = size
    a_per_loc = len(anchors) // (h * w)
    count = [[0] * w for _ in range(h)]
    for gt in boxes:
        ious = [_iou(a, gt) for a in anchors]
        thr = max(ious) * 0.5
        for k, v in enumerate(ious):
            if v > thr:
                loc = k // a_per_loc
                count[loc // w][loc % w] += 1
    return [[c > 0 for c in row] for row in count]


def _official_loss(module, batch, step, epoch_1based, ilw=0.01, warm_step=400, relu=True):
    """trainval_net_sup.py: sum((T - adap(S))^2 * mask) / (2 sum(mask)) * ilw, x 0 while
    ``step < warm_step and epoch == 1``."""
    gen = AnchorGenerator(strides=STRIDES, ratios=[1.0], octave_base_scale=8,
                          scales_per_octave=1, center_offset=0.)
    sq, cnt = 0., 0
    for lvl, size in enumerate(SIZES):
        conv = module.adapt[lvl]
        s = F.conv2d(batch.student.neck[lvl].detach(), conv.weight, conv.bias, padding=1)
        s = F.relu(s) if relu else s
        t = batch.teacher.neck[lvl].detach()
        anchors = gen.single_level_grid_priors(size, lvl, device='cpu').double().tolist()
        for b, boxes in enumerate(BOXES):
            mask = _official_mask(boxes, anchors, size)
            for i in range(size[0]):
                for j in range(size[1]):
                    if mask[i][j]:
                        cnt += 1
                        sq += ((t[b, :, i, j] - s[b, :, i, j]) ** 2).sum().item()
    loss = sq / (2 * cnt) * ilw
    return 0. if (step < warm_step and epoch_1based == 1) else loss


def _module(**kw):
    kw.setdefault('center_offset', 0.)
    return FGFILoss(4, 5, num_levels=2, **kw).double()


@pytest.fixture
def hub():
    """A MessageHub of our own as the current instance (what the Runner's hooks update)."""
    name = 'test_fgfi_official'
    inst = MessageHub.get_instance(name)
    yield inst
    MessageHub._instance_dict.pop(name, None)


@pytest.mark.parametrize('step,epoch', [(0, 1), (399, 1), (400, 1), (1234, 1), (3, 2),
                                        (399, 3)])
@pytest.mark.parametrize('relu', [True, False])
def test_matches_official_loop(hub, step, epoch, relu):
    m = _module(adapt_act='relu' if relu else None)
    with torch.no_grad():  # a non-trivial adapter (the official init is nearly 0)
        for conv in m.adapt:
            conv.weight.normal_(0., 0.2)
            conv.bias.normal_(0., 0.1)
    # the Runner's global iteration: steps of earlier epochs come first (80 per epoch here)
    cur_iter = (epoch - 1) * 80 + step if epoch > 1 else step
    hub.update_info('epoch', epoch - 1)
    batch = _batch(BOXES, cur_iter=cur_iter)
    got = m(batch)['loss_fgfi_feat']
    ref = _official_loss(m, batch, step, epoch, relu=relu)
    if ref == 0.:
        assert got.item() == 0.
    else:
        assert got.item() == pytest.approx(ref, rel=1e-9)


def test_warmup_gate_and_its_gradients(hub):
    m = _module()
    assert m.warmup_iters == 400
    hub.update_info('epoch', 0)
    batch = _batch(BOXES, cur_iter=10)
    out = m(batch)['loss_fgfi_feat']
    assert out.item() == 0. and out.requires_grad
    out.backward()  # the graph is kept (x 0, as the official code): zero, not missing, grads
    assert all(conv.weight.grad is not None and not conv.weight.grad.any() for conv in m.adapt)
    # after the warm-up: gradients reach the student and the adapter, never the teacher
    batch = _batch(BOXES, cur_iter=400)
    m.zero_grad()
    m(batch)['loss_fgfi_feat'].backward()
    assert all(t.grad is None for t in batch.teacher.neck)
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in batch.student.neck)
    assert any(conv.weight.grad.abs().sum() > 0 for conv in m.adapt)
    # explicit arguments override the batch / MessageHub; no iteration known -> no gate
    assert m(batch, cur_iter=5, cur_epoch=0)['loss_fgfi_feat'].item() == 0.
    assert m(batch, cur_iter=5, cur_epoch=1)['loss_fgfi_feat'].item() > 0.
    assert m(_batch(BOXES, cur_iter=None))['loss_fgfi_feat'].item() > 0.
    assert _module(warmup_iters=0)(_batch(BOXES, cur_iter=0))['loss_fgfi_feat'].item() > 0.


def test_adapter_init_and_options():
    torch.manual_seed(0)
    m = FGFILoss(32, 32, num_levels=2)
    assert m.adapt_act == 'relu' and m.adapt_init == 'trunc_normal'
    for conv in m.adapt:
        w = conv.weight.detach()
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
        assert w.abs().max() <= 2e-4 and not conv.bias.any()
        # a normal truncated at +-2 std has std 0.880 * std
        assert w.std().item() == pytest.approx(0.880e-4, rel=0.05)
    m.init_weights()  # re-initialisable (MMEngine's init_weights)
    assert all(c.weight.abs().max() <= 2e-4 for c in m.adapt)
    plain = FGFILoss(32, 32, num_levels=1, adapt_init='pytorch', adapt_act='none')
    assert plain.adapt_act is None
    # nn.Conv2d default: kaiming_uniform(a=sqrt(5)) -> bound 1 / sqrt(fan_in)
    bound = 1 / math.sqrt(32 * 9)
    assert plain.adapt[0].weight.abs().max() > 0.5 * bound
    assert plain.adapt[0].weight.abs().max() <= bound
    for bad in (dict(adapt_act='gelu'), dict(adapt_init='xavier'), dict(warmup_iters=-1)):
        with pytest.raises(ValueError):
            FGFILoss(4, 4, **bad)


def test_config_defaults_and_distiller_iteration(hub):
    """config/distill/fgfi.py as `pgd distill` builds it; the distiller hands the Runner's
    iteration (MessageHub 'iter') to the loss."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.structures import InstanceData

    import pgd.distill.distiller  # noqa: F401
    import pgd.distill.losses  # noqa: F401
    from pgd.engine.config_utils import CONFIG_ROOT
    from pgd.engine.distill import load_method, method_losses
    register_all_modules()
    losses = method_losses(load_method('fgfi'), 'atss', None)
    cfg = losses['fgfi']
    assert (cfg['adapt_act'], cfg['adapt_init'], cfg['adapt_std'], cfg['warmup_iters'],
            cfg['loss_weight'], cfg['psi']) == ('relu', 'trunc_normal', 1e-4, 400, 0.01, 0.5)
    old = method_losses(load_method('fgfi'), 'atss',
                        dict(adapt_act='none', adapt_init='pytorch', warmup_iters=0))['fgfi']
    assert MODELS.build(dict(old, student_channels=4, teacher_channels=4)).warmup_iters == 0

    def model_cfg(name):
        from pgd.pretrain.check import resolve_pretrained
        cfg = Config.fromfile(str(CONFIG_ROOT / f'{name}.py'))
        resolve_pretrained(cfg)  # pretrain_scale none: from scratch, no file
        return cfg.model

    torch.manual_seed(0)
    model = MODELS.build(dict(type='TeacherStudentDistiller',
                              student=model_cfg('mini/atss_r18_student'),
                              teacher=model_cfg('mini/atss_r34_teacher'), distill_losses=losses))
    model.init_weights()
    model.train()
    ds = DetDataSample(metainfo=dict(img_shape=(128, 128), pad_shape=(128, 128),
                                     batch_input_shape=(128, 128), scale_factor=(1., 1.)))
    ds.gt_instances = InstanceData(bboxes=torch.tensor([[10., 12., 70., 100.]]),
                                   labels=torch.tensor([0]))
    x = torch.rand(1, 3, 128, 128)
    hub.update_info('epoch', 0)
    hub.update_info('iter', 399)
    assert model.loss(x, [ds])['loss_fgfi_feat'].item() == 0.
    hub.update_info('iter', 400)
    assert model.loss(x, [ds])['loss_fgfi_feat'].item() > 0.
