"""Foreground-mask providers of PGD Table 5 (pgd.distill.foreground)."""
import math

import numpy as np
import pytest
import torch

from pgd.distill.foreground import STRATEGIES, build_strategy, register_strategy
from pgd.distill.foreground.kde import kde_importance
from pgd.distill.inputs import CapturedFeatures, DistillBatch, level_points, pad_gts
from pgd.distill.pgw import pgw_masks_from_batch, quality_scores

NAMES = ('box', 'boxgauss', 'centre', 'quality', 'topkeq', 'kde', 'pgw')


def grid_batch(gt_list, sizes=((12, 12), ), strides=(8, ), prob=None, boxes=None, seed=0,
               channels=3, num_classes=2, dtype=torch.float32, grad=False):
    """A DistillBatch on a small grid; teacher boxes default to the image's first GT (IoU 1)."""
    gen = torch.Generator().manual_seed(seed)
    points, _ = level_points(sizes, strides, dtype=dtype)
    n, b = points.shape[0], len(gt_list)
    gts = [torch.tensor(g, dtype=dtype).reshape(-1, 4) for g in gt_list]
    labels = [torch.zeros(len(g), dtype=torch.long) for g in gts]
    gt_bboxes, gt_labels, gt_valid = pad_gts(gts, labels)
    if prob is None:
        prob = torch.rand(b, n, 1, num_classes, generator=gen, dtype=dtype)
    if boxes is None:
        boxes = gt_bboxes[:, :1, None, :].expand(b, n, 1, 4).clone()
    prob, boxes = prob.clone(), boxes.clone()
    if grad:
        prob.requires_grad_(True)
        boxes.requires_grad_(True)

    def feats():
        return [torch.randn(b, channels, h, w, generator=gen, dtype=dtype).requires_grad_(grad)
                for h, w in sizes]

    cap = lambda: CapturedFeatures(neck=feats(), cls_feat=feats(), reg_feat=feats())  # noqa
    h_in, w_in = sizes[0][0] * strides[0], sizes[0][1] * strides[0]
    return DistillBatch(student=cap(), teacher=cap(), teacher_cls_prob=prob, teacher_boxes=boxes,
                        points=points, level_sizes=list(sizes), strides=list(strides),
                        gt_bboxes=gt_bboxes, gt_labels=gt_labels, gt_valid=gt_valid,
                        batch_input_shape=(h_in, w_in), img_shapes=[(h_in, w_in)] * b)


BIG = [4., 4., 84., 84.]     # centre (44, 44) is a lattice point of the 12x12 stride-8 grid
AXIS = 4 + 8 * torch.arange(12.)                  # location centres along x and y


def grid(mask):
    return mask.reshape(12, 12)


def inside_grid(box):
    xs = (AXIS > box[0]) & (AXIS < box[2])
    ys = (AXIS > box[1]) & (AXIS < box[3])
    return ys[:, None] & xs[None, :]


# ------------------------------------------------------------------ registry
def test_registry_names_and_errors():
    assert set(STRATEGIES) == set(NAMES)
    for name in NAMES:
        assert build_strategy(name).strategy_name == name
    assert type(build_strategy('BoxGauss')) is STRATEGIES['boxgauss']
    with pytest.raises(ValueError, match='unknown foreground strategy.*box, boxgauss, centre'):
        build_strategy('gauss')
    with pytest.raises(TypeError):
        build_strategy('box', k=3)
    with pytest.raises(ValueError, match='already registered'):
        @register_strategy('box')
        class Other:  # noqa: F841
            pass
    with pytest.raises(ValueError):
        build_strategy('topkeq', candidates='bogus')


# ------------------------------------------------------------------ hand-drawn expectations
def test_box_equal_inside():
    box = [10., 10., 44., 30.]                   # x in {12..36,44>x}: 12,20,28,36; y: 12,20,28
    batch = grid_batch([[box]])
    m = build_strategy('box')(batch, 0.8)
    exp = inside_grid(box).float()
    assert exp.sum() == 12
    torch.testing.assert_close(grid(m[0]), exp / 12)


