"""PGD loss (paper Eq. 5-10) and attention maps (Eq. 7)."""
import math

import pytest
import torch

from pgd.distill.attention import (CHANNEL_REDUCTIONS, channel_attention,
                                   channel_attention_pooled, channel_softmax, pgd_attention_maps,
                                   spatial_attention, spatial_attention_fgd)
from pgd.distill.inputs import CapturedFeatures, DistillBatch, level_points, pad_gts
from pgd.distill.losses import PGDLoss
from pgd.distill.losses.weighted_error import weighted_squared_error
from pgd.distill.pgw import pgw_masks_from_batch

SIZES = [(6, 10), (3, 5)]
STRIDES = [8, 16]


def make_batch(gt_list, seed=0, channels=4, sizes=SIZES, strides=STRIDES, grad=True,
               num_classes=3):
    gen = torch.Generator().manual_seed(seed)
    b = len(gt_list)
    points, _ = level_points(sizes, strides)
    n = points.shape[0]

    def feats(scale=1.0):
        return [scale * torch.randn(b, channels, h, w, generator=gen) for h, w in sizes]

    t = CapturedFeatures(neck=feats(), cls_feat=feats(), reg_feat=feats())
    s = CapturedFeatures(neck=feats(), cls_feat=feats(), reg_feat=feats())
    for lst in (t.neck, t.cls_feat, t.reg_feat, s.neck, s.cls_feat, s.reg_feat):
        for f in lst:
            f.requires_grad_(grad)
    prob = torch.rand(b, n, 1, num_classes, generator=gen)
    half = 6 + 20 * torch.rand(b, n, 1, 2, generator=gen)
    boxes = torch.cat([points[None, :, None] - half, points[None, :, None] + half], -1)
    if grad:
        prob.requires_grad_(True)
        boxes.requires_grad_(True)
    gts = [torch.tensor(x, dtype=torch.float32).reshape(-1, 4) for x in gt_list]
    labels = [torch.arange(len(x)) % num_classes for x in gts]
    gt_bboxes, gt_labels, gt_valid = pad_gts(gts, labels)
    h_in, w_in = sizes[0][0] * strides[0], sizes[0][1] * strides[0]
    return DistillBatch(student=s, teacher=t, teacher_cls_prob=prob, teacher_boxes=boxes,
                        points=points, level_sizes=list(sizes), strides=list(strides),
                        gt_bboxes=gt_bboxes, gt_labels=gt_labels, gt_valid=gt_valid,
                        batch_input_shape=(h_in, w_in), img_shapes=[(h_in, w_in)] * b)


GTS = [[[4., 4., 40., 30.], [30., 10., 70., 46.]], [[50., 2., 78., 40.]], []]


def select_image(batch, i):
    """Single-image batch with its GTs re-padded (G may shrink)."""
    pick = lambda lst: [f[i:i + 1] for f in lst]  # noqa: E731
    cap = lambda c: CapturedFeatures(pick(c.neck), pick(c.cls_feat), pick(c.reg_feat))  # noqa
    v = batch.gt_valid[i]
    gt_b, gt_l, gt_v = pad_gts([batch.gt_bboxes[i][v]], [batch.gt_labels[i][v]])
    return DistillBatch(student=cap(batch.student), teacher=cap(batch.teacher),
                        teacher_cls_prob=batch.teacher_cls_prob[i:i + 1],
                        teacher_boxes=batch.teacher_boxes[i:i + 1], points=batch.points,
                        level_sizes=batch.level_sizes, strides=batch.strides, gt_bboxes=gt_b,
                        gt_labels=gt_l, gt_valid=gt_v, batch_input_shape=batch.batch_input_shape)


