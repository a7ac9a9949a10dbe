"""LGD (label-guided self-distillation, AAAI 2022): label encoder, mask pooling, relation
adapter/mapper, the LabelGuidedSelfDistiller detector and its run composition."""
from __future__ import annotations

import argparse

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.structures import InstanceData

from pgd.distill.lgd import (InstructiveKnowledge, InterObjectRelationAdapter, LabelEncoder,
                             build_label_descriptors, mask_pool, object_masks)
from pgd.engine.config_utils import CONFIG_ROOT

register_all_modules()
from pgd.distill.lgd.detector import (LabelGuidedSelfDistiller, instance_norm,  # noqa: E402
                                      lgd_distill_mse)

SIZE = 64
NUM_CLASSES = 5


# ---------------------------------------------------------------- label encoder
def _descriptors(boxes_per_image, labels_per_image, img_shapes):
    from pgd.distill.inputs import pad_gts
    boxes, labels, valid = pad_gts([torch.tensor(b, dtype=torch.float32).reshape(-1, 4)
                                    for b in boxes_per_image],
                                   [torch.tensor(lab, dtype=torch.long)
                                    for lab in labels_per_image])
    return build_label_descriptors(boxes, labels, valid, img_shapes, NUM_CLASSES)


def test_descriptors_context_object_and_normalisation():
    desc, boxes, valid = _descriptors([[[0, 10, 50, 40], [20, 20, 200, 30]], []],
                                      [[1, 4], []], [(40, 100), (64, 64)])
    assert desc.shape == (2, 3, 4 + NUM_CLASSES) and valid.tolist() == [[True] * 3,
                                                                        [True, False, False]]
    # context object: box (0, 0, 1, 1) -> (-1, -1, 1, 1), no class bit
    assert torch.equal(desc[0, 0], torch.tensor([-1., -1, 1, 1] + [-1.] * NUM_CLASSES))
    assert torch.equal(boxes[1, 0], torch.tensor([0., 0, 64, 64]))
    # box normalised by the un-padded image (w=100, h=40), clamped, then 2x - 1
    assert torch.allclose(desc[0, 1, :4], torch.tensor([0, 0.25, 0.5, 1.0]) * 2 - 1)
    assert torch.allclose(desc[0, 2, :4], torch.tensor([0.2, 0.5, 1.0, 0.75]) * 2 - 1)
    assert desc[0, 1, 4:].argmax() == 1 and desc[0, 2, 4:].argmax() == 4
    assert torch.all(desc[1, 1:] == 0)  # padding zeroed


def test_label_encoder_shapes_permutation_equivariance_and_padding():
    torch.manual_seed(0)
    enc = LabelEncoder(NUM_CLASSES, 32).eval()
    desc, _, valid = _descriptors([[[1, 2, 30, 40], [5, 5, 9, 9], [10, 0, 60, 20]], [[0, 0, 8, 8]]],
                                  [[0, 3, 2], [1]], [(64, 64), (64, 64)])
    out = enc(desc, valid)
    assert out.shape == (2, 4, 32) and torch.isfinite(out).all()
    assert torch.all(out[1, 2:] == 0)  # padded objects
    # permuting the objects of image 0 (context stays at 0) permutes the embeddings
    perm = torch.tensor([0, 3, 1, 2])
    out_p = enc(desc[:, perm], valid[:, perm])
    assert torch.allclose(out_p[0], out[0, perm], atol=1e-5)
    assert torch.allclose(out_p[1], out[1, perm], atol=1e-5)  # image 1 only padding moved
    # more padding does not change the valid objects' embeddings
    desc_pad = torch.cat([desc, desc.new_zeros(2, 2, desc.shape[-1])], dim=1)
    valid_pad = torch.cat([valid, valid.new_zeros(2, 2)], dim=1)
    assert torch.allclose(enc(desc_pad, valid_pad)[:, :4], out, atol=1e-5)


