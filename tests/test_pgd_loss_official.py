"""PGD's default loss against a per-image re-implementation of the official code's semantics.

The reference below follows ChenhongyiYang/PGD (MMDetection 2.14) line by line, one image and
one GT at a time:

* ``mmdet/models/dense_heads/pgd_heads/utils/pgw_anchor_based.py`` (``PGWAnchorModule.assign``):
  quality of every location for every GT, top-K over all locations, Gaussian MLE on the K
  candidates, weight kept inside the box, max over GTs;
* ``.../utils/background_weight.py`` (``get_back_weight``): background indicator;
* ``mmdet/distillation/losses/pgd_cls.py`` (``PGDClsLoss``) and ``pgd_reg.py`` (``PGDRegLoss``),
  with the per-level ``loss_weight`` of ``work_configs/pgd_atss_r101_r50_1x.py``.

Its two bugs are fixed here as in the package (mask broadcast across the batch; x/y swap of the
anchor-free heads, which these A = 1 point batches do not exercise), and its +-0.05 px jitter
before the Gaussian fit is replaced by the package's deterministic ridge. ``broadcast_bug=True``
reproduces the first bug to show its size.
"""
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures.bbox import bbox_overlaps
from test_pgd_loss import GTS, make_batch

from pgd.distill.attention import spatial_attention
from pgd.distill.losses import PGDLoss
from pgd.distill.pgw import DEFAULT_RIDGE

LEVEL_WEIGHTS = (1.0, 1.25, 1.5, 1.75, 2.0)


# ------------------------------------------------------------------ the official semantics
def official_importance(batch, xi, k):
    """Raw PGW importance (B, N), one image and one GT at a time."""
    num_b, num_n = batch.teacher_cls_prob.shape[:2]
    pts = batch.points.to(torch.float64)
    out = torch.zeros(num_b, num_n)
    for b in range(num_b):
        gts = batch.gt_bboxes[b][batch.gt_valid[b]]
        labels = batch.gt_labels[b][batch.gt_valid[b]]
        if len(gts) == 0:
            continue
        overlaps = bbox_overlaps(batch.teacher_boxes[b, :, 0].detach(), gts)      # (N, G)
        cls_cost = batch.teacher_cls_prob[b, :, 0].detach()[:, labels]           # (N, G)
        quality = cls_cost ** (1 - xi) * overlaps ** xi
        topk_idx = quality.topk(k, dim=0).indices                                 # (K, G)
        w = torch.zeros(num_n, len(gts), dtype=torch.float64)
        for g in range(len(gts)):
            cand = pts[topk_idx[:, g]]
            d = cand - cand.mean(dim=0)
            sigma = d.T @ d / k + DEFAULT_RIDGE * torch.eye(2, dtype=torch.float64)
            m = torch.einsum('ni,ij,nj->n', d, torch.linalg.inv(sigma), d)
            w[topk_idx[:, g], g] = torch.exp(-0.5 * m)
        x, y = pts[:, 0:1], pts[:, 1:2]
        valid = ((x > gts[:, 0]) & (y > gts[:, 1]) & (gts[:, 2] > x) & (gts[:, 3] > y))
        out[b] = (w * valid).max(dim=1).values.float()
    return out


def official_background(batch):
    pts = batch.points
    out = torch.ones(batch.num_images, pts.shape[0])
    for b in range(batch.num_images):
        for gt in batch.gt_bboxes[b][batch.gt_valid[b]]:
            inside = ((pts[:, 0] > gt[0]) & (pts[:, 1] > gt[1]) & (pts[:, 0] < gt[2])
                      & (pts[:, 1] < gt[3]))
            out[b, inside] = 0.0
    return out


def get_attention(preds, tau):
    num, c, h, w = preds.shape
    value = preds.abs()
    fea_map = value.mean(dim=1, keepdim=True)
    s_att = (h * w * F.softmax((fea_map / tau).view(num, -1), dim=1)).view(num, h, w)
    c_att = c * F.softmax(value / tau, dim=1)
    return s_att, c_att


