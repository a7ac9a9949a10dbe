"""Prediction-Guided Weighting (paper Eq. 1-4) against a per-GT loop reference and hand cases."""
import math

import numpy as np
import pytest
import torch

from pgd.distill.inputs import level_points, pad_gts
from pgd.distill.pgw import (DEFAULT_RIDGE, PredictionGuidedWeighting, fit_gaussian,
                             gaussian_importance, inside_pairs, normalise_per_level, pgw_masks,
                             points_inside_boxes, prediction_guided_weighting, quality_scores,
                             topk_candidates)
from pgw_reference import pgw_loop_torch, pgw_loop_torch_multi, pgw_reference

LAYOUTS = ('point', 'atss', 'retina')


def make_case(seed, dtype=torch.float64):
    """Random teacher predictions + padded GTs on a random FPN layout."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    layout = LAYOUTS[seed % 3]
    num_levels = 1 + seed % 5
    strides = [8 * 2 ** i for i in range(num_levels)]
    top = strides[-1]
    h_img = top * int(torch.randint(1, max(2, 257 // top), (1, ), generator=g))
    w_img = top * int(torch.randint(1, max(2, 257 // top), (1, ), generator=g))
    h_img, w_img = max(h_img, 48), max(w_img, 48)
    sizes = [(math.ceil(h_img / s), math.ceil(w_img / s)) for s in strides]
    points, level_index = level_points(sizes, strides, dtype=dtype)
    n = points.shape[0]
    stride_of = torch.tensor(strides, dtype=dtype)[level_index]            # (N,)
    b = 1 + seed % 3
    num_classes = 4
    if layout == 'point':
        a = 1
        ltrb = rnd(b, n, a, 4) * 4 * stride_of[None, :, None, None]
        ctr = points[None, :, None, :]
        boxes = torch.cat([ctr - ltrb[..., :2], ctr + ltrb[..., 2:]], dim=-1)
    else:
        if layout == 'atss':
            scales, ratios = [8.0], [1.0]
        else:
            scales, ratios = [4 * 2 ** (i / 3) for i in range(3)], [0.5, 1.0, 2.0]
        base = torch.tensor([[s * math.sqrt(1 / r), s * math.sqrt(r)] for s in scales
                             for r in ratios], dtype=dtype)                # (A, 2) (w, h)
        a = base.shape[0]
        wh = base[None, None] * stride_of[None, :, None, None] * torch.exp(
            0.4 * (rnd(b, n, a, 2) - 0.5))
        ctr = points[None, :, None, :] + 0.5 * wh * (rnd(b, n, a, 2) - 0.5)
        boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=-1)
    # some predictions far away (IoU exactly 0) and some zero probabilities -> q == 0 ties
    far = rnd(b, n, a) < 0.15
    boxes[far] = torch.tensor([-500., -500., -490., -490.], dtype=dtype)
    prob = rnd(b, n, a, num_classes)
    prob[rnd(b, n, a, num_classes) < 0.05] = 0.0
    gts, labels = [], []
    for i in range(b):
        ng = 0 if (seed % 7 == 3 and i == 0) else int(torch.randint(0, 6, (1, ), generator=g))
        side = torch.exp(rnd(ng, 2) * math.log(max(h_img, w_img) / 2.0)) * 2.0   # 2 px .. img
        c = rnd(ng, 2) * torch.tensor([w_img, h_img], dtype=dtype)
        box = torch.cat([c - side / 2, c + side / 2], dim=1)
        box[:, 0::2] = box[:, 0::2].clamp(0, w_img)
        box[:, 1::2] = box[:, 1::2].clamp(0, h_img)
        gts.append(box)
        labels.append(torch.randint(0, num_classes, (ng, ), generator=g))
    gt_bboxes, gt_labels, gt_valid = pad_gts(gts, labels)
    k = (1, 3, 9, 30)[seed % 4]
    xi = (0.8, 0.6, 0.5)[seed % 3 if seed % 2 else (seed + 1) % 3]
    # some GT edges exactly on location centres (strict inside test must exclude them)
    if gt_bboxes.numel() and seed % 4 == 1:
        gt_bboxes[..., 0] = torch.floor(gt_bboxes[..., 0] / 8) * 8 + 4
        gt_bboxes[..., 3] = torch.floor(gt_bboxes[..., 3] / 8) * 8 + 4
    case = dict(cls_prob=prob, boxes=boxes, points=points, level_index=level_index,
                num_levels=num_levels, gt_bboxes=gt_bboxes, gt_labels=gt_labels,
                gt_valid=gt_valid)
    case['_sizes'] = sizes
    return case, k, xi, layout


def _pop_sizes(case):
    case = dict(case)
    return case, case.pop('_sizes')


@pytest.mark.parametrize('seed', range(60))
def test_matches_loop_reference(seed):
    case, sizes = _pop_sizes(make_case(seed)[0])
    _, k, xi, _ = make_case(seed)
    runs = (('inside', 'sparse', None), ('inside', 'sparse', sizes), ('inside', 'dense', None),
            ('all_then_mask', 'dense', None), ('all_then_mask', 'sparse', sizes))
    refs = {}
    for cand, impl, lsz in runs:
        if cand not in refs:
            refs[cand] = pgw_reference(**case, xi=xi, k=k, candidates=cand)
        out = prediction_guided_weighting(**case, k=k, xi=xi, candidates=cand, impl=impl,
                                          level_sizes=lsz)
        assert out.dtype == torch.float64
        np.testing.assert_allclose(out.numpy(), refs[cand], rtol=1e-9, atol=1e-12,
                                   err_msg=f'{cand}/{impl}/{lsz}')


def _force_large_batch_paths(monkeypatch, on: bool):
    """Force (or disable) the paths of the sparse engine that only run on large batches: the
    top-K group pre-filter and the quality bounds (bound._bounded_quality and, on grid
    locations, bound._rect_bounded_quality)."""
    import pgd.distill.pgw.bound as bound_mod
    import pgd.distill.pgw.topk as topk_mod
    monkeypatch.setattr(topk_mod, '_TOPK_PREFILTER_MIN_CELLS', 0 if on else 1 << 40)
    monkeypatch.setattr(topk_mod, '_TOPK_PREFILTER_MIN_DENSITY', 0 if on else 1 << 40)
    monkeypatch.setattr(bound_mod, '_BOUND_MIN_CELLS', 0 if on else 1 << 40)
    monkeypatch.setattr(bound_mod, '_BOUND_MIN_CELLS_PER_GT', 0 if on else 1 << 40)


@pytest.mark.parametrize('prefilter', (False, True))
@pytest.mark.parametrize('seed', range(60))
def test_torch_loop_reference_matches_batched(seed, prefilter, monkeypatch):
    """The plain per-image, per-GT torch loop (the benchmark's speed baseline) gives the same
    masks as the batched PGW: bit-identical in float32 (the training dtype), to rounding in
    float64 (its Gaussian sums in a different order), and agrees with the NumPy reference.
    ``prefilter``: force the exact top-K pre-filter and the quality bound, which normally only
    run on large batches."""
    _force_large_batch_paths(monkeypatch, prefilter)
    case, k, xi, _ = make_case(seed)
    case, sizes = _pop_sizes(case)
    xis = (xi, 0.6)
    for cand in ('inside', 'all_then_mask'):
        ref_np = [pgw_reference(**case, xi=x, k=k, candidates=cand) for x in xis]
        loop64 = pgw_loop_torch_multi(**case, xis=xis, k=k, candidates=cand)
        for m, r in zip(loop64, ref_np):
            assert m.dtype == torch.float64
            np.testing.assert_allclose(m.numpy(), r, rtol=1e-9, atol=1e-12)
        impls = ((('sparse', sizes), ('sparse', None), ('dense', None)) if cand == 'inside'
                 else (('dense', None), ('sparse', sizes)))
        case32 = {key: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                  for key, v in case.items()}
        loop32 = pgw_loop_torch_multi(**case32, xis=xis, k=k, candidates=cand)
        for impl, lsz in impls:
            out64 = pgw_masks(**case, xis=xis, k=k, candidates=cand, impl=impl, level_sizes=lsz)
            for a, b in zip(out64, loop64):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
            out32 = pgw_masks(**case32, xis=xis, k=k, candidates=cand, impl=impl,
                              level_sizes=lsz)
            for a, b in zip(out32, loop32):
                assert a.dtype == b.dtype == torch.float32
                assert torch.equal(a, b), f'{cand}/{impl}/{lsz}'
        single = pgw_loop_torch(**case32, xi=xi, k=k, candidates=cand)
        assert torch.equal(single, loop32[0])


@pytest.mark.parametrize('seed', range(12))
def test_segment_topk_prefilter_is_exact(seed):
    """The pre-filtered segmented top-K selects exactly what a full stable sort selects, with
    heavy ties (few distinct values, zeros, NaN, -0.0) and segments of 0 .. 2000 cells."""
    from pgd.distill.pgw.topk import _segment_order, _segment_topk
    g = torch.Generator().manual_seed(seed)
    num_seg = 40
    counts = torch.randint(0, 2000, (num_seg, ), generator=g)
    counts[torch.rand(num_seg, generator=g) < 0.3] = torch.randint(0, 40, (1, ), generator=g)
    seg = torch.repeat_interleave(torch.arange(num_seg), counts)
    for dt in (torch.float32, torch.float64):
        q = torch.randint(0, 6 if seed % 2 else 1000, (seg.numel(), ), generator=g).to(dt) / 7
        q[torch.rand(seg.numel(), generator=g) < 0.01] = float('nan')
        q[torch.rand(seg.numel(), generator=g) < 0.01] = -0.0
        for k in (1, 3, 30):
            perm = _segment_order(seg, torch.nan_to_num(q, nan=0.0).clamp(min=0) + 0.0)
            start = torch.cumsum(counts, 0) - counts
            keep = (torch.arange(seg.numel()) - start[seg]) < k
            expected = perm[keep]
            for min_cells in (0, 1 << 40):     # with and without the pre-filter
                got = _segment_topk(seg, q.clone(), counts, k, prefilter_min_cells=min_cells)
                assert torch.equal(got, expected), (dt, k, min_cells)


@pytest.mark.parametrize('seed', range(6))
def test_segment_kth_floor_is_a_tight_lower_bound(seed):
    """The histogram bound is <= every segment's exact k-th largest value and at most one bin
    below it, in unsorted segments with ties, bin edges, 1.0, values above 1 and -0.0;
    segments with fewer than k values get the fill."""
    from pgd.distill.pgw.topk import _segment_kth_floor
    g = torch.Generator().manual_seed(seed)
    num_seg, bins = 30, 64
    counts = torch.randint(0, 300, (num_seg, ), generator=g)
    counts[:3] = torch.tensor([0, 5, 29])
    seg = torch.repeat_interleave(torch.arange(num_seg), counts)
    seg = seg[torch.randperm(seg.numel(), generator=g)]         # any order
    for dt in (torch.float32, torch.float64):
        v = torch.rand(seg.numel(), generator=g).to(dt)
        v[torch.rand(seg.numel(), generator=g) < 0.2] = 1.0
        v[torch.rand(seg.numel(), generator=g) < 0.2] = 17 / bins            # a bin edge
        v[torch.rand(seg.numel(), generator=g) < 0.05] = -0.0
        v[torch.rand(seg.numel(), generator=g) < 0.02] = 1.0 + 1e-6
        for k in (1, 7, 30):
            got = _segment_kth_floor(seg, v, num_seg, k, bins, fill=-1.0)
            for s in range(num_seg):
                vals = v[seg == s].clamp(max=1.0)
                if vals.numel() < k:
                    assert got[s] == -1.0
                    continue
                kth = vals.sort(descending=True).values[k - 1]
                assert got[s] <= kth, (dt, k, s)
                assert kth - got[s] <= 1.0 / bins, (dt, k, s)
                assert int((v[seg == s] >= got[s]).sum()) >= k

@pytest.mark.parametrize('seed', range(0, 60, 3))
def test_inside_pairs_grid_enumeration(seed):
    case, sizes = _pop_sizes(make_case(seed)[0])
    for dt in (torch.float64, torch.float32):
        pts, gt = case['points'].to(dt), case['gt_bboxes'].to(dt)
        dense = points_inside_boxes(pts, gt, case['gt_valid']).nonzero(as_tuple=True)
        grid = inside_pairs(pts, gt, case['gt_valid'], sizes)
        for a, b in zip(dense, grid):
            assert torch.equal(a, b)
    # points that are not a grid (shuffled) fall back to the dense test
    perm = torch.randperm(case['points'].shape[0], generator=torch.Generator().manual_seed(0))
    pts = case['points'][perm]
    dense = points_inside_boxes(pts, case['gt_bboxes'], case['gt_valid']).nonzero(as_tuple=True)
    for a, b in zip(dense, inside_pairs(pts, case['gt_bboxes'], case['gt_valid'], sizes)):
        assert torch.equal(a, b)


@pytest.mark.parametrize('seed', range(0, 60, 7))
def test_float32_matches_reference(seed):
    case, k, xi, _ = make_case(seed)
    case, sizes = _pop_sizes(case)
    ref = pgw_reference(**case, xi=xi, k=k)
    case32 = {key: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
              for key, v in case.items()}
    for lsz in (None, sizes):
        out = prediction_guided_weighting(**case32, k=k, xi=xi, level_sizes=lsz)
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-7)


def test_reference_cases_cover_layouts_and_edge_cases():
    """The random cases really contain all layouts, padding, empty images and q == 0 ties."""
    seen = set()
    n_pad = n_empty = n_few = 0
    for seed in range(60):
        case, k, xi, layout = make_case(seed)
        case, _ = _pop_sizes(case)
        seen.add((layout, case['cls_prob'].shape[2]))
        n_pad += int((~case['gt_valid']).any())
        n_empty += int((~case['gt_valid']).all(dim=1).any())
        inside = points_inside_boxes(case['points'], case['gt_bboxes'], case['gt_valid'])
        cnt = inside.sum(-1)[case['gt_valid']]
        n_few += int(((cnt > 0) & (cnt < k)).any())
    assert seen == {('point', 1), ('atss', 1), ('retina', 9)}
    assert n_pad > 10 and n_empty > 5 and n_few > 10


def _hand_case():
    # two levels: stride 8 (8x8) and stride 16 (4x4) on a 64x64 input
    sizes, strides = [(8, 8), (4, 4)], [8, 16]
    points, level_index = level_points(sizes, strides, dtype=torch.float64)
    n = points.shape[0]
    gt = torch.tensor([[[4., 4., 60., 60.]]], dtype=torch.float64)
    boxes = gt[:, :, None, :].expand(1, n, 1, 4).clone()          # every prediction == GT
    prob = torch.full((1, n, 1, 1), 0.1, dtype=torch.float64)
    top = {(0, 12., 12.): 0.9, (0, 20., 12.): 0.8, (1, 24., 40.): 0.7}
    idx = {}
    for (lvl, x, y), p in top.items():
        j = int(((points[:, 0] == x) & (points[:, 1] == y) & (level_index == lvl)).nonzero())
        prob[0, j, 0, 0] = p
        idx[(lvl, x, y)] = j
    return dict(cls_prob=prob, boxes=boxes, points=points, level_index=level_index,
                num_levels=2, gt_bboxes=gt, gt_labels=torch.zeros(1, 1, dtype=torch.long),
                gt_valid=torch.ones(1, 1, dtype=torch.bool)), idx


def test_hand_computed_case():
    case, idx = _hand_case()
    points = case['points']
    # quality: IoU == 1 everywhere, so q = p^(1 - xi) inside the box, 0 outside
    q = quality_scores(case['cls_prob'], case['boxes'], points, case['gt_bboxes'],
                       case['gt_labels'], case['gt_valid'], xi=0.8)
    inside = ((points[:, 0] > 4) & (points[:, 0] < 60) & (points[:, 1] > 4) & (points[:, 1] < 60))
    expected_q = torch.where(inside, case['cls_prob'][0, :, 0, 0] ** 0.2, torch.zeros(()))
    torch.testing.assert_close(q[0, 0], expected_q)
    assert int(inside.sum()) == 36 + 16
    # top-3 jointly over both levels
    sel = topk_candidates(q, inside[None, None], k=3)
    assert set(sel[0, 0].nonzero().flatten().tolist()) == set(idx.values())
    # Gaussian MLE: X = (12,12), (20,12), (24,40)
    mu, sigma = fit_gaussian(points, sel)
    torch.testing.assert_close(mu[0, 0], torch.tensor([56 / 3, 64 / 3], dtype=torch.float64))
    torch.testing.assert_close(
        sigma[0, 0], torch.tensor([[224 / 9, 448 / 9], [448 / 9, 1568 / 9]],
                                  dtype=torch.float64))
    # 3 affinely independent points in 2-D: every Mahalanobis^2 w.r.t. the MLE is exactly 2
    imp = gaussian_importance(points, mu, sigma, sel, ridge=0.0)
    torch.testing.assert_close(imp[0, 0][sel[0, 0]], torch.full((3, ), math.exp(-1.0),
                                                                dtype=torch.float64))
    assert (imp[0, 0][~sel[0, 0]] == 0).all()
    # with the default ridge, compare against an explicit inverse
    x = points[sel[0, 0]]
    s = sigma[0, 0] + DEFAULT_RIDGE * torch.eye(2, dtype=torch.float64)
    d = x - mu[0, 0]
    w = torch.exp(-0.5 * ((d @ torch.linalg.inv(s)) * d).sum(-1))
    assert torch.allclose(w, torch.full_like(w, math.exp(-1.0)), rtol=1e-3)
    # final mask: level 0 has 2 selected -> I / 2, level 1 has 1 -> I / 1
    for impl in ('sparse', 'dense'):
        m = prediction_guided_weighting(**case, k=3, xi=0.8, impl=impl)[0]
        expected = torch.zeros_like(m)
        sel_idx = sel[0, 0].nonzero().flatten()
        expected[sel_idx] = w / torch.where(case['level_index'][sel_idx] == 0, 2.0, 1.0)
        torch.testing.assert_close(m, expected)
        assert m.nonzero().numel() == 3


def test_xi_changes_selection_and_masks_share_iou():
    case, _ = _hand_case()
    # make IoU vary: shrink every predicted box towards its location by a location-dependent
    # amount, so quality depends on both terms
    pts = case['points']
    gen = torch.Generator().manual_seed(0)
    half = 4 + 24 * torch.rand(pts.shape[0], generator=gen, dtype=torch.float64)
    case['boxes'] = torch.cat([pts - half[:, None], pts + half[:, None]], -1)[None, :, None]
    case['cls_prob'] = torch.rand(case['cls_prob'].shape, generator=gen, dtype=torch.float64)
    m_cls, m_reg = pgw_masks(**case, xis=(0.8, 0.6), k=5)
    torch.testing.assert_close(m_cls, prediction_guided_weighting(**case, k=5, xi=0.8))
    torch.testing.assert_close(m_reg, prediction_guided_weighting(**case, k=5, xi=0.6))
    for xi, m in ((0.8, m_cls), (0.6, m_reg)):
        ref = pgw_reference(**case, xi=xi, k=5)
        np.testing.assert_allclose(m[0].numpy(), ref[0], rtol=1e-9, atol=1e-12)


def _grid_case(gt_list, sizes=((16, 32), (8, 16)), strides=(8, 16), num_classes=3, seed=0,
               boxes_equal_gt=False):
    points, level_index = level_points(sizes, strides)
    n = points.shape[0]
    gen = torch.Generator().manual_seed(seed)
    b = len(gt_list)
    prob = torch.rand(b, n, 1, num_classes, generator=gen)
    half = 4 + 12 * torch.rand(b, n, 1, 1, generator=gen)
    boxes = torch.cat([points[None, :, None] - half, points[None, :, None] + half], -1)
    gts = [torch.tensor(x, dtype=torch.float32).reshape(-1, 4) for x in gt_list]
    labels = [torch.zeros(len(x), dtype=torch.long) for x in gts]
    gt_bboxes, gt_labels, gt_valid = pad_gts(gts, labels)
    if boxes_equal_gt:
        boxes = gt_bboxes[:, :1, None, :].expand(b, n, 1, 4).clone()
    return dict(cls_prob=prob, boxes=boxes, points=points, level_index=level_index,
                num_levels=len(sizes), gt_bboxes=gt_bboxes, gt_labels=gt_labels,
                gt_valid=gt_valid)


def test_tall_thin_box_off_diagonal():
    # input 128 (H) x 256 (W); tall thin box near the right edge, far from the diagonal y = x
    box = [216., 4., 236., 124.]
    case = _grid_case([[box]])
    m = prediction_guided_weighting(**case, k=30, xi=0.8)[0]
    pts = case['points']
    inside = ((pts[:, 0] > box[0]) & (pts[:, 0] < box[2]) & (pts[:, 1] > box[1])
              & (pts[:, 1] < box[3]))
    assert m.sum() > 0
    assert (m[~inside] == 0).all()
    assert int((m > 0).sum()) == min(30, int(inside.sum()))
    # the transposed region (x <-> y) holds no weight
    swapped = ((pts[:, 1] > box[0]) & (pts[:, 1] < box[2]) & (pts[:, 0] > box[1])
               & (pts[:, 0] < box[3]))
    assert (m[swapped] == 0).all()


def test_degenerate_cases_are_finite():
    sizes, strides = ((16, 32), (8, 16)), (8, 16)
    gts = [
        [],                                   # image without GT
        [[100., 100., 102., 102.]],            # tiny: no location centre inside
        [[97., 33., 103., 39.]],              # exactly one location (100, 36) inside
        [[97., 10., 103., 120.]],              # one column (x=100 on P3) -> collinear
        [[90., 30., 110., 42.], [0., 0., 255., 127.], [60, 60, 61, 61]],  # mixed
    ]
    case = _grid_case(gts, sizes, strides)
    for cand in ('inside', 'all_then_mask'):
        for impl in (('sparse', 'dense') if cand == 'inside' else ('dense', )):
            for k in (1, 2, 30):
                m = prediction_guided_weighting(**case, k=k, xi=0.8, candidates=cand, impl=impl)
                assert torch.isfinite(m).all()
                assert (m >= 0).all()
                ref = pgw_reference(**case, xi=0.8, k=k, candidates=cand)
                np.testing.assert_allclose(m.numpy(), ref, rtol=1e-4, atol=1e-7)
    m = prediction_guided_weighting(**case, k=30, xi=0.8)
    assert (m[0] == 0).all() and (m[1] == 0).all()
    # single candidate: Sigma = 0 (+ ridge) -> I = 1, alone on its level -> M = 1
    assert int((m[2] > 0).sum()) == 1 and float(m[2].max()) == pytest.approx(1.0)
    # collinear column: all 13 inside locations of P3 selected, finite positive weights
    pts = case['points']
    inside3 = (pts[:, 0] > 97) & (pts[:, 0] < 103) & (pts[:, 1] > 10) & (pts[:, 1] < 120)
    assert int(inside3.sum()) == 14 and int((m[3] > 0).sum()) == 14
    assert (m[3][inside3] > 0).all()
    # singular Sigma handled by the ridge only: fit_gaussian gives 0 variance along x
    sel = points_inside_boxes(pts, case['gt_bboxes'][3:4], case['gt_valid'][3:4])
    _, sigma = fit_gaussian(pts, sel)
    assert float(sigma[0, 0, 0, 0]) == pytest.approx(0.0, abs=1e-6)


def test_all_then_mask_sparse_fills_zero_quality_slots_like_dense():
    """Fewer than K locations with a positive quality (tiny predicted boxes): the top-K over
    all locations is completed by the lowest-index zero-quality ones (top-left of P3), which
    enter the Gaussian fit -- the sparse path reproduces the dense one bit for bit."""
    case = _grid_case([[[40., 20., 120., 100.], [60., 30., 140., 110.]], [[8., 8., 30., 40.]]],
                      seed=5)
    pts = case['points']
    case['boxes'] = torch.cat([pts - 2.0, pts + 2.0], -1)[None, :, None].expand(
        2, -1, 1, -1).contiguous()
    sizes = ((16, 32), (8, 16))
    for k in (5, 30, 200):
        dense = pgw_masks(**case, xis=(0.8, 0.6), k=k, candidates='all_then_mask',
                          impl='dense')
        sparse = pgw_masks(**case, xis=(0.8, 0.6), k=k, candidates='all_then_mask',
                           impl='sparse', level_sizes=sizes)
        for a, b in zip(dense, sparse):
            assert torch.equal(a, b), k
            assert int((a > 0).sum()) > 0
    with pytest.raises(ValueError, match='grid'):
        pgw_masks(**case, xis=(0.8, ), candidates='all_then_mask', impl='sparse')


def test_all_then_mask_differs_from_inside():
    # GT covering 3 P3 locations (x = 20, 28, 36 at y = 12); predictions of 2 *outside*
    # neighbours equal the GT box with p = 1 (q = 1), inside ones have lower quality
    sizes, strides = ((4, 8), ), (8, )
    points, level_index = level_points(sizes, strides)
    n = points.shape[0]
    gt = torch.tensor([[[16., 8., 40., 16.]]])
    boxes = gt[:, :, None].expand(1, n, 1, 4).clone()
    prob = torch.full((1, n, 1, 1), 0.3)
    j = lambda x, y: int(((points[:, 0] == x) & (points[:, 1] == y)).nonzero())  # noqa: E731
    inside_ids = [j(20., 12.), j(28., 12.), j(36., 12.)]
    prob[0, inside_ids, 0, 0] = torch.tensor([0.5, 0.9, 0.6])
    outside_ids = [j(12., 12.), j(28., 20.)]
    prob[0, outside_ids, 0, 0] = 1.0                           # outside, raw q = 1
    case = dict(cls_prob=prob, boxes=boxes, points=points, level_index=level_index,
                num_levels=1, gt_bboxes=gt, gt_labels=torch.zeros(1, 1, dtype=torch.long),
                gt_valid=torch.ones(1, 1, dtype=torch.bool))
    m_in = prediction_guided_weighting(**case, k=3, xi=0.8, candidates='inside')[0]
    m_all = prediction_guided_weighting(**case, k=3, xi=0.8, candidates='all_then_mask')[0]
    assert set(m_in.nonzero().flatten().tolist()) == set(inside_ids)
    # the two outside locations take 2 of the 3 slots; only the best inside one survives
    assert m_all.nonzero().flatten().tolist() == [j(28., 12.)]
    # ... but the Gaussian was fitted on all three (official code): the survivor is one of
    # three points (12, 12), (28, 20), (28, 12), not the centre of a 1-point fit (weight 1)
    pts = torch.tensor([[12., 12.], [28., 20.], [28., 12.]], dtype=torch.float64)
    d = pts - pts.mean(0)
    sigma = d.T @ d / 3 + 1e-2 * torch.eye(2, dtype=torch.float64)
    w = torch.exp(-0.5 * d[2] @ torch.linalg.inv(sigma) @ d[2])
    assert float(m_all[j(28., 12.)]) == pytest.approx(float(w), rel=1e-6)
    assert float(w) < 0.9
    # with K >= #candidates both select the inside locations, with different fits
    m_all5 = prediction_guided_weighting(**case, k=5, xi=0.8, candidates='all_then_mask')[0]
    assert set(m_all5.nonzero().flatten().tolist()) == set(inside_ids)
    assert not torch.allclose(m_all5, m_in)


def test_max_over_gts_and_per_level_normalisation():
    imp = torch.tensor([[0.5, 0.0, 0.2, 0.0, 0.7, 0.0]])
    level_index = torch.tensor([0, 0, 0, 1, 1, 2])
    m = normalise_per_level(imp, level_index, 3)
    torch.testing.assert_close(m, torch.tensor([[0.25, 0.0, 0.1, 0.0, 0.7, 0.0]]))
    # overlapping GTs: a location selected by both gets the max of the two importances
    case = _grid_case([[[40., 20., 120., 100.], [60., 30., 140., 110.]]], seed=3)
    for impl in ('sparse', 'dense'):
        m = prediction_guided_weighting(**case, k=30, xi=0.6, impl=impl)
        ref = pgw_reference(**case, xi=0.6, k=30)
        np.testing.assert_allclose(m.numpy(), ref, rtol=1e-4, atol=1e-7)


def test_inputs_are_not_differentiated_and_strategy_object():
    case = _grid_case([[[40., 20., 120., 100.]], []], seed=1)
    case['cls_prob'].requires_grad_(True)
    case['boxes'].requires_grad_(True)
    m = prediction_guided_weighting(**case, k=9, xi=0.8)
    assert not m.requires_grad

    class _B:  # minimal DistillBatch stand-in
        teacher_cls_prob = case['cls_prob']
        teacher_boxes = case['boxes']
        points = case['points']
        level_sizes = [(16, 32), (8, 16)]
        gt_bboxes, gt_labels, gt_valid = case['gt_bboxes'], case['gt_labels'], case['gt_valid']

    strat = PredictionGuidedWeighting(k=9)
    torch.testing.assert_close(strat(_B(), 0.8), m)
    a, b = strat.masks(_B(), (0.8, 0.6))
    torch.testing.assert_close(a, m)
    with pytest.raises(ValueError):
        PredictionGuidedWeighting(candidates='bogus')


def test_chunked_quality_equals_unchunked():
    case, k, xi, _ = make_case(5)   # retina-like A = 9
    case, _ = _pop_sizes(case)
    args = [case[x] for x in ('cls_prob', 'boxes', 'points', 'gt_bboxes', 'gt_labels',
                              'gt_valid')]
    for inside_only in (True, False):
        full = quality_scores(*args, xi=xi, inside_only=inside_only)
        small = quality_scores(*args, xi=xi, inside_only=inside_only, chunk_elems=50)
        torch.testing.assert_close(full, small)


@pytest.mark.parametrize('seed', range(24))
def test_quality_bound_is_exact_with_ties_and_nan(seed, monkeypatch):
    """The IoU upper bound of the quality (only the cells that can make a top-K get their
    probability and powers) selects exactly what computing every quality selects: float32
    masks bit-identical to those without the bound and pre-filter and to the per-GT torch
    loop, with predicted boxes snapped to a coarse grid (many equal IoUs and qualities),
    probabilities 0 and 1, NaN boxes and probabilities, several xi (also outside the bound's
    range, where it is not used). With NaN inputs the comparison is with the sparse engine
    without the bound only: the sparse engine and the loop rank NaN qualities differently
    (NaN counts as 0 in the sparse engine), independently of the bound."""
    case, k, _, _ = make_case(seed)
    case, sizes = _pop_sizes(case)
    g = torch.Generator().manual_seed(1000 + seed)
    case = {key: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
            for key, v in case.items()}
    boxes, prob = case['boxes'].clone(), case['cls_prob'].clone()
    if seed % 2:
        boxes = torch.round(boxes / 8) * 8                       # ties of IoU
        prob = torch.round(prob * 4) / 4                         # ties of p, 0 and 1
    with_nan = seed % 4 >= 2
    if with_nan:
        boxes[torch.rand(boxes.shape[:3], generator=g) < 0.02] = float('nan')
        prob[torch.rand(prob.shape, generator=g) < 0.02] = float('nan')
    case.update(boxes=boxes, cls_prob=prob)
    xis = ((0.8, 0.6), (0.5, 1.0), (0.05, 0.3), (0.005, 0.3))[(seed // 2) % 4]
    for cand in ('inside', 'all_then_mask'):
        loop = pgw_loop_torch_multi(**case, xis=xis, k=k, candidates=cand)
        outs = {}
        for on in (False, True):
            _force_large_batch_paths(monkeypatch, on)
            outs[on] = pgw_masks(**case, xis=xis, k=k, candidates=cand, impl='sparse',
                                 level_sizes=sizes)
        for a, b, c in zip(outs[True], outs[False], loop):
            assert torch.equal(a, b), (cand, xis)
            if not with_nan:
                assert torch.equal(a, c), (cand, xis)


@pytest.mark.parametrize('num_cells', (1000, 1029, 4096 + 37))
def test_quality_of_a_subset_equals_the_full_computation(num_cells):
    """``pow`` differs by up to 1 ulp between torch's vectorised blocks and its scalar
    remainder loop; the bound's recomputation of the kept cells reproduces the full chunked
    computation bit for bit anyway (sparse._quality_at), for any subset."""
    from pgd.distill.pgw.quality import _cell_max_iou, _cell_quality
    from pgd.distill.pgw.quality import _quality_at
    g = torch.Generator().manual_seed(num_cells)
    num_n, num_g = 600, 7
    prob = torch.rand(1, num_n, 1, 3, generator=g)
    ctr = torch.rand(1, num_n, 1, 2, generator=g) * 100
    boxes = torch.cat([ctr - 10, ctr + 10 * torch.rand(1, num_n, 1, 2, generator=g) + 1], -1)
    gts = torch.rand(1, num_g, 2, generator=g) * 100
    gt_bboxes = torch.cat([gts, gts + 20], -1)
    labels = torch.randint(0, 3, (1, num_g), generator=g)
    seg = torch.sort(torch.randint(0, num_g, (num_cells, ), generator=g)).values
    bn = torch.randint(0, num_n, (num_cells, ), generator=g)
    for chunk in (128, 1024):
        full = _cell_quality(prob, boxes, gt_bboxes, labels, seg, bn, (0.8, 0.6), chunk)
        for frac in (0.05, 0.5, 1.0):
            cells = (torch.rand(num_cells, generator=g) < frac).nonzero().squeeze(1)
            got = _quality_at(prob, boxes, gt_bboxes, labels, seg, bn, (0.8, 0.6), cells, chunk)
            assert torch.equal(got, full[:, cells]), (chunk, frac)
            # the same with the IoU of every cell given (gathered instead of recomputed)
            got = _quality_at(prob, boxes, gt_bboxes, labels, seg, bn, (0.8, 0.6), cells, chunk,
                              iou=_cell_max_iou(boxes, gt_bboxes, seg, bn, chunk))
            assert torch.equal(got, full[:, cells]), (chunk, frac)


def _level_sized_case(seed):
    """Predicted boxes about 8 strides wide on each level (as a trained FPN detector's), GTs
    from 6 px to most of the image, half of them degenerate or NaN in places: the box-area
    bound then drops whole (GT, level) rectangles -- the fine levels of the big GTs."""
    g = torch.Generator().manual_seed(seed)
    strides = (8, 16, 32, 64)
    sizes = [(math.ceil(256 / s), math.ceil(384 / s)) for s in strides]
    points, level_index = level_points(sizes, strides)
    n, b, num_g = points.shape[0], 2, 9
    stride_of = torch.tensor(strides, dtype=torch.float32)[level_index]
    wh = 8 * stride_of[None, :, None, None] * torch.exp(0.5 * (torch.rand(b, n, 1, 2,
                                                                          generator=g) - 0.5))
    ctr = points[None, :, None] + 0.3 * wh * (torch.rand(b, n, 1, 2, generator=g) - 0.5)
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], -1)
    prob = torch.rand(b, n, 1, 3, generator=g) ** 2
    if seed % 2:
        boxes = torch.round(boxes / 8) * 8                       # ties of IoU and quality
        prob = torch.round(prob * 4) / 4
    if seed % 3 == 2:
        boxes[0, :40] = float('nan')                             # NaN boxes on level 0
        boxes[1, 5:9, 0, 2] = boxes[1, 5:9, 0, 0]                # zero-area boxes
    side = torch.exp(math.log(6) + torch.rand(b, num_g, 2, generator=g) * math.log(240 / 6))
    c = torch.rand(b, num_g, 2, generator=g) * torch.tensor([384.0, 256.0])
    gt = torch.cat([c - side / 2, c + side / 2], -1)
    labels = torch.randint(0, 3, (b, num_g), generator=g)
    case = dict(cls_prob=prob, boxes=boxes, points=points, level_index=level_index,
                num_levels=len(strides), gt_bboxes=gt, gt_labels=labels,
                gt_valid=torch.rand(b, num_g, generator=g) < 0.9)
    return case, sizes


@pytest.mark.parametrize('seed', range(8))
def test_rect_area_bound_drops_rectangles_and_is_exact(seed, monkeypatch):
    """Where the box-area bound drops whole (GT, level) rectangles (bound._rect_bounded_quality,
    checked to drop some here), the masks are bit-identical to computing every cell and to the
    per-GT torch loop, for both candidate rules, with ties, zero-area and NaN boxes."""
    import pgd.distill.pgw.bound as bound_mod
    case, sizes = _level_sized_case(seed)
    dropped = []
    real_rows = bound_mod._rect_rows

    def counting_rows(rects, rows=None, with_pos=False):
        if rows is not None and with_pos:
            dropped.append(int(((rects['rows'] - rows) * rects['width']).sum()))
        return real_rows(rects, rows, with_pos)

    monkeypatch.setattr(bound_mod, '_rect_rows', counting_rows)
    for cand in ('inside', 'all_then_mask'):
        outs = {}
        for on in (False, True):
            _force_large_batch_paths(monkeypatch, on)
            outs[on] = pgw_masks(**case, xis=(0.8, 0.6), k=9, candidates=cand, impl='sparse',
                                 level_sizes=sizes)
        loop = pgw_loop_torch_multi(**case, xis=(0.8, 0.6), k=9, candidates=cand)
        for a, b, c in zip(outs[True], outs[False], loop):
            assert torch.equal(a, b), cand
            if seed % 3 != 2:                    # the loop ranks NaN qualities differently
                assert torch.equal(a, c), cand
    assert dropped and all(d > 0 for d in dropped), dropped


@pytest.mark.parametrize('cand', ['inside', 'all_then_mask'])
def test_auto_impl_is_sparse_on_cpu_and_dense_elsewhere(cand, monkeypatch):
    """impl='auto' picks the sparse engine only on the device types listed in
    ``masks._AUTO_SPARSE_DEVICES`` (measured on a GPU: dense is faster there); the choice never
    changes the masks. Without a GPU, 'elsewhere' is simulated by emptying the list."""
    from pgd.distill.pgw import masks as masks_mod
    case, k, xi, _ = make_case(0, dtype=torch.float32)
    case, sizes = _pop_sizes(case)
    calls = []
    for name in ('_sparse_pgw', '_sparse_pgw_all', '_dense_pgw'):
        real = getattr(masks_mod, name)
        monkeypatch.setattr(masks_mod, name,
                            lambda *a, _r=real, _n=name, **kw: calls.append(_n) or _r(*a, **kw))
    on_cpu = pgw_masks(**case, xis=(xi, ), k=k, candidates=cand, level_sizes=sizes)
    assert calls == ['_sparse_pgw' if cand == 'inside' else '_sparse_pgw_all']
    monkeypatch.setattr(masks_mod, '_AUTO_SPARSE_DEVICES', ())
    calls.clear()
    elsewhere = pgw_masks(**case, xis=(xi, ), k=k, candidates=cand, level_sizes=sizes)
    assert calls == ['_dense_pgw']
    assert torch.equal(on_cpu[0], elsewhere[0])