# ---------------------------------------------------------------- masks and pooling
def test_object_masks_and_mask_pool_match_a_hand_loop():
    torch.manual_seed(0)
    stride, h, w, c = 8, 4, 5, 3
    boxes = torch.tensor([[[0, 0, 40, 32], [3, 9, 13, 22], [33, 1, 35, 3], [0, 0, 1, 1]]],
                         dtype=torch.float32)
    valid = torch.tensor([[True, True, True, False]])
    feat = torch.randn(1, c, h, w)
    masks = object_masks(boxes, valid, (h, w), stride)
    pooled = mask_pool(feat, masks)
    for m in range(4):
        x1, y1, x2, y2 = boxes[0, m].tolist()
        cy, cx = int((y1 + y2) / 2 // stride), int((x1 + x2) / 2 // stride)
        acc, n = torch.zeros(c), 0
        for y in range(h):
            for x in range(w):
                px, py = (x + 0.5) * stride, (y + 0.5) * stride
                inside = (x1 <= px <= x2 and y1 <= py <= y2) or (y, x) == (cy, cx)
                if inside and valid[0, m]:
                    assert masks[0, m, y, x] == 1
                    acc += feat[0, :, y, x]
                    n += 1
                else:
                    assert masks[0, m, y, x] == 0
        assert torch.allclose(pooled[0, m], acc / max(n, 1), atol=1e-6)
    assert masks[0, 0].sum() == h * w                      # context-like box: everything
    assert masks[0, 1].sum() == 4                          # cells (1..3, 0..2) -> 2 x 2
    assert masks[0, 2].sum() == 1                          # tiny box: its centre cell only
    assert masks[0, 3].sum() == 0 and torch.all(pooled[0, 3] == 0)   # padding


# ---------------------------------------------------------------- relation / mapper
def test_cross_attention_shape_and_images_without_gt():
    torch.manual_seed(0)
    attn = InterObjectRelationAdapter(32, 8)
    app, lab = torch.randn(2, 3, 32), torch.randn(2, 3, 32)
    valid = torch.tensor([[True, True, True], [True, False, False]])
    out = attn(app, lab, valid)
    assert out.shape == (2, 3, 32) and torch.isfinite(out).all()
    assert torch.all(out[1, 1:] == 0)
    # the context-only image attends to its context object only: padding keys are ignored
    lab2 = lab.clone()
    lab2[1, 1:] = 1e3
    assert torch.allclose(attn(app, lab2, valid)[1], out[1])
    with pytest.raises(ValueError):
        InterObjectRelationAdapter(30, 8)


@pytest.mark.parametrize('boxes', [[[[4, 4, 40, 30]], []], [[], []]])
def test_instructive_knowledge_without_gt_is_finite(boxes):
    torch.manual_seed(0)
    lgd = InstructiveKnowledge(NUM_CLASSES, 16, num_heads=8)
    feats = [torch.randn(2, 16, s, s, requires_grad=True) for s in (8, 4, 2, 1)]
    from pgd.distill.inputs import pad_gts
    b, lab, val = pad_gts([torch.tensor(x, dtype=torch.float32).reshape(-1, 4) for x in boxes],
                          [torch.zeros(len(x), dtype=torch.long) for x in boxes])
    out = lgd(feats, [8, 16, 32, 64], b, lab, val, [(SIZE, SIZE)] * 2)
    assert [o.shape for o in out] == [f.shape for f in feats]
    assert all(torch.isfinite(o).all() for o in out)
    sum(o.sum() for o in out).backward()
    assert all(torch.isfinite(p.grad).all() for p in lgd.parameters() if p.grad is not None)


def test_distill_mse_is_eq5_with_instance_norm():
    torch.manual_seed(0)
    s = [torch.randn(2, 4, 5, 6), torch.randn(2, 4, 1, 1)]
    t = [torch.randn(2, 4, 5, 6), torch.randn(2, 4, 1, 1)]
    expected = sum(((torch.nn.functional.instance_norm(a) - torch.nn.functional.instance_norm(b))
                    ** 2).sum() for a, b in zip(s[:1], t[:1])) / (2 * 4 * (30 + 1))
    assert torch.allclose(lgd_distill_mse(s, t), expected, atol=1e-6)
    assert torch.all(instance_norm(s[1]) == 0)   # 1x1 level normalises to zeros, no error


# ---------------------------------------------------------------- the detector
def _samples(boxes_per_image):
    out = []
    for boxes in boxes_per_image:
        ds = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                                         batch_input_shape=(SIZE, SIZE), scale_factor=(1., 1.)))
        inst = InstanceData()
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        inst.labels = torch.arange(len(boxes), dtype=torch.long) % 3
        ds.gt_instances = inst
        out.append(ds)
    return out