def official_cls(preds_s, preds_t, mask_fg, mask_bg, loss, level_weight, broadcast_bug=False):
    """``PGDClsLoss.forward``: returns (level_weight * (alpha fg + beta bg), delta * mask)."""
    mask_bg = mask_bg / (mask_bg != 0).float().sum(dim=(2, 3), keepdim=True).clamp(min=1e-10)
    mask_fg = mask_fg / (mask_fg != 0).float().sum(dim=(2, 3), keepdim=True).clamp(min=1e-10)
    s_t, c_t = get_attention(preds_t, loss.tau)
    s_s, c_s = get_attention(preds_s, loss.tau)
    if broadcast_bug:                       # the official (N, 1, 1, H, W) masks
        mask_fg, mask_bg = mask_fg.unsqueeze(1), mask_bg.unsqueeze(1)
    s_t4 = s_t.unsqueeze(1)
    fea_t = preds_t * s_t4.sqrt() * c_t.sqrt()
    fea_s = preds_s * s_t4.sqrt() * c_t.sqrt()
    fg = F.mse_loss(fea_s * mask_fg.sqrt(), fea_t * mask_fg.sqrt(), reduction='sum') / len(mask_fg)
    bg = F.mse_loss(fea_s * mask_bg.sqrt(), fea_t * mask_bg.sqrt(), reduction='sum') / len(mask_bg)
    mask_loss = ((c_s - c_t).abs().sum() / (c_s.size(0) * c_s.size(-2) * c_s.size(-1))
                 + (s_s - s_t).abs().sum() / s_t.size(0))
    return level_weight * (loss.alpha * fg + loss.beta * bg), loss.delta * mask_loss


def official_reg(preds_s, preds_t, mask_fg, loss):
    """``PGDRegLoss.forward``: returns (gamma * fea, delta * mask)."""
    num, c, h, w = preds_s.shape
    preds_s = preds_s.permute(0, 2, 3, 1).reshape(-1, c)
    preds_t = preds_t.permute(0, 2, 3, 1).reshape(-1, c)
    target = mask_fg.reshape(-1)
    pos = target != 0
    preds_s, preds_t, target_w = preds_s[pos], preds_t[pos], target[pos]
    if preds_s.numel() == 0:
        return torch.tensor(0.), torch.tensor(0.)
    c_s = c * F.softmax(preds_s.abs() / loss.tau, dim=1)
    c_t = c * F.softmax(preds_t.abs() / loss.tau, dim=1)
    fea = (F.mse_loss(preds_s, preds_t, reduction='none') * c_t).mean(dim=1)
    fea = (fea * target_w).mean()
    mask = (c_s - c_t).abs().sum() / c_s.size(0)
    return loss.gamma * fea, loss.delta * mask


def official_loss(batch, loss, broadcast_bug=False, as_float=True):
    """The four terms, as floats (or, ``as_float=False``, as tensors that keep the graph to the
    student features)."""
    imp_cls = official_importance(batch, loss.xi_cls, loss.k)
    imp_reg = official_importance(batch, loss.xi_reg, loss.k)
    back = official_background(batch)
    out = dict.fromkeys(('fea_cls', 'att_cls', 'fea_reg', 'att_reg'), 0.0)
    start = 0
    for lvl, (h, w) in enumerate(batch.level_sizes):
        sl = slice(start, start + h * w)
        start += h * w
        as_map = lambda m: m[:, sl].reshape(-1, 1, h, w)      # noqa: E731
        student = (lambda f: f.detach()) if as_float else (lambda f: f)   # noqa: E731
        fea, att = official_cls(student(batch.student.cls_feat[lvl]),
                                batch.teacher.cls_feat[lvl].detach(), as_map(imp_cls),
                                as_map(back), loss, LEVEL_WEIGHTS[lvl], broadcast_bug)
        out['fea_cls'] += fea
        out['att_cls'] += att
        fea, att = official_reg(student(batch.student.reg_feat[lvl]),
                                batch.teacher.reg_feat[lvl].detach(), as_map(imp_reg), loss)
        out['fea_reg'] += fea
        out['att_reg'] += att
    return {key: float(val) for key, val in out.items()} if as_float else out


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize('seed,k,alpha', [(11, 5, 0.08), (12, 9, 0.04), (13, 30, 0.08)])
def test_default_equals_official_semantics(seed, k, alpha):
    batch = make_batch(GTS, seed=seed)
    loss = PGDLoss(alpha=alpha, k=k)
    assert loss.semantics == 'official' and loss.candidates == 'all_then_mask'
    got = loss(batch)
    ref = official_loss(batch, loss)
    for key, val in ref.items():
        assert val > 0, key
        assert float(got[f'loss_pgd_{key}']) == pytest.approx(val, rel=1e-5), key