def test_box_gauss_peak_and_symmetry():
    batch = grid_batch([[BIG]])
    m = grid(build_strategy('boxgauss')(batch, 0.6)[0])
    ins = inside_grid(BIG)                        # cols/rows 1..9, centre index 5
    assert ins.sum() == 81 and ((m > 0) == ins).all()
    assert divmod(int(m.argmax()), 12) == (5, 5)
    sub = m[1:10, 1:10]
    torch.testing.assert_close(sub, sub.flip(0))
    torch.testing.assert_close(sub, sub.flip(1))
    torch.testing.assert_close(sub, sub.T)        # square box -> isotropic
    # exact formula: sigma = 80 / 6, normalised by the 81 inside locations
    sig = 80 / 6
    assert float(m[5, 5]) == pytest.approx(1 / 81, rel=1e-6)
    assert float(m[5, 6]) == pytest.approx(math.exp(-8 ** 2 / (2 * sig ** 2)) / 81, rel=1e-5)
    assert float(m[2, 9]) == pytest.approx(     # (x, y) = (76, 20): dx = 32, dy = -24
        math.exp(-(32 ** 2 + 24 ** 2) / (2 * sig ** 2)) / 81, rel=1e-5)
    # anisotropic box: sigma follows each side
    box = [4., 4., 84., 44.]                      # w 80, h 40, centre (44, 24)
    m2 = grid(build_strategy('boxgauss', sigma_ratio=0.25)(grid_batch([[box]]), 0.8)[0])
    assert int((m2 > 0).sum()) == 36              # 9 columns x 4 rows inside
    # (x, y) = (52, 28): dx = 8 (sigma_x = 20), dy = 4 (sigma_y = 10)
    assert float(m2[3, 6]) == pytest.approx(
        math.exp(-0.5 * ((8 / 20) ** 2 + (4 / 10) ** 2)) / 36, rel=1e-5)
    torch.testing.assert_close(m2[2], m2[3])      # rows y = 20 and 28 are symmetric about 24


def test_centre_region_and_fallback():
    # big box: region |x - 44| <= 8, |y - 44| <= 8 -> rows/cols 4, 5, 6
    m = grid(build_strategy('centre')(grid_batch([[BIG]]), 0.8)[0])
    exp = torch.zeros(12, 12)
    exp[4:7, 4:7] = 1 / 9
    torch.testing.assert_close(m, exp)
    # small box: centre (23, 22), region +-1 px holds no location -> nearest (20, 20)
    small = [18., 17., 28., 27.]
    strat = build_strategy('centre')
    m = grid(strat(grid_batch([[small]]), 0.8)[0])
    exp = torch.zeros(12, 12)
    exp[2, 2] = 1.0
    torch.testing.assert_close(m, exp)
    # without the fallback the GT gets nothing
    m = build_strategy('centre', fallback_nearest=False)(grid_batch([[small]]), 0.8)
    assert (m == 0).all()
    # both at once, batched over GTs: max over GTs, then 1 / #non-zero
    m = grid(strat(grid_batch([[BIG, small]]), 0.8)[0])
    assert int((m > 0).sum()) == 10 and torch.allclose(m[m > 0], torch.tensor(0.1))


def _quality_batch():
    """p strictly decreasing with the flattened index inside BIG; teacher boxes == GT (IoU 1)."""
    n = 144
    prob = torch.zeros(1, n, 1, 2)
    prob[0, :, 0, 0] = torch.linspace(0.95, 0.05, n)
    return grid_batch([[BIG]], prob=prob)


def test_quality_is_q():
    batch = _quality_batch()
    for xi in (0.8, 0.6):
        m = grid(build_strategy('quality')(batch, xi)[0])
        p = grid(batch.teacher_cls_prob[0, :, 0, 0])
        exp = torch.where(inside_grid(BIG), p ** (1 - xi), torch.zeros(()))
        torch.testing.assert_close(m, exp / 81)
        q = quality_scores(batch.teacher_cls_prob, batch.teacher_boxes, batch.points,
                           batch.gt_bboxes, batch.gt_labels, batch.gt_valid, xi=xi)
        torch.testing.assert_close(m.flatten(), q[0, 0] / 81)


def test_topkeq_exact_top_k():
    batch = _quality_batch()
    ins = inside_grid(BIG).flatten()
    order = ins.nonzero().flatten()                # inside locations, p decreasing with index
    for k in (1, 7, 30, 200):
        m = build_strategy('topkeq', k=k)(batch, 0.8)[0]
        kk = min(k, 81)
        exp = torch.zeros(144)
        exp[order[:kk]] = 1.0 / kk
        torch.testing.assert_close(m, exp)
    # xi changes the ranking when IoUs differ: a location with high p but IoU 0.5
    batch2 = _quality_batch()
    j = int(order[40])
    batch2.teacher_cls_prob[0, j, 0, 0] = 1.0
    x1, y1, x2, y2 = BIG
    batch2.teacher_boxes[0, j, 0] = torch.tensor([x1, y1, x1 + 0.5 * (x2 - x1), y2])
    s = build_strategy('topkeq', k=1)
    # xi = 0: q = p -> j wins; xi = 0.8: q = 0.5^0.8 < 0.95^0.2 -> the first location wins
    assert int(s(batch2, 0.0)[0].nonzero()) == j
    assert int(s(batch2, 0.8)[0].nonzero()) == int(order[0])