# ------------------------------------------------------------------ attention
def test_attention_maps():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(2, 5, 3, 4, generator=gen)
    p = spatial_attention(f, 0.8, 'sum')
    a = channel_attention(f, 0.8)
    assert p.shape == (2, 1, 3, 4) and a.shape == (2, 5, 3, 4)
    torch.testing.assert_close(p.sum(dim=(1, 2, 3)), torch.full((2, ), 12.0))
    torch.testing.assert_close(a.sum(dim=1), torch.full((2, 3, 4), 5.0))
    # explicit Eq. 7 (as printed: channel sum) at one location
    e = torch.exp(f[0].abs().sum(0) / 0.8)
    assert float(p[0, 0, 1, 2]) == pytest.approx(float(12 * e[1, 2] / e.sum()), rel=1e-5)
    # default: the official code's channel mean (= FGD's spatial attention)
    em = torch.exp(f[0].abs().mean(0) / 0.8)
    pm = spatial_attention(f, 0.8)
    assert float(pm[0, 0, 1, 2]) == pytest.approx(float(12 * em[1, 2] / em.sum()), rel=1e-5)
    torch.testing.assert_close(pm, spatial_attention(f, 0.8, 'mean'))
    with pytest.raises(ValueError, match='channel_reduce'):
        spatial_attention(f, 0.8, 'max')
    ec = torch.exp(f[0, :, 1, 2].abs() / 0.8)
    torch.testing.assert_close(a[0, :, 1, 2], 5 * ec / ec.sum())
    # FGD variants: channel mean and pooled channel attention
    pf = spatial_attention_fgd(f, 0.5)
    torch.testing.assert_close(pf, spatial_attention(f / 5, 0.5, 'sum'))
    torch.testing.assert_close(pf, spatial_attention(f, 0.5))
    ap = channel_attention_pooled(f, 0.5)
    assert ap.shape == (2, 5, 1, 1)
    ecp = torch.exp(f[1].abs().mean(dim=(1, 2)) / 0.5)
    torch.testing.assert_close(ap[1, :, 0, 0], 5 * ecp / ecp.sum())
    # the loss's one-|F| pair: the same P, and A without its factor C
    for reduce in CHANNEL_REDUCTIONS:
        p2, s2 = pgd_attention_maps(f, 0.8, reduce)
        torch.testing.assert_close(p2, spatial_attention(f, 0.8, reduce), rtol=0, atol=0)
        torch.testing.assert_close(5 * s2, a)
        torch.testing.assert_close(channel_softmax(f, 0.8), s2, rtol=0, atol=0)
    # (Q, C) rows (the reg branch): the same softmax over channels as a (Q, C, 1, 1) map
    rows = f.permute(0, 2, 3, 1).reshape(-1, 5)
    torch.testing.assert_close(channel_softmax(rows, 0.8),
                               channel_softmax(rows[:, :, None, None], 0.8)[:, :, 0, 0])
    with pytest.raises(ValueError, match=r'\(Q, C\) rows'):
        channel_softmax(f[0], 0.8)
    with pytest.raises(ValueError, match='feature map, got'):
        spatial_attention(rows, 0.8)


def test_weighted_squared_error_value_gradient_and_guards():
    gen = torch.Generator().manual_seed(3)
    f_t = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    w = torch.rand(2, 1, 4, 5, generator=gen, dtype=torch.float64)
    f_s = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    got = weighted_squared_error(f_t, f_s, w)
    ref = (w * (f_t - f_s).pow(2)).sum()
    assert float(got) == pytest.approx(float(ref), rel=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got, f_s)[0],
                               torch.autograd.grad(ref, f_s)[0])
    assert torch.autograd.gradcheck(lambda s: weighted_squared_error(f_t, s, w), (f_s, ))
    # under autocast the sum stays in the inputs' precision
    f32 = [t.float() for t in (f_t, f_s.detach(), w)]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = weighted_squared_error(*f32)
    assert low.dtype == torch.float32
    assert float(low) == pytest.approx(float(ref), rel=1e-5)
    with pytest.raises(ValueError, match='detached'):
        weighted_squared_error(f_t, f_s, w.clone().requires_grad_(True))
    with pytest.raises(ValueError, match='detached'):
        weighted_squared_error(f_s, f_s.detach(), w)
    with pytest.raises(ValueError, match='student'):
        weighted_squared_error(f_t[:, :2], f_s, w)