def test_default_gradients_equal_official_reference():
    """The loss's written-out gradient (``weighted_squared_error``, folded ``C``, rows gathered
    from channels-last views) equals autograd through the official expressions, per term."""
    batch = make_batch(GTS, seed=21)
    loss = PGDLoss(k=9)
    got = loss(batch)
    ref = official_loss(batch, loss, as_float=False)
    feats = batch.student.cls_feat + batch.student.reg_feat
    for key, val in ref.items():
        g_got = torch.autograd.grad(got[f'loss_pgd_{key}'], feats, allow_unused=True,
                                    retain_graph=True)
        g_ref = torch.autograd.grad(val, feats, allow_unused=True, retain_graph=True)
        assert any(g is not None and bool(g.abs().sum() > 0) for g in g_ref), key
        for a, b in zip(g_got, g_ref):
            if b is None:
                assert a is None or not bool(a.any()), key
            else:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7 * float(b.abs().max()))


def test_official_differs_from_paper_reading():
    batch = make_batch(GTS, seed=14)
    off = PGDLoss(alpha=0.08, k=9)(batch)
    pap = PGDLoss(alpha=0.08, k=9, semantics='paper')(batch)
    for key in off:
        assert float(off[key]) != pytest.approx(float(pap[key]), rel=1e-3), key
    with pytest.raises(ValueError, match='semantics'):
        PGDLoss(semantics='code')


def test_level_weights_only_on_cls_feature_term():
    batch = make_batch(GTS, seed=15)
    weighted = PGDLoss(alpha=0.08, k=9)(batch)
    flat = PGDLoss(alpha=0.08, k=9, level_weights=(1.0, 1.0))(batch)
    assert float(weighted['loss_pgd_fea_cls']) != pytest.approx(float(flat['loss_pgd_fea_cls']))
    for key in ('loss_pgd_att_cls', 'loss_pgd_fea_reg', 'loss_pgd_att_reg'):
        assert float(weighted[key]) == pytest.approx(float(flat[key]), rel=1e-6), key


def test_reg_term_pools_the_batch_and_uses_raw_importance():
    """Official reg term = mean over the batch's positive locations, not a mean of per-image
    losses; and it weights by the raw importance (scale-free in the number of positives)."""
    batch = make_batch(GTS, seed=16)
    loss = PGDLoss(alpha=0.08, k=9, branches=('reg', ))
    full = float(loss(batch)['loss_pgd_fea_reg'])
    ref = official_loss(batch, PGDLoss(alpha=0.08, k=9))['fea_reg']
    assert full == pytest.approx(ref, rel=1e-5)
    imp = official_importance(batch, 0.6, 9)
    assert float(imp.max()) == pytest.approx(1.0, abs=0.2)          # raw, peak-normalised


def test_broadcast_bug_size_on_one_batch():
    """The official mask broadcast adds the other images' masks: the own-image part equals
    the fixed loss, the total is larger (printed for the record)."""
    gts = [[[4., 4., 40., 30.]], [[50., 2., 78., 40.]], [[20., 20., 60., 44.]],
           [[8., 30., 30., 46.], [60., 10., 76., 30.]]]
    batch = make_batch(gts, seed=17)
    loss = PGDLoss(alpha=0.08, k=9)
    fixed = official_loss(batch, loss)
    buggy = official_loss(batch, loss, broadcast_bug=True)
    got = loss(batch)
    assert float(got['loss_pgd_fea_cls']) == pytest.approx(fixed['fea_cls'], rel=1e-5)
    ratio = buggy['fea_cls'] / fixed['fea_cls']
    print(f'cls feature term on 4 images: fixed {fixed["fea_cls"]:.4g}, '
          f'official broadcast {buggy["fea_cls"]:.4g} (x{ratio:.2f})')
    assert 1.5 < ratio < 4.5
    for key in ('att_cls', 'fea_reg', 'att_reg'):
        assert buggy[key] == pytest.approx(fixed[key], rel=1e-6)


def _support(p):
    """Effective number of locations of a (B, 1, H, W) attention map (participation ratio)."""
    q = p.flatten(1) / p.flatten(1).sum(dim=1, keepdim=True)
    return float((1.0 / (q * q).sum(dim=1)).mean())


def test_attention_support_mean_vs_sum():
    """The printed Eq. 7 (channel sum) collapses onto a few locations for C = 256; the
    official channel mean spreads over most of the level."""
    gen = torch.Generator().manual_seed(18)
    feat = torch.relu(torch.randn(2, 256, 16, 16, generator=gen))
    mean_support = _support(spatial_attention(feat, 0.8, 'mean'))
    sum_support = _support(spatial_attention(feat, 0.8, 'sum'))
    print(f'effective support of P on a 16x16 level: mean {mean_support:.1f}, '
          f'sum {sum_support:.1f} of 256')
    assert mean_support > 0.9 * 256
    assert sum_support < 5