def test_kde_peak_at_densest_point_and_matches_scipy():
    stats = pytest.importorskip('scipy.stats')
    # 7 selected points: a tight cluster around (44, 44) and two stragglers
    chosen = [(5, 5), (5, 4), (5, 6), (4, 5), (6, 6), (1, 9), (9, 1)]   # (row, col)
    prob = torch.full((1, 144, 1, 2), 0.01)
    for r, (i, j) in enumerate(chosen):
        prob[0, i * 12 + j, 0, 0] = 0.9 - 0.01 * r
    batch = grid_batch([[BIG]], prob=prob)
    k = len(chosen)
    m = grid(build_strategy('kde', k=k, ridge=0.0)(batch, 0.8)[0])
    sel = torch.zeros(12, 12, dtype=torch.bool)
    for i, j in chosen:
        sel[i, j] = True
    assert ((m != 0) == sel).all()                # zero off the top-K
    assert divmod(int(m.argmax()), 12) == (5, 5)  # densest point
    # equals scipy's Scott's-rule gaussian_kde, evaluated at the points, max-normalised
    xy = np.array([[4 + 8 * j, 4 + 8 * i] for i, j in chosen], dtype=np.float64).T
    dens = stats.gaussian_kde(xy)(xy)
    exp = dens / dens.max() / k
    got = np.array([float(m[i, j]) for i, j in chosen])
    np.testing.assert_allclose(got, exp, rtol=1e-5)
    # default ridge: essentially the same
    m_r = grid(build_strategy('kde', k=k)(batch, 0.8)[0])
    torch.testing.assert_close(m_r, m, rtol=1e-3, atol=1e-6)


def test_kde_degenerate_sets():
    points, _ = level_points([(4, 4)], [8], dtype=torch.float64)
    sel = torch.zeros(1, 3, 16, dtype=torch.bool)
    sel[0, 0, 5] = True                           # a single point -> 1
    sel[0, 1, [4, 5, 6]] = True                   # collinear -> finite, middle is densest
    imp = kde_importance(points, sel)             # GT 2: nothing selected -> zeros
    assert torch.isfinite(imp).all()
    assert float(imp[0, 0, 5]) == 1.0 and int((imp[0, 0] != 0).sum()) == 1
    assert float(imp[0, 1, 5]) == 1.0 and 0 < float(imp[0, 1, 4]) < 1
    assert float(imp[0, 1, 6]) == pytest.approx(float(imp[0, 1, 4]), rel=1e-12)
    assert (imp[0, 2] == 0).all()


def test_pgw_strategy_equals_pgw():
    batch = grid_batch([[[4., 4., 60., 50.], [30., 20., 90., 90.]], [[10., 40., 70., 80.]]],
                       sizes=((12, 12), (6, 6)), strides=(8, 16), seed=3,
                       boxes=None)
    # random teacher boxes around the location centres
    gen = torch.Generator().manual_seed(1)
    half = 6 + 20 * torch.rand(2, batch.points.shape[0], 1, 2, generator=gen)
    batch.teacher_boxes = torch.cat([batch.points[None, :, None] - half,
                                     batch.points[None, :, None] + half], -1)
    for k in (5, 30):
        s = build_strategy('pgw', k=k)
        exp = pgw_masks_from_batch(batch, (0.8, 0.6), k=k)
        got = s.masks(batch, (0.8, 0.6))
        for g, e in zip(got, exp):
            torch.testing.assert_close(g, e, rtol=0, atol=0)
        torch.testing.assert_close(s(batch, 0.6), exp[1], rtol=0, atol=0)