def _student_cfg():
    return Config.fromfile(str(CONFIG_ROOT / 'mini/atss_r18_student.py')).model


@pytest.fixture(scope='module')
def student_cfg():
    return _student_cfg()


def _build(student_cfg, **kw):
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LabelGuidedSelfDistiller', student=student_cfg, **kw))
    model.train()
    return model


@pytest.fixture()
def at_iter():
    hub = MessageHub.get_current_instance()
    saved = {k: hub.get_info(k) for k in ('iter', 'max_iters')}

    def set_iter(it, max_iters=None):
        hub.update_info('iter', it)
        hub.update_info('max_iters', max_iters)
    yield set_iter
    for k, v in saved.items():
        hub.update_info(k, v)


BATCH = [[[6, 8, 40, 50]], [[20, 4, 60, 36]]]   # 2 images, 2 GT boxes


def _total(losses):
    return sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
               for k, v in losses.items() if 'loss' in k)


def test_full_forward_backward_keys_and_deployable(student_cfg, at_iter):
    at_iter(0)
    model = _build(student_cfg, freeze_backbone_iters=0, distill_start_iter=0)
    assert isinstance(model, LabelGuidedSelfDistiller)
    x = torch.rand(2, 3, SIZE, SIZE)
    for batch in (BATCH, [BATCH[0], []]):           # second pass: an image without GT
        model.zero_grad()
        losses = model.loss(x, _samples(batch))
        expected = {'loss_cls', 'loss_bbox', 'loss_centerness', 'loss_lgd_inst_cls',
                    'loss_lgd_inst_bbox', 'loss_lgd_inst_centerness', 'loss_lgd_distill',
                    'loss_lgd_adapter_warmup'}
        assert set(losses) == expected
        for k, v in losses.items():
            vals = v if isinstance(v, (list, tuple)) else [v]
            assert all(torch.isfinite(t).all() for t in vals), k
        assert losses['loss_lgd_distill'] > 0
        _total(losses).backward()
        for name in ('student.backbone', 'student.neck', 'student.bbox_head', 'lgd', 'adapter'):
            grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
            assert any(g is not None and g.abs().sum() > 0 for g in grads), name
            assert all(torch.isfinite(g).all() for g in grads if g is not None), name
    model.eval()
    with torch.no_grad():
        preds = model.predict(x, _samples(BATCH))          # inference = the student alone
    assert len(preds) == 2 and 'bboxes' in preds[0].pred_instances
    deploy = model.deployable_detector()
    assert deploy is model.student
    assert not any(k.startswith(('lgd.', 'adapter.')) for k in deploy.state_dict())
    assert any(k.startswith('lgd.') for k in model.state_dict())   # kept for resume


