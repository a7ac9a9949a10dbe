"""TeacherStudentDistiller on all five MMDetection heads, and the per-head box decoding."""
from __future__ import annotations

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData

from pgd.distill.head_decoding import decode_head_outputs
from pgd.engine.config_utils import CONFIG_ROOT

register_all_modules()
import pgd.distill.distiller  # noqa: E402,F401  (registers the distiller)
import pgd.distill.losses  # noqa: E402,F401

DETECTORS = ('atss', 'fcos', 'gfl', 'ddod', 'autoassign')
SIZE = 128


def model_cfg(name):
    from pgd.pretrain.check import resolve_pretrained
    cfg = Config.fromfile(str(CONFIG_ROOT / f'{name}.py'))
    resolve_pretrained(cfg)  # pretrain_scale none: from scratch, no file
    return cfg.model


def samples(boxes_per_image):
    out = []
    for boxes in boxes_per_image:
        ds = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                                         batch_input_shape=(SIZE, SIZE), scale_factor=(1., 1.)))
        inst = InstanceData()
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        inst.labels = torch.zeros(len(boxes), dtype=torch.long)
        ds.gt_instances = inst
        out.append(ds)
    return out


def build(det, losses):
    return MODELS.build(dict(
        type='TeacherStudentDistiller',
        student=model_cfg(f'mini/{det}_r18_student'),
        teacher=model_cfg(f'mini/{det}_r34_teacher'),
        distill_losses=losses))


PGD = {'pgd': dict(type='PGDLoss', alpha=0.08, k=9)}


@pytest.mark.parametrize('det', DETECTORS)
def test_pgd_distillation_step_on_every_detector(det):
    torch.manual_seed(0)
    model = build(det, PGD)
    model.init_weights()
    model.train()
    assert not model.teacher.training
    x = torch.rand(2, 3, SIZE, SIZE)
    batch = samples([[[10, 12, 70, 100], [60, 20, 120, 60]], []])  # 2nd image: no GT
    losses = model.loss(x, batch)
    for key in ('loss_pgd_fea_cls', 'loss_pgd_fea_reg', 'loss_pgd_att_cls', 'loss_pgd_att_reg'):
        assert key in losses and torch.isfinite(losses[key]).all(), key
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    student_grads = [p.grad for p in model.student.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in student_grads)


def test_teacher_is_excluded_from_checkpoints_and_restored_on_load():
    model = build('atss', PGD)
    model.init_weights()
    state = model.state_dict()
    assert state and not any(k.startswith('teacher.') for k in state)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    # A checkpoint without the teacher loads strictly: the live teacher fills its keys.
    model.load_state_dict(state, strict=True)
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k])
    # The deployable student loads into a plain detector of the student config.
    plain = MODELS.build(model_cfg('mini/atss_r18_student'))
    plain.load_state_dict(model.deployable_detector().state_dict(), strict=True)


def test_student_initialised_from_teacher_where_shapes_match():
    torch.manual_seed(0)
    model = build('atss', PGD)
    model.init_weights()
    s, t = model.student.state_dict(), model.teacher.state_dict()
    # same-width neck/head: copied; backbones differ in shape: untouched
    assert torch.equal(s['bbox_head.atss_cls.weight'], t['bbox_head.atss_cls.weight'])
    assert not torch.equal(s['backbone.conv1.weight'].flatten()[:10],
                           t['backbone.conv1.weight'].flatten()[:10])


