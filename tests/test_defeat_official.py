"""DeFeat head term (decoupled fg/bg classification KD) against the official semantics.

The reference below re-implements, with explicit per-image / per-box loops, what the official
code (github.com/ggjy/DeFeat.pytorch, ``mmdet/apis/train.py``: ``KLDivergenceLoss`` and the
'KL-decouple' branch of ``batch_processor_kd``) computes, transposed to dense predictions:
rows = (location, anchor) predictions of every level of every image, pooled; fg rows = rows
whose location lies in the DeFeat GT mask of its level; per fg / bg set
``T^2 * sum_rows KL(softmax(t/T) || softmax(s/T)) / #rows`` (0 for an empty set).
For sigmoid heads each class is the two-way distribution {c, not c}: the pair logits
``[z_c, 0]`` are fed to the same softmax KL (sigmoid(z) = softmax([z, 0])_0).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmdet.registry import MODELS
from pgd.distill.inputs import CapturedFeatures, DistillBatch, level_points, pad_gts
from pgd.distill.losses.defeat_loss import DeFeatLoss

DT = torch.float64
SIZES = [(8, 8), (4, 4)]
STRIDES = [8, 16]
NUM_CLS = 3
# two images; boxes of different scales so both levels get foreground (level of a box:
# floor(log2(sqrt((w+1)(h+1)) / 56)) clamped to [0, 1])
TWO_IMAGES = [[[16., 16., 40., 48.], [0., 0., 120., 126.]],
              [[0., 0., 24., 16.], [40., 8., 64., 40.]]]
NO_GT = [[], []]


def make_batch(boxes_per_image, anchors=1, cs=4, ct=4, seed=0, t_logits=None, s_logits=None):
    g = torch.Generator().manual_seed(seed)
    b = len(boxes_per_image)

    def feats(c, grad):
        f = [torch.randn(b, c, h, w, generator=g, dtype=DT).requires_grad_(grad)
             for h, w in SIZES]
        return CapturedFeatures(neck=f, cls_feat=f, reg_feat=f)

    pts, _ = level_points(SIZES, STRIDES, dtype=DT)
    boxes = [torch.tensor(bb, dtype=DT).reshape(-1, 4) for bb in boxes_per_image]
    labels = [torch.zeros(len(bb), dtype=torch.long) for bb in boxes]
    gt_bboxes, gt_labels, gt_valid = pad_gts(boxes, labels)
    if t_logits is None:
        t_logits = [2 * torch.randn(b, anchors * NUM_CLS, h, w, generator=g, dtype=DT)
                    for h, w in SIZES]
    if s_logits is None:
        s_logits = [2 * torch.randn(b, anchors * NUM_CLS, h, w, generator=g, dtype=DT)
                    for h, w in SIZES]
    n = pts.shape[0]
    return DistillBatch(
        student=feats(cs, True), teacher=feats(ct, True),
        teacher_cls_prob=torch.rand(b, n, anchors, NUM_CLS, generator=g, dtype=DT),
        teacher_boxes=torch.rand(b, n, anchors, 4, generator=g, dtype=DT),
        points=pts, level_sizes=list(SIZES), strides=list(STRIDES), gt_bboxes=gt_bboxes,
        gt_labels=gt_labels, gt_valid=gt_valid, batch_input_shape=(64, 64),
        teacher_cls_logits=[t.clone().requires_grad_(True) for t in t_logits],
        student_cls_logits=[s.clone().requires_grad_(True) for s in s_logits])


# ------------------------------------------------------------------ reference (official)
def official_kl(y, teacher_scores, mask, T):
    """The official ``KLDivergenceLoss`` (student logits y, teacher logits, row mask)."""
    if mask.sum() == 0:
        return torch.zeros((), dtype=y.dtype)
    p = F.log_softmax(y / T, dim=1)[mask]
    q = F.softmax(teacher_scores / T, dim=1)[mask]
    return (q * (q.log() - p)).sum() / mask.sum() * T ** 2


def reference_mask(boxes, lvl, size, stride):
    """DeFeat GT mask of one image on one level, box by box, cell by cell."""
    h, w = size
    mask = torch.zeros(h, w, dtype=torch.bool)
    for (x1, y1, x2, y2) in boxes:
        scale = math.sqrt((x2 - x1 + 1) * (y2 - y1 + 1))
        lv = min(max(math.floor(math.log2(scale / 56 + 1e-6)), 0), len(SIZES) - 1)
        if lv != lvl:
            continue
        c0, c1 = int(x1 // stride), max(int(x2 // stride), int(x1 // stride) + 1)
        r0, r1 = int(y1 // stride), max(int(y2 // stride), int(y1 // stride) + 1)
        for i in range(r0, min(r1, h)):
            for j in range(c0, min(c1, w)):
                mask[i, j] = True
    return mask


def image_rows(batch, boxes, b, anchors):
    """(rows, C) teacher / student logits and the (rows,) fg flag of image b, all levels."""
    t_rows, s_rows, fg_rows = [], [], []
    for lvl, (size, stride) in enumerate(zip(SIZES, STRIDES)):
        mask = reference_mask(boxes, lvl, size, stride)
        t = batch.teacher_cls_logits[lvl].detach()[b]
        s = batch.student_cls_logits[lvl].detach()[b]
        for i in range(size[0]):
            for j in range(size[1]):
                for a in range(anchors):
                    t_rows.append(t[a * NUM_CLS:(a + 1) * NUM_CLS, i, j])
                    s_rows.append(s[a * NUM_CLS:(a + 1) * NUM_CLS, i, j])
                    fg_rows.append(bool(mask[i, j]))
    return torch.stack(t_rows), torch.stack(s_rows), torch.tensor(fg_rows)


def pair_logits(rows):
    """(R, C) sigmoid logits -> (R * C, 2) two-way logits [z, 0]."""
    z = rows.reshape(-1, 1)
    return torch.cat([z, torch.zeros_like(z)], dim=1)


def reference_head(batch, boxes, anchors, T, mode, normalize):
    per_img = []
    for b in range(len(boxes)):
        t, s, fg = image_rows(batch, boxes[b], b, anchors)
        if mode == 'sigmoid':
            # each prediction row holds C two-way distributions; the official loss sums KL
            # over the classes of a row and divides by the number of rows
            t, s = pair_logits(t), pair_logits(s)
            fg = fg.repeat_interleave(NUM_CLS)
            per_class = NUM_CLS
        else:
            per_class = 1
        per_img.append((t, s, fg, per_class))
    out = {}
    for key, want_fg in (('fg', True), ('bg', False)):
        if normalize == 'batch':  # all rows of the batch pooled, as the official RoIs
            t = torch.cat([x[0] for x in per_img])
            s = torch.cat([x[1] for x in per_img])
            m = torch.cat([x[2] for x in per_img]) == want_fg
            out[key] = official_kl(s, t, m, T) * per_img[0][3]
        else:
            vals = [official_kl(s, t, (fg == want_fg), T) * pc for t, s, fg, pc in per_img]
            out[key] = sum(vals) / len(vals)
    return out


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize('mode', ['sigmoid', 'softmax'])
@pytest.mark.parametrize('normalize', ['batch', 'image'])
@pytest.mark.parametrize('anchors', [1, 2])
@pytest.mark.parametrize('T', [1.0, 2.0])
def test_head_term_matches_official_semantics(mode, normalize, anchors, T):
    batch = make_batch(TWO_IMAGES, anchors=anchors, seed=anchors)
    m = DeFeatLoss(4, 4, num_levels=2, normalize=normalize, head_kl=mode,
                   head_temperature=T, head_fg_weight=2.0, head_bg_weight=3.0).double()
    out = m(batch)
    ref = reference_head(batch, TWO_IMAGES, anchors, T, mode, normalize)
    assert ref['fg'] > 0 and ref['bg'] > 0
    assert torch.allclose(out['loss_defeat_head_fg'], 2.0 * ref['fg'], rtol=1e-5, atol=0)
    assert torch.allclose(out['loss_defeat_head_bg'], 3.0 * ref['bg'], rtol=1e-5, atol=0)


def test_both_levels_have_foreground():
    """The fixture exercises fg on every level (otherwise the pooling test is weak)."""
    for lvl, (size, stride) in enumerate(zip(SIZES, STRIDES)):
        assert any(reference_mask(bx, lvl, size, stride).any() for bx in TWO_IMAGES)


def test_defaults_are_the_official_config_values():
    m = MODELS.build(dict(type='DeFeatLoss', student_channels=4, teacher_channels=4))
    assert m.with_head
    assert (m.head_fg_weight, m.head_bg_weight, m.head_temperature) == (2.0, 2.0, 1.0)
    assert (m.fg_weight, m.bg_weight) == (3.0, 12.0)
    assert m.head_kl == 'sigmoid'


def test_method_config_builds_head_term():
    from pgd.engine.distill import load_method, method_losses
    cfg = method_losses(load_method('defeat'), 'atss', None)['defeat']
    assert cfg['with_head'] is True
    assert (cfg['head_fg_weight'], cfg['head_bg_weight'], cfg['head_temperature']) == (2., 2., 1.)
    off = method_losses(load_method('defeat'), 'atss', {'with_head': False})['defeat']
    m = MODELS.build(dict(off, student_channels=4, teacher_channels=4)).double()
    assert set(m(make_batch(TWO_IMAGES))) == {'loss_defeat_fg', 'loss_defeat_bg'}


def test_switch_off_keeps_neck_term_unchanged():
    torch.manual_seed(0)
    on = DeFeatLoss(4, 6, num_levels=2).double()
    off = DeFeatLoss(4, 6, num_levels=2, with_head=False).double()
    off.load_state_dict(on.state_dict())
    batch = make_batch(TWO_IMAGES, ct=6)
    a, b = on(batch), off(batch)
    assert set(a) == {'loss_defeat_fg', 'loss_defeat_bg', 'loss_defeat_head_fg',
                      'loss_defeat_head_bg'}
    assert set(b) == {'loss_defeat_fg', 'loss_defeat_bg'}
    for k in b:
        assert torch.equal(a[k], b[k])
    with pytest.raises(ValueError):
        DeFeatLoss(4, 4, head_kl='bce')


def test_head_gradients_reach_student_only():
    m = DeFeatLoss(4, 6, num_levels=2).double()
    batch = make_batch(TWO_IMAGES, anchors=2, ct=6)
    out = m(batch)
    (out['loss_defeat_head_fg'] + out['loss_defeat_head_bg']).backward()
    assert all(t.grad is None for t in batch.teacher_cls_logits)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in batch.student_cls_logits)
    # the full loss also trains the adaptation convs (neck term)
    batch = make_batch(TWO_IMAGES, anchors=2, ct=6)
    sum(m(batch).values()).backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in m.adapt)
    assert all(t.grad is None for t in batch.teacher.neck + batch.teacher_cls_logits)


@pytest.mark.parametrize('mode', ['sigmoid', 'softmax'])
def test_identical_logits_give_zero_and_no_gt_gives_zero_fg(mode):
    logits = [torch.randn(2, NUM_CLS, h, w, dtype=DT) for h, w in SIZES]
    m = DeFeatLoss(4, 4, num_levels=2, head_kl=mode).double()
    out = m(make_batch(TWO_IMAGES, t_logits=logits, s_logits=logits))
    assert abs(out['loss_defeat_head_fg'].item()) < 1e-12
    assert abs(out['loss_defeat_head_bg'].item()) < 1e-12
    out = m(make_batch(NO_GT))
    assert out['loss_defeat_head_fg'].item() == 0. and out['loss_defeat_head_bg'].item() > 0.
    assert all(torch.isfinite(v) for v in out.values())


def test_large_logits_stay_finite():
    big = [torch.full((2, NUM_CLS, h, w), 80., dtype=DT) for h, w in SIZES]
    small = [torch.full((2, NUM_CLS, h, w), -80., dtype=DT) for h, w in SIZES]
    for mode in ('sigmoid', 'softmax'):
        m = DeFeatLoss(4, 4, num_levels=2, head_kl=mode).double()
        batch = make_batch(TWO_IMAGES, t_logits=big, s_logits=small)
        out = m(batch)
        assert all(torch.isfinite(v) for v in out.values())
        sum(out.values()).backward()
        assert all(torch.isfinite(s.grad).all() for s in batch.student_cls_logits)


def test_missing_student_logits_is_a_clear_error():
    batch = make_batch(TWO_IMAGES)
    batch.student_cls_logits = None
    with pytest.raises(ValueError, match='with_head=False'):
        DeFeatLoss(4, 4, num_levels=2).double()(batch)
    assert set(DeFeatLoss(4, 4, num_levels=2, with_head=False).double()(batch)) == {
        'loss_defeat_fg', 'loss_defeat_bg'}