def test_distill_term_zero_before_start_and_positive_after(student_cfg, at_iter):
    model = _build(student_cfg, distill_start_iter=5, freeze_backbone_iters=0)
    x, batch = torch.rand(2, 3, SIZE, SIZE), _samples(BATCH)
    at_iter(4)
    before = model.loss(x, batch)
    assert before['loss_lgd_distill'] == 0 and before['loss_lgd_adapter_warmup'] > 0
    # before the start, the (warm-up) term trains only the adapter, never the student
    model.zero_grad()
    (before['loss_lgd_distill'] + before['loss_lgd_adapter_warmup']).backward()
    assert all(p.grad is None for p in model.student.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())
    at_iter(5)
    after = model.loss(x, batch)
    assert after['loss_lgd_distill'] > 0 and after['loss_lgd_adapter_warmup'] == 0
    # ratios resolve against the runner's max_iters (paper: 30k of 90k, 10k of 90k)
    ratio_model = _build(student_cfg)
    at_iter(29, max_iters=90)
    assert ratio_model.schedule() == (29, 30, 10)
    assert ratio_model.loss(x, batch)['loss_lgd_distill'] == 0
    at_iter(30, max_iters=90)
    assert ratio_model.loss(x, batch)['loss_lgd_distill'] > 0


def test_distill_gradients_reach_student_not_instructive_branch(student_cfg, at_iter):
    at_iter(0)
    # appearance not detached: the strongest case for leakage into the LGD modules
    model = _build(student_cfg, distill_start_iter=0, freeze_backbone_iters=0,
                   detach_appearance=False)
    losses = model.loss(torch.rand(2, 3, SIZE, SIZE), _samples(BATCH))
    model.zero_grad()
    losses['loss_lgd_distill'].backward()
    for part in (model.student.backbone, model.student.neck, model.adapter):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert all(p.grad is None for p in model.lgd.parameters())
    assert all(p.grad is None for p in model.student.bbox_head.parameters())


def test_detached_appearance_and_backbone_freezing(student_cfg, at_iter):
    model = _build(student_cfg, distill_start_iter=10, freeze_backbone_iters=3,
                   detach_appearance=True)
    x, batch = torch.rand(2, 3, SIZE, SIZE), _samples(BATCH)
    at_iter(0)
    losses = model.loss(x, batch)
    model.zero_grad()
    inst = sum(v.sum() if isinstance(v, torch.Tensor) else sum(t.sum() for t in v)
               for k, v in losses.items() if k.startswith('loss_lgd_inst_'))
    inst.backward(retain_graph=True)
    # instructive detection loss: trains the LGD modules and the shared head, not the FPN
    assert all(p.grad is None for p in model.student.neck.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.bbox_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.lgd.parameters())
    # frozen backbone: no gradient from any loss during the first iterations
    model.zero_grad()
    _total(losses).backward()
    assert all(p.grad is None for p in model.student.backbone.parameters())
    assert any(p.grad is not None for p in model.student.neck.parameters())
    at_iter(3)
    model.zero_grad()
    _total(model.loss(x, batch)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.backbone.parameters())


# ---------------------------------------------------------------- composition
def test_compose_lgd_config():
    from pgd.engine.config_utils import load_config
    from pgd.engine.distill import load_method
    from pgd.engine.distill_lgd import compose_lgd
    from pgd.errors import UserError
    method = load_method('lgd')
    args = argparse.Namespace(teacher=None, teacher_ckpt=None, cfg_options=None,
                              loss_options={'loss_weight': 2.0})
    _, cfg = load_config('mini/fcos_r18_student')
    cfg = compose_lgd(cfg, method, args)
    assert cfg.model['type'] == 'LabelGuidedSelfDistiller'
    assert cfg.model['student']['type'] == 'FCOS'
    assert cfg.model['num_heads'] == 8 and cfg.model['loss_weight'] == 2.0
    assert abs(cfg.model['distill_start_ratio'] - 1 / 3) < 1e-9
    assert cfg.model_wrapper_cfg['find_unused_parameters'] is True
    assert cfg.distill['method'] == 'lgd' and cfg.distill['teacher'] is None
    assert 'pgd.distill.lgd.detector' in cfg.custom_imports['imports']
    assert set(method.detector_overrides) == {'atss', 'fcos', 'gfl', 'ddod', 'autoassign'}
    _, cfg2 = load_config('mini/atss_r18_student')
    with pytest.raises(UserError):
        compose_lgd(cfg2, method, argparse.Namespace(teacher=None, teacher_ckpt=None,
                                                     cfg_options=None,
                                                     loss_options={'alpha': 1}))