# ------------------------------------------------------------------ explicit reference
def manual_loss(batch, loss):
    """Eq. 5, 6, 8, 9 (the paper reading) written per image and per level with explicit sums."""
    m_cls, m_reg = pgw_masks_from_batch(batch, (loss.xi_cls, loss.xi_reg), k=loss.k)
    pts = batch.points
    out = {k: 0.0 for k in ('fea_cls', 'att_cls', 'fea_reg', 'att_reg')}
    b_imgs = batch.num_images
    for i in range(b_imgs):
        gts = batch.gt_bboxes[i][batch.gt_valid[i]]
        fg_any = torch.zeros(pts.shape[0], dtype=torch.bool)
        for g in gts:
            fg_any |= ((pts[:, 0] > g[0]) & (pts[:, 0] < g[2]) & (pts[:, 1] > g[1])
                       & (pts[:, 1] < g[3]))
        start = 0
        for lvl, (h, w) in enumerate(batch.level_sizes):
            sl = slice(start, start + h * w)
            start += h * w
            wl = loss.level_weights[lvl]
            mc = m_cls[i, sl].reshape(h, w)
            mr = m_reg[i, sl].reshape(h, w)
            bg = (~fg_any[sl]).float().reshape(h, w)
            nb = bg / bg.sum() if bg.sum() > 0 else bg
            for name in ('cls', 'reg'):
                ft = getattr(batch.teacher, f'{name}_feat')[lvl][i].detach()
                fs = getattr(batch.student, f'{name}_feat')[lvl][i].detach()
                c = ft.shape[0]

                def att(f):
                    s = torch.exp(f.abs().sum(0) / loss.tau)
                    p = h * w * s / s.sum()
                    e = torch.exp(f.abs() / loss.tau)
                    return p, c * e / e.sum(0, keepdim=True)

                pt, at = att(ft)
                ps, as_ = att(fs)
                d2 = (ft - fs) ** 2
                if name == 'cls':
                    fea = ((loss.alpha * mc + loss.beta * nb) * pt * at * d2).sum()
                    at_l = (loss.delta / (h * w) * (pt - ps).abs().sum()
                            + loss.delta / (c * h * w) * (at - as_).abs().sum())
                else:
                    fea = (loss.gamma * mr * at * d2).sum()
                    ind = (mr != 0).float()
                    at_l = (loss.delta / (c * ind.sum()) * (ind * (at - as_).abs()).sum()
                            if ind.sum() > 0 else torch.tensor(0.))
                out[f'fea_{name}'] += wl * float(fea) / b_imgs
                out[f'att_{name}'] += wl * float(at_l) / b_imgs
    return out


def test_matches_explicit_formulas():
    batch = make_batch(GTS, seed=1)
    loss = PGDLoss(alpha=0.08, k=5, semantics='paper')
    assert loss.candidates == 'inside'
    assert loss.beta == pytest.approx(0.04) and loss.gamma == pytest.approx(0.128)
    got = loss(batch)
    ref = manual_loss(batch, loss)
    assert set(got) == {'loss_pgd_fea_cls', 'loss_pgd_att_cls', 'loss_pgd_fea_reg',
                        'loss_pgd_att_reg'}
    for key, val in ref.items():
        assert float(got[f'loss_pgd_{key}']) == pytest.approx(val, rel=1e-5), key
        assert val > 0


def test_batch_loss_is_mean_of_single_image_losses():
    batch = make_batch(GTS, seed=2)
    loss = PGDLoss(alpha=0.04, k=9, branches=('cls', 'reg', 'neck'), semantics='paper')
    full = loss(batch)
    singles = [loss(select_image(batch, i)) for i in range(batch.num_images)]
    for key, val in full.items():
        mean = sum(float(s[key]) for s in singles) / len(singles)
        assert float(val) == pytest.approx(mean, rel=1e-5), key
    # and the per-image losses really differ (the check is not vacuous)
    assert len({round(float(s['loss_pgd_fea_reg']), 8) for s in singles}) == 3


def test_gradients_only_reach_student():
    batch = make_batch(GTS, seed=3)
    loss = PGDLoss(alpha=0.08, branches=('cls', 'reg', 'neck'))
    total = sum(loss(batch).values())
    total.backward()
    for name in ('neck', 'cls_feat', 'reg_feat'):
        for f in getattr(batch.teacher, name):
            assert f.grad is None
        for f in getattr(batch.student, name):
            assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert batch.teacher_cls_prob.grad is None and batch.teacher_boxes.grad is None