# ------------------------------------------------------------------ batching / edge cases
def _random_multi_batch(grad=False, dtype=torch.float32):
    gts = [[[4., 4., 40., 30.], [30., 10., 70., 46.], [60., 50., 63., 54.]],
           [], [[50., 2., 78., 40.]]]
    batch = grid_batch(gts, sizes=((6, 10), (3, 5)), strides=(8, 16), seed=2, grad=grad,
                       dtype=dtype)
    gen = torch.Generator().manual_seed(5)
    half = 6 + 20 * torch.rand(3, batch.points.shape[0], 1, 2, generator=gen, dtype=dtype)
    boxes = torch.cat([batch.points[None, :, None] - half, batch.points[None, :, None] + half],
                      -1)
    batch.teacher_boxes = boxes.requires_grad_(grad)
    return batch


def _single(batch, i):
    v = batch.gt_valid[i]
    gb, gl, gv = pad_gts([batch.gt_bboxes[i][v]], [batch.gt_labels[i][v]])
    return DistillBatch(student=batch.student, teacher=batch.teacher,
                        teacher_cls_prob=batch.teacher_cls_prob[i:i + 1],
                        teacher_boxes=batch.teacher_boxes[i:i + 1], points=batch.points,
                        level_sizes=batch.level_sizes, strides=batch.strides, gt_bboxes=gb,
                        gt_labels=gl, gt_valid=gv, batch_input_shape=batch.batch_input_shape)


@pytest.mark.parametrize('name', NAMES)
def test_batched_empty_images_detached_and_per_level_normalised(name):
    batch = _random_multi_batch(grad=True)
    s = build_strategy(name, **({'k': 9} if name in ('topkeq', 'kde', 'pgw') else {}))
    masks = s.masks(batch, (0.8, 0.6))
    assert len(masks) == 2
    level_index = torch.repeat_interleave(torch.arange(2), torch.tensor([60, 15]))
    for m in masks:
        assert m.shape == (3, 75) and m.dtype == torch.float32
        assert torch.isfinite(m).all() and (m >= 0).all() and not m.requires_grad
        assert (m[1] == 0).all()                  # image without GTs
        assert (m[0] != 0).any() and (m[2] != 0).any()
        # per image and level, the mask is I / #non-zero with max I <= 1
        for b in (0, 2):
            for lvl in range(2):
                ml = m[b, level_index == lvl]
                nz = int((ml != 0).sum())
                if nz:
                    assert float((ml * nz).max()) <= 1 + 1e-5
    # batching over images == one image at a time (GT padding is harmless)
    for i in range(3):
        single = s.masks(_single(batch, i), (0.8, 0.6))
        for m, ms in zip(masks, single):
            torch.testing.assert_close(m[i:i + 1], ms)
    # all images empty (G padded to 1 invalid GT)
    empty = grid_batch([[], []], sizes=((6, 10), (3, 5)), strides=(8, 16))
    for m in s.masks(empty, (0.8, )):
        assert m.shape == (2, 75) and (m == 0).all()
    # float64 inputs -> float64 masks
    m64 = s(_random_multi_batch(dtype=torch.float64), 0.8)
    assert m64.dtype == torch.float64 and torch.isfinite(m64).all()


@pytest.mark.parametrize('name', NAMES)
def test_pgd_loss_with_each_strategy(name):
    from pgd.distill.losses import PGDLoss
    batch = _random_multi_batch(grad=True)
    cfg = {'k': 9} if name in ('topkeq', 'kde', 'pgw') else {}
    loss = PGDLoss(k=9, fg_strategy=name, fg_cfg=cfg, level_weights=(1.0, 1.0),
                   branches=('cls', 'reg', 'neck'))
    out = loss(batch)
    assert set(out) == {f'loss_pgd_{t}_{b}' for t in ('fea', 'att')
                        for b in ('cls', 'reg', 'neck')}
    total = sum(out.values())
    vals = {key: v.detach() for key, v in out.items()}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in vals.values())
    assert float(vals['loss_pgd_fea_cls']) > 0 and float(vals['loss_pgd_fea_reg']) > 0
    total.backward()
    assert batch.student.cls_feat[0].grad is not None
    assert batch.teacher_cls_prob.grad is None and batch.teacher_boxes.grad is None
    if name == 'pgw':
        # PGDLoss's own PGW path equals the registry's 'pgw' strategy
        via_registry = PGDLoss(k=9, fg_strategy='topkeq', level_weights=(1.0, 1.0))
        via_registry._strategy = build_strategy('pgw', k=9)
        ref = PGDLoss(k=9, level_weights=(1.0, 1.0))(batch)
        for key, v in via_registry(batch).items():
            torch.testing.assert_close(v, ref[key])