def test_captured_tower_features_have_expected_shapes():
    model = build('gfl', PGD)
    model.init_weights()
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        t_feats, t_outs = model._run_teacher(x)
    cls = model._t_capture.cls
    assert len(cls) == 5 and cls[0].shape == (1, 64, SIZE // 8, SIZE // 8)
    assert (cls[0] >= 0).all()  # after norm + ReLU


def _head(det):
    model = MODELS.build(model_cfg(f'mini/{det}_r18_student'))
    return model.bbox_head


def test_gfl_decode_uses_each_levels_own_stride():
    head = _head('gfl').eval()
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    n_bins = head.reg_max + 1
    cls = [torch.zeros(1, head.cls_out_channels, h, w) for h, w in sizes]
    # all mass on bin 2 for every side -> distance 2 * stride of that level
    reg = []
    for h, w in sizes:
        logits = torch.full((1, 4, n_bins, h, w), -30.)
        logits[:, :, 2] = 30.
        reg.append(logits.reshape(1, 4 * n_bins, h, w))
    dec = decode_head_outputs(head, (cls, reg))
    start = 0
    for (h, w), stride in zip(sizes, [8, 16, 32, 64, 128]):
        boxes = dec.boxes[0, start:start + h * w, 0]
        widths = boxes[:, 2] - boxes[:, 0]
        assert torch.allclose(widths, torch.full_like(widths, 4. * stride)), stride
        start += h * w


def test_fcos_decode_in_eval_mode_is_in_pixels_and_points_are_xy():
    head = _head('fcos').eval()
    x = [torch.rand(1, 64, s, s) for s in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        outs = head(x)
        dec = decode_head_outputs(head, outs)
        head.train()
        outs_train = head(x)
        dec_train = decode_head_outputs(head, outs_train)
    assert torch.allclose(dec.boxes, dec_train.boxes, atol=1e-4)
    # points are (x, y): the second location of P3 is one stride to the right
    assert dec.points[1].tolist() == [12.0, 4.0]


def test_anchor_decode_matches_mmdet_bbox_coder():
    head = _head('atss').eval()
    x = [torch.rand(1, 64, s, s) for s in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        outs = head(x)
        dec = decode_head_outputs(head, outs)
    anchors = head.prior_generator.single_level_grid_priors((16, 16), 0, device='cpu')
    deltas = outs[1][0].permute(0, 2, 3, 1).reshape(-1, 4)
    ref = head.bbox_coder.decode(anchors, deltas)
    assert torch.allclose(dec.boxes[0, :256, 0], ref, atol=1e-5)
    # anchor centres (center_offset=0): (j*s, i*s)
    assert dec.points[17].tolist() == [8.0, 8.0]


def _per_level_reference(head, outs):
    """Decode level by level from mmdet's own pieces (the decoder's former shape)."""
    kind = type(head).__name__
    probs, boxes, points = [], [], []
    for lvl, (cls, reg) in enumerate(zip(outs[0], outs[1])):
        b, _, h, w = cls.shape
        stride = head.prior_generator.strides[lvl][0]
        prior = head.prior_generator.single_level_grid_priors((h, w), lvl, device='cpu')
        probs.append(cls.permute(0, 2, 3, 1).reshape(b, h * w, -1, head.cls_out_channels)
                     .sigmoid())
        if kind in ('ATSSHead', 'DDODHead'):
            deltas = reg.permute(0, 2, 3, 1).reshape(b, h * w, -1, 4)
            anchors = prior.reshape(h * w, -1, 4)
            points.append((anchors[:, 0, :2] + anchors[:, 0, 2:]) / 2)
            boxes.append(head.bbox_coder.decode(anchors[None].expand_as(deltas).reshape(-1, 4),
                                                deltas.reshape(-1, 4)).reshape(deltas.shape))
            continue
        pts = (prior[:, :2] + prior[:, 2:]) / 2 if prior.shape[-1] == 4 else prior[:, :2]
        points.append(pts)                          # GFL: anchor centres; else points
        if kind == 'GFLHead':
            flat = reg.permute(0, 2, 3, 1).reshape(-1, 4 * (head.reg_max + 1))
            dist = head.integral(flat).reshape(b, -1, 1, 4) * stride
        else:
            dist = reg.permute(0, 2, 3, 1).reshape(b, h * w, 1, 4)
            if kind == 'FCOSHead' and head.norm_on_bbox and head.training:
                dist = dist * stride
        x, y = pts[:, None, 0], pts[:, None, 1]
        boxes.append(torch.stack([x - dist[..., 0], y - dist[..., 1], x + dist[..., 2],
                                  y + dist[..., 3]], -1))
    return torch.cat(probs, 1), torch.cat(boxes, 1), torch.cat(points)


@pytest.mark.parametrize('det', DETECTORS)
def test_decode_equals_the_per_level_decode_bit_for_bit(det):
    """One decode over all levels (and cached priors) gives exactly the per-level result, on
    odd level sizes (vectorised kernels' tails) in train and eval mode."""
    from pgd.distill import head_decoding
    head = _head(det)
    sizes = [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)]
    torch.manual_seed(0)
    x = [torch.rand(2, 64, h, w) for h, w in sizes]
    for training in (True, False):
        head.train(training)
        with torch.no_grad():
            outs = head(x)
        for _ in range(2):                          # the second call hits the prior cache
            dec = decode_head_outputs(head, outs)
            probs, boxes, points = _per_level_reference(head, outs)
            assert torch.equal(dec.cls_prob, probs) and torch.equal(dec.boxes, boxes)
            assert torch.equal(dec.points, points)
    cached = head_decoding._prior_cache[head.prior_generator]
    assert len(cached) == 1
    for n in range(head_decoding._PRIOR_CACHE_SHAPES + 3):   # bounded, most recent kept
        head_decoding.prior_centres(head, [(n + 1, n + 2)] * 5, 'cpu')
    assert len(cached) == head_decoding._PRIOR_CACHE_SHAPES
    assert next(reversed(cached))[0] == ((head_decoding._PRIOR_CACHE_SHAPES + 3,
                                          head_decoding._PRIOR_CACHE_SHAPES + 4), ) * 5


COMPETITORS = ('fgd', 'fgfi', 'defeat', 'frs', 'fkd')


@pytest.mark.parametrize('det', DETECTORS)
@pytest.mark.parametrize('method', COMPETITORS)
def test_competitor_method_trains_a_step_on_every_detector(method, det):
    """Each method's loss, built from config/distill/<method>.py exactly as `pgd distill`
    builds it, runs a forward/backward step through the distiller on every head."""
    from pgd.engine.distill import load_method, method_losses
    torch.manual_seed(0)
    model = build(det, method_losses(load_method(method), det, None))
    model.init_weights()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    x = torch.rand(2, 3, SIZE, SIZE)
    losses = model.loss(x, samples([[[10, 12, 70, 100]], []]))
    distill = {k: v for k, v in losses.items() if k.startswith(f'loss_{method}_')}
    assert distill, f'{method} produced no loss terms: {sorted(losses)}'
    assert all(torch.isfinite(v).all() for v in distill.values())
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(t.sum() for t in v)
                for k, v in losses.items() if 'loss' in k)
    opt.zero_grad()
    total.backward()
    opt.step()
    assert all(p.grad is None for p in model.teacher.parameters())


def test_loss_weight_multiplies_only_the_distillation_terms():
    """A loss without its own ``loss_weight`` argument (PGDLoss) is weighted by the distiller;
    ``pgd distill``'s loss_scale arrives here folded into that weight (tests/test_loss_scale.py)."""
    x = torch.rand(2, 3, SIZE, SIZE)
    batch = samples([[[10, 12, 70, 100], [60, 20, 120, 60]], []])
    got = {}
    for scale in (1.0, 2.5):
        torch.manual_seed(0)
        model = MODELS.build(dict(
            type='TeacherStudentDistiller', student=model_cfg('mini/atss_r18_student'),
            teacher=model_cfg('mini/atss_r34_teacher'),
            distill_losses={'pgd': dict(PGD['pgd'], loss_weight=scale)}))
        model.init_weights()
        model.train()
        got[scale] = {k: float(sum(v) if isinstance(v, list) else v)
                      for k, v in model.loss(x, batch).items()}
    distill_keys = [k for k in got[1.0] if k.startswith('loss_pgd')]
    assert distill_keys and any(got[1.0][k] > 0 for k in distill_keys)
    for key, value in got[1.0].items():
        factor = 2.5 if key in distill_keys else 1.0
        assert got[2.5][key] == pytest.approx(factor * value, rel=1e-5), key


def test_inherit_control_is_the_teacher_initialised_student_without_distillation_loss():
    """config/distill/inherit.py: no distillation term, the student's neck/head start as the
    teacher's (the same start every feature-distillation run gets)."""
    from pgd.engine.distill import load_method, method_losses
    torch.manual_seed(0)
    model = build('atss', method_losses(load_method('inherit'), 'atss', None))
    model.init_weights()
    model.train()
    assert len(model.distill_losses) == 0
    t_state = model.teacher.state_dict()
    for name, param in model.student.state_dict().items():
        if name.startswith(('neck.', 'bbox_head.')) and t_state[name].shape == param.shape:
            assert torch.equal(param, t_state[name]), name
    losses = model.loss(torch.rand(2, 3, SIZE, SIZE), samples([[[10, 12, 70, 100]], []]))
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_centerness'}