def test_degenerate_batches_finite():
    gts = [[], [[30., 20., 31., 21.]], [[36., 12., 44., 20.]], [[0., 0., 160., 96.]]]
    batch = make_batch(gts, seed=4)
    loss = PGDLoss(alpha=0.08, k=30)
    out = loss(batch)
    for v in out.values():
        assert torch.isfinite(v)
    sum(out.values()).backward()
    for f in batch.student.cls_feat + batch.student.reg_feat:
        assert torch.isfinite(f.grad).all()
    # no GT anywhere: foreground terms vanish, background + attention remain
    empty = make_batch([[], []], seed=5)
    out = loss(empty)
    assert float(out['loss_pgd_fea_reg']) == 0.0 and float(out['loss_pgd_att_reg']) == 0.0
    assert float(out['loss_pgd_fea_cls']) > 0 and float(out['loss_pgd_att_cls']) > 0
    # a GT covering the whole image: no background at all -> finite, foreground only
    full = make_batch([[[0., 0., 160., 96.]]], seed=6)
    out = PGDLoss(alpha=0.08, beta=1e3)(full)
    ref = PGDLoss(alpha=0.08, beta=0.0)(full)
    assert float(out['loss_pgd_fea_cls']) == pytest.approx(float(ref['loss_pgd_fea_cls']))


def test_mask_alignment_tall_thin_box():
    """Features differ only inside a tall thin box near the right edge of a wide input; the
    foreground loss must see that difference (an x/y swap anywhere would miss it)."""
    sizes, strides = [(12, 24), (6, 12)], [8, 16]
    box = [168., 4., 184., 92.]               # x in (168, 184), y in (4, 92) on 96 x 192
    batch = make_batch([[box]], seed=7, sizes=sizes, strides=strides)
    for name in ('cls_feat', 'reg_feat'):
        t = getattr(batch.teacher, name)
        s = getattr(batch.student, name)
        for lvl, (h, w) in enumerate(sizes):
            st = strides[lvl]
            ys = (torch.arange(h) + 0.5) * st
            xs = (torch.arange(w) + 0.5) * st
            inside = (((xs > box[0]) & (xs < box[2]))[None, :]
                      & ((ys > box[1]) & (ys < box[3]))[:, None])
            with torch.no_grad():
                s[lvl].copy_(torch.where(inside, t[lvl] + 1.0, t[lvl]))
    out = PGDLoss(alpha=0.08, beta=0.0, k=30)(batch)
    assert float(out['loss_pgd_fea_cls']) > 0.01
    assert float(out['loss_pgd_fea_reg']) > 0.01


def test_branch_selection_and_config():
    from mmdet.registry import MODELS
    batch = make_batch(GTS[:2], seed=8)
    loss = MODELS.build(dict(type='PGDLoss', alpha=0.04, branches=('neck', )))
    out = loss(batch)
    assert set(out) == {'loss_pgd_fea_neck', 'loss_pgd_att_neck'}
    only_reg = PGDLoss(alpha=0.04, branches=('reg', ))(batch)
    both = PGDLoss(alpha=0.04)(batch)
    torch.testing.assert_close(only_reg['loss_pgd_fea_reg'], both['loss_pgd_fea_reg'])
    # level weights are applied: unit weights give a different value
    flat = PGDLoss(alpha=0.04, level_weights=(1, 1))(batch)
    assert float(flat['loss_pgd_fea_cls']) != pytest.approx(float(both['loss_pgd_fea_cls']))
    with pytest.raises(ValueError):
        PGDLoss(branches=('bbox', ))
    with pytest.raises(ValueError):
        PGDLoss(level_weights=(1.0, ))(batch)


def test_channel_mismatch_raises():
    batch = make_batch(GTS[:1], seed=9)
    batch.student.cls_feat = [torch.randn(1, 8, h, w) for h, w in SIZES]
    with pytest.raises(ValueError, match='channel'):
        PGDLoss()(batch)


def test_other_foreground_strategy_hook(monkeypatch):
    import importlib
    fg = importlib.import_module('pgd.distill.foreground')
    calls = []

    def build_strategy(name, **cfg):
        assert name == 'box' and cfg == {'scale': 2.0}

        def strategy(batch, xi):
            calls.append(xi)
            return torch.full((batch.num_images, batch.points.shape[0]), 0.01)
        return strategy

    monkeypatch.setattr(fg, 'build_strategy', build_strategy, raising=False)
    batch = make_batch(GTS, seed=10)
    out = PGDLoss(alpha=0.08, fg_strategy='box', fg_cfg={'scale': 2.0})(batch)
    assert calls == [0.8, 0.6]
    assert all(torch.isfinite(v) for v in out.values())
    assert math.isfinite(float(out['loss_pgd_att_reg'])) and float(out['loss_pgd_att_reg']) > 0
