"""LD as in the official code (github.com/HikariTJU/LD): pgd.distill.ld_vlr_head.LDVLRHead.

The VLR region and the three LD terms are checked against loop re-implementations of the
official semantics written here (``ATSSAssigner.get_vlr_region`` and ``LDHead.loss_single`` of
HikariTJU/LD), the main-region terms against MMDetection's own LDHead, the option switches, the
gradients, the composed run config, and one loss step of the real mini GFL student built as
`pgd distill --method ld` builds it.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData

from pgd.engine.config_utils import CONFIG_ROOT

register_all_modules()
from pgd.distill.ld_vlr_head import LDVLRHead, iou_and_diou, vlr_weights  # noqa: E402

SIZE = 64


# ------------------------------------------------------------------ loop references
def _iou_diou(a, g):
    iw = max(0., min(a[2], g[2]) - max(a[0], g[0]))
    ih = max(0., min(a[3], g[3]) - max(a[1], g[1]))
    inter = iw * ih
    union = max((a[2] - a[0]) * (a[3] - a[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter, 1e-6)
    iou = inter / union
    rho2 = (((g[0] + g[2]) - (a[0] + a[2])) ** 2 + ((g[1] + g[3]) - (a[1] + a[3])) ** 2) / 4
    cw = max(a[2], g[2]) - min(a[0], g[0])
    ch = max(a[3], g[3]) - min(a[1], g[1])
    return iou, iou - rho2 / max(cw ** 2 + ch ** 2, 1e-6)


def _vlr_reference(anchors, num_level, gts, topk=9, alpha=0.25):
    """get_vlr_region of HikariTJU/LD, one GT and one anchor at a time."""
    anchors = anchors.tolist()
    gts = gts.tolist()
    out = [0.] * len(anchors)
    best = [-math.inf] * len(anchors)
    for g in gts:
        gc = ((g[0] + g[2]) / 2, (g[1] + g[3]) / 2)
        cand_ious, start = [], 0
        for n_l in num_level:
            level = list(range(start, start + n_l))
            dists = [math.hypot((anchors[i][0] + anchors[i][2]) / 2 - gc[0],
                                (anchors[i][1] + anchors[i][3]) / 2 - gc[1]) for i in level]
            order = sorted(range(n_l), key=lambda k: dists[k])[:min(topk, n_l)]
            cand_ious += [_iou_diou(anchors[level[k]], g)[0] for k in order]
            start += n_l
        thr = statistics.mean(cand_ious) + statistics.stdev(cand_ious)
        for i, a in enumerate(anchors):
            iou, diou = _iou_diou(a, g)
            if alpha * thr <= diou < thr and iou > best[i]:
                best[i] = iou
    for i, b in enumerate(best):
        if b != -math.inf:
            out[i] = b
    return out


def _kl(pred, target, t):
    """KnowledgeDistillationKLDivLoss of one row: T^2 * mean_bins p_t (log p_t - log p_s)."""
    ps = torch.softmax(torch.tensor(pred, dtype=torch.float64) / t, 0).tolist()
    pt = torch.softmax(torch.tensor(target, dtype=torch.float64) / t, 0).tolist()
    return t * t * sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt)) / len(ps)


def _level_reference(bbox_pred, soft, cls, soft_cls, labels, label_w, vlr, num_classes,
                     exclude_pos=False):
    """loss_single of HikariTJU/LD for one level, location by location: (ld, ld_vlr, kd)."""
    b, c4, h, w = bbox_pred.shape
    bins = c4 // 4
    ld = ld_vlr = kd = 0.
    n_pos = 0
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                n = i * w + j
                lab = int(labels[bi, n])
                p = bbox_pred[bi, :, i, j].tolist()
                q = soft[bi, :, i, j].tolist()
                sides = [_kl(p[s * bins:(s + 1) * bins], q[s * bins:(s + 1) * bins], 10)
                         for s in range(4)]
                is_pos = 0 <= lab < num_classes
                if is_pos:
                    n_pos += 1
                    score = max(torch.sigmoid(cls[bi, :, i, j].double()).tolist())
                    ld += 0.25 * score * sum(sides) / 4
                    kd += 10 * float(label_w[bi, n]) * _kl(cls[bi, :, i, j].tolist(),
                                                           soft_cls[bi, :, i, j].tolist(), 2)
                v = float(vlr[bi, n])
                if v > 0 and not (exclude_pos and is_pos):
                    ld_vlr += 0.25 * v * sum(sides) / 16
    return ld, ld_vlr, (kd / n_pos if n_pos else 0.)


# ------------------------------------------------------------------ fixtures
def _model_cfg(name):
    return Config.fromfile(str(CONFIG_ROOT / f'{name}.py')).model


def _head(**kw):
    cfg = _model_cfg('mini/gfl_r18_student')
    head = copy.deepcopy(cfg.bbox_head)
    head.update(type='LDVLRHead', train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg, **kw)
    return MODELS.build(head)


def _samples(boxes_per_image, size=SIZE):
    out = []
    for boxes in boxes_per_image:
        ds = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         batch_input_shape=(size, size), scale_factor=(1., 1.)))
        inst = InstanceData()
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        inst.labels = torch.tensor([k % 3 for k in range(len(boxes))], dtype=torch.long)
        ds.gt_instances = inst
        out.append(ds)
    return out


BOXES = [[[5.3, 7.9, 41.7, 37.1], [30.2, 20.6, 61.9, 58.4]], [[11.1, 3.7, 27.3, 50.9]]]


def _outputs(head, seed=0, scale=3.):
    g = torch.Generator().manual_seed(seed)
    sizes = [(math.ceil(SIZE / s[0]),) * 2 for s in head.prior_generator.strides]
    c, r = head.cls_out_channels, 4 * (head.reg_max + 1)

    def rnd(ch):
        return [(scale * torch.randn(2, ch, h, w, generator=g)).requires_grad_(True)
                for h, w in sizes]
    return rnd(c), rnd(r), rnd(c), rnd(r)  # student cls, bbox, teacher cls, bbox


def _metas(samples):
    return [s.metainfo for s in samples], [s.gt_instances for s in samples]


# ------------------------------------------------------------------ VLR region
def test_diou_matches_formula():
    boxes = torch.tensor([[0., 0., 10., 10.], [5., 5., 25., 15.], [30., 30., 40., 50.]])
    gts = torch.tensor([[2., 3., 12., 9.], [20., 20., 35., 45.]])
    iou, diou = iou_and_diou(boxes, gts)
    for i in range(3):
        for j in range(2):
            ref = _iou_diou(boxes[i].tolist(), gts[j].tolist())
            assert iou[i, j].item() == pytest.approx(ref[0], rel=1e-5, abs=1e-7)
            assert diou[i, j].item() == pytest.approx(ref[1], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize('alpha,topk', [(0.25, 9), (0.5, 4)])
def test_vlr_weights_match_official_loop(alpha, topk):
    head = _head()
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    anchors = torch.cat(head.prior_generator.grid_priors(sizes, device='cpu')).double()
    num_level = [h * w for h, w in sizes]
    gts = torch.tensor(BOXES[0] + BOXES[1], dtype=torch.float64)
    got = vlr_weights(anchors, num_level, gts, topk=topk, alpha=alpha)
    ref = torch.tensor(_vlr_reference(anchors, num_level, gts, topk, alpha), dtype=torch.float64)
    assert (ref > 0).sum() >= 5, 'test geometry must produce a non-trivial VLR'
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-9)
    # no GT, no VLR
    assert not vlr_weights(anchors, num_level, gts[:0]).any()


# ------------------------------------------------------------------ loss terms
def _targets(head, samples, outs):
    """Labels / label weights / VLR per level as the head computes them (mmdet assignment)."""
    cls, bbox = outs[0], outs[1]
    metas, gts = _metas(samples)
    sizes = [f.shape[-2:] for f in cls]
    anchors, flags = head.get_anchors(sizes, metas, device='cpu')
    vlr = head.get_vlr_targets(anchors, flags, gts, metas)
    t = head.get_targets(anchors, flags, gts, metas)
    return t[1], t[2], vlr


@pytest.mark.parametrize('exclude_pos', [False, True])
def test_terms_match_official_loop_and_mmdet_main_terms(exclude_pos):
    torch.manual_seed(0)
    head = _head(vlr_exclude_pos=exclude_pos)
    samples = _samples(BOXES)
    cls, bbox, t_cls, t_bbox = _outputs(head)
    metas, gts = _metas(samples)
    out = head.loss_by_feat(cls, bbox, gts, metas, t_bbox, soft_labels=t_cls)
    assert set(out) == {'loss_cls', 'loss_bbox', 'loss_dfl', 'loss_ld', 'loss_ld_vlr',
                        'loss_kd'}
    labels, label_w, vlr = _targets(head, samples, (cls, bbox))
    assert sum(int((v > 0).sum()) for v in vlr) > 0
    for lvl in range(len(cls)):
        ld, ld_vlr, kd = _level_reference(bbox[lvl].detach(), t_bbox[lvl].detach(),
                                          cls[lvl].detach(), t_cls[lvl].detach(),
                                          labels[lvl], label_w[lvl], vlr[lvl],
                                          head.num_classes, exclude_pos)
        for key, ref in (('loss_ld', ld), ('loss_ld_vlr', ld_vlr), ('loss_kd', kd)):
            assert out[key][lvl].item() == pytest.approx(ref, rel=1e-5, abs=1e-8), (key, lvl)
    # mmdet's own LDHead, same weights: identical cls/bbox/dfl/ld terms
    cfg = _model_cfg('mini/gfl_r18_student')
    plain_cfg = copy.deepcopy(cfg.bbox_head)
    plain_cfg.update(type='LDHead', train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg,
                     loss_ld=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25,
                                  T=10))
    plain = MODELS.build(plain_cfg)
    ref = plain.loss_by_feat(cls, bbox, gts, metas, t_bbox)
    for key in ref:
        for a, b in zip(out[key], ref[key]):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-8), key


def test_switching_terms_off_gives_mmdets_ldhead_and_gradients():
    head = _head(loss_ld_vlr=None, loss_kd=None)
    samples = _samples(BOXES)
    cls, bbox, t_cls, t_bbox = _outputs(head, seed=1)
    metas, gts = _metas(samples)
    out = head.loss_by_feat(cls, bbox, gts, metas, t_bbox)
    assert set(out) == {'loss_cls', 'loss_bbox', 'loss_dfl', 'loss_ld'}
    # gradients: the three terms reach the student's outputs, never the teacher's
    head = _head()
    out = head.loss_by_feat(cls, bbox, gts, metas, t_bbox, soft_labels=t_cls)
    total = sum(sum(out[k]) for k in ('loss_ld', 'loss_ld_vlr', 'loss_kd'))
    total.backward()
    assert all(t.grad is None for t in t_cls + t_bbox)
    assert any(b.grad is not None and b.grad.abs().sum() > 0 for b in bbox)
    assert any(c.grad is not None and c.grad.abs().sum() > 0 for c in cls)
    assert all(torch.isfinite(b.grad).all() for b in bbox if b.grad is not None)
    # the VLR term alone moves the box logits of the VLR locations
    for t in cls + bbox:
        t.grad = None
    head.loss_by_feat(cls, bbox, gts, metas, t_bbox,
                      soft_labels=t_cls)['loss_ld_vlr'][0].backward()
    assert bbox[0].grad.abs().sum() > 0 and cls[0].grad is None
    with pytest.raises(ValueError, match='soft_labels'):
        head.loss_by_feat(cls, bbox, gts, metas, t_bbox)


def test_image_without_gt_and_defaults():
    head = _head()
    assert head.vlr_topk == 9 and head.vlr_alpha == 0.25 and not head.vlr_exclude_pos
    assert (head.loss_ld.loss_weight, head.loss_ld.T) == (0.25, 10)
    assert (head.loss_ld_vlr.loss_weight, head.loss_ld_vlr.T) == (0.25, 10)
    assert (head.loss_kd.loss_weight, head.loss_kd.T) == (10.0, 2)
    samples = _samples([[], []])
    cls, bbox, t_cls, t_bbox = _outputs(head)
    metas, gts = _metas(samples)
    out = head.loss_by_feat(cls, bbox, gts, metas, t_bbox, soft_labels=t_cls)
    assert all(v.item() == 0. for k in ('loss_ld_vlr', 'loss_kd', 'loss_ld') for v in out[k])
    sum(sum(v) for v in out.values()).backward()


# ------------------------------------------------------------------ composition and a real step
def _compose(tmp_path, options=None):
    from pgd.engine.distill import compose
    ckpt = tmp_path / 'teacher.pth'
    ckpt.write_bytes(b'')
    args = argparse.Namespace(student='mini/gfl_r18_student', teacher='mini/gfl_r34_teacher',
                              teacher_ckpt=str(ckpt), method='ld', loss_options=options,
                              cfg_options=None)
    return compose(args)[1]


def test_compose_selects_the_head_and_scales_every_term(tmp_path):
    from pgd.errors import UserError
    cfg = _compose(tmp_path, {'loss_scale': 0.5, 'vlr_alpha': 0.3, 'T': 8})
    head = cfg.model.bbox_head
    assert head.type == 'LDVLRHead' and head.vlr_alpha == 0.3
    assert (head.loss_ld.loss_weight, head.loss_ld.T) == (0.125, 8)
    assert (head.loss_ld_vlr.loss_weight, head.loss_ld_vlr.T) == (0.125, 8)
    assert (head.loss_kd.loss_weight, head.loss_kd.T) == (5.0, 2)
    assert 'pgd.distill.ld_vlr_head' in cfg.custom_imports['imports']
    main = _compose(tmp_path, {'ld_variant': 'main'}).model.bbox_head
    assert main.type == 'LDHead' and 'loss_ld_vlr' not in main and 'loss_kd' not in main
    assert main.loss_ld.loss_weight == 0.25
    with pytest.raises(UserError, match='ld_variant'):
        _compose(tmp_path, {'ld_variant': 'nope'})
    with pytest.raises(UserError, match='needs ld_variant=vlr'):
        _compose(tmp_path, {'ld_variant': 'main', 'vlr_alpha': 0.3})


def test_real_mini_gfl_student_with_the_ld_head_one_step(tmp_path):
    """The mini GFL student + LDVLRHead inside mmdet's KnowledgeDistillationSingleStageDetector,
    composed as `pgd distill --method ld` does; one loss computation and backward."""
    torch.manual_seed(0)
    cfg = _compose(tmp_path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('teacher_ckpt')  # the empty placeholder file is not a checkpoint
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    x = torch.rand(2, 3, SIZE, SIZE)
    losses = model.loss(x, _samples([BOXES[0], []]))
    for key in ('loss_ld', 'loss_ld_vlr', 'loss_kd', 'loss_cls'):
        assert key in losses and all(torch.isfinite(v) for v in losses[key]), key
    total = sum(sum(v) for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert all(p.grad is None for p in model.teacher_model.parameters())
    assert model.bbox_head.gfl_reg.weight.grad.abs().sum() > 0
    # the student exports as a plain GFL detector (no extra parameters in the head)
    plain = MODELS.build(_model_cfg('mini/gfl_r18_student'))
    plain.load_state_dict(model.state_dict(), strict=True)
