"""Tests of the competitor distillation losses (FGD, FGFI, DeFeat, FRS, FKD).

Each loss is checked against a direct computation written here with explicit loops / plain
formulas, its masks against hand-drawn expectations, and for: gradients only on student tensors
and the loss's own modules, finiteness on images without GTs, and student/teacher width
mismatch where the method has an adaptation layer.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdet.registry import MODELS
from pgd.distill.inputs import CapturedFeatures, DistillBatch, level_points, pad_gts
from pgd.distill.losses.defeat_loss import DeFeatLoss, defeat_level_assignment, defeat_masks
from pgd.distill.losses.fgd_loss import FGD_PRESETS, FGDLoss, fgd_masks
from pgd.distill.losses.fgfi_loss import FGFILoss, fgfi_masks
from pgd.distill.losses.fkd_loss import FKDLoss
from pgd.distill.losses.frs_loss import FRSLoss

SIZES = [(8, 8), (4, 4)]
STRIDES = [8, 16]
NUM_CLS = 3
DT = torch.float64


def make_batch(boxes_per_image, cs=4, ct=4, sizes=SIZES, strides=STRIDES, anchors=1,
               seed=0, teacher_grad=True, student=None, teacher=None):
    """A tiny DistillBatch; teacher tensors get requires_grad so leaks would be visible."""
    g = torch.Generator().manual_seed(seed)
    b = len(boxes_per_image)

    def feats(c, grad, given):
        if given is not None:
            f = [x.clone().detach().requires_grad_(grad) for x in given]
        else:
            f = [torch.randn(b, c, h, w, generator=g, dtype=DT).requires_grad_(grad)
                 for h, w in sizes]
        return CapturedFeatures(neck=f, cls_feat=f, reg_feat=f)

    pts, _ = level_points(sizes, strides, dtype=DT)
    boxes = [torch.tensor(bb, dtype=DT).reshape(-1, 4) for bb in boxes_per_image]
    labels = [torch.zeros(len(bb), dtype=torch.long) for bb in boxes]
    gt_bboxes, gt_labels, gt_valid = pad_gts(boxes, labels)
    n = pts.shape[0]
    t_logits = [torch.randn(b, anchors * NUM_CLS, h, w, generator=g, dtype=DT)
                .requires_grad_(teacher_grad) for h, w in sizes]
    s_logits = [torch.randn(b, anchors * NUM_CLS, h, w, generator=g, dtype=DT)
                .requires_grad_(True) for h, w in sizes]
    return DistillBatch(
        student=feats(cs, True, student), teacher=feats(ct, teacher_grad, teacher),
        teacher_cls_prob=torch.rand(b, n, anchors, NUM_CLS, generator=g, dtype=DT),
        teacher_boxes=torch.rand(b, n, anchors, 4, generator=g, dtype=DT),
        points=pts, level_sizes=list(sizes), strides=list(strides), gt_bboxes=gt_bboxes,
        gt_labels=gt_labels, gt_valid=gt_valid,
        batch_input_shape=(sizes[0][0] * strides[0], sizes[0][1] * strides[0]),
        teacher_cls_logits=t_logits, student_cls_logits=s_logits)


def teacher_tensors(batch):
    return list(batch.teacher.neck) + list(batch.teacher_cls_logits)


def student_tensors(batch):
    return list(batch.student.neck) + list(batch.student_cls_logits)


def total(out):
    return sum(out.values())


def check_grad_flow(module, batch, expect_student_logits=False):
    for p in module.parameters():
        p.grad = None
    total(module(batch)).backward()
    for t in teacher_tensors(batch):
        assert t.grad is None, 'gradient leaked into a teacher tensor'
    for s in batch.student.neck:
        assert s.grad is not None and torch.isfinite(s.grad).all()
    if expect_student_logits:
        assert all(s.grad is not None for s in batch.student_cls_logits)
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and any(gr is not None and gr.abs().sum() > 0 for gr in grads)


def adapt_out(conv, x):
    return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)


TWO_IMAGES = [[[16., 16., 40., 48.]], [[0., 0., 24., 16.], [40., 8., 64., 40.]]]
NO_GT = [[], []]


# --------------------------------------------------------------------------------------- FGD
def test_fgd_mask_single_box_hand_drawn():
    boxes, _, valid = pad_gts([torch.tensor([[16., 16., 40., 48.]])], [torch.tensor([0])])
    fg, bg = fgd_masks(boxes, valid, (8, 8), 8.)
    # x: floor(16/8)=2 .. ceil(40/8)=5 inclusive, y: 2 .. ceil(48/8)=6 inclusive -> 4 x 5 cells
    exp = torch.zeros(8, 8)
    exp[2:7, 2:6] = 1. / 20.
    assert torch.allclose(fg[0], exp)
    exp_bg = (exp == 0).float() / 44.
    assert torch.allclose(bg[0], exp_bg)
    fg2, _ = fgd_masks(boxes, valid, (8, 8), 8., inclusive_end=False)
    exp2 = torch.zeros(8, 8)
    exp2[2:6, 2:5] = 1. / 12.
    assert torch.allclose(fg2[0], exp2)


def test_fgd_mask_overlap_takes_max_and_padding_ignored():
    boxes, _, valid = pad_gts([torch.tensor([[0., 0., 32., 32.], [24., 24., 40., 40.]]),
                               torch.tensor([[8., 8., 16., 16.]])],
                              [torch.tensor([0, 0]), torch.tensor([0])])
    fg, bg = fgd_masks(boxes, valid, (8, 8), 8.)
    exp = torch.zeros(8, 8)
    for (x1, y1, x2, y2) in [(0, 0, 32, 32), (24, 24, 40, 40)]:
        c0, c1 = math.floor(x1 / 8), math.ceil(x2 / 8)
        r0, r1 = math.floor(y1 / 8), math.ceil(y2 / 8)
        a = 1. / ((c1 - c0 + 1) * (r1 - r0 + 1))
        for i in range(r0, r1 + 1):
            for j in range(c0, c1 + 1):
                if i < 8 and j < 8:
                    exp[i, j] = max(exp[i, j], a)
    assert torch.allclose(fg[0], exp)
    assert abs(fg[0, 3, 3].item() - 1. / 9.) < 1e-7  # overlap -> smaller box's weight
    # image 1 has one real box and one padding row (zeros): only the real box is marked
    exp1 = torch.zeros(8, 8)
    exp1[1:3, 1:3] = 1. / 4.
    assert torch.allclose(fg[1], exp1)
    assert torch.allclose(bg.flatten(1).sum(1), torch.ones(2, dtype=bg.dtype))


def _gc_direct(block, x):
    w_k, b_k = block.conv_mask.weight[:, :, 0, 0], block.conv_mask.bias  # (1, C), (1,)
    conv1, ln, _, conv2 = block.channel_add
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        f = x[b].reshape(x.shape[1], -1)  # (C, HW)
        logits = (w_k @ f)[0] + b_k[0]
        wts = torch.exp(logits - logits.max())
        wts = wts / wts.sum()
        ctx = (f * wts).sum(1)  # (C,)
        h = conv1.weight[:, :, 0, 0] @ ctx + conv1.bias
        h = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + ln.eps)
        h = torch.relu(h * ln.weight[:, 0, 0] + ln.bias[:, 0, 0])
        add = conv2.weight[:, :, 0, 0] @ h + conv2.bias
        out[b] = x[b] + add[:, None, None]
    return out


def _fgd_direct(module, batch):
    temp = module.temp
    nb = batch.num_images
    fg_l = bg_l = at_l = gl_l = 0.
    for lvl, ((h, w), s_) in enumerate(zip(batch.level_sizes, batch.strides)):
        s = batch.student.neck[lvl].detach()
        if module.align is not None:
            s = adapt_out(module.align[lvl], s)
        t = batch.teacher.neck[lvl].detach()
        c = t.shape[1]
        for b in range(nb):
            # masks by explicit loops over boxes and cells
            fg = torch.zeros(h, w, dtype=DT)
            for g in range(batch.gt_bboxes.shape[1]):
                if not batch.gt_valid[b, g]:
                    continue
                x1, y1, x2, y2 = batch.gt_bboxes[b, g].tolist()
                c0, c1 = math.floor(x1 / s_), math.ceil(x2 / s_)
                r0, r1 = math.floor(y1 / s_), math.ceil(y2 / s_)
                a = 1. / ((c1 - c0 + 1) * (r1 - r0 + 1))
                for i in range(max(r0, 0), min(r1, h - 1) + 1):
                    for j in range(max(c0, 0), min(c1, w - 1) + 1):
                        fg[i, j] = max(fg[i, j].item(), a)
            bg = (fg == 0).to(DT)
            bg = bg / bg.sum() if bg.sum() > 0 else bg

            def att(x):
                m = x.abs().mean(0)
                sa = h * w * torch.exp(m / temp) / torch.exp(m / temp).sum()
                cm = x.abs().mean((1, 2))
                ca = c * torch.exp(cm / temp) / torch.exp(cm / temp).sum()
                return sa, ca

            t_sa, t_ca = att(t[b])
            s_sa, s_ca = att(s[b])
            for k in range(c):
                for i in range(h):
                    for j in range(w):
                        e = (s[b, k, i, j] - t[b, k, i, j]) ** 2 * t_sa[i, j] * t_ca[k]
                        fg_l = fg_l + e * fg[i, j]
                        bg_l = bg_l + e * bg[i, j]
            at_l = at_l + (s_ca - t_ca).abs().sum() + (s_sa - t_sa).abs().sum()
        gs = _gc_direct(module.gc_student[lvl], s)
        gt = _gc_direct(module.gc_teacher[lvl], t)
        gl_l = gl_l + ((gs - gt) ** 2).sum()
    return {'loss_fgd_fg': module.alpha_fgd * fg_l / nb,
            'loss_fgd_bg': module.beta_fgd * bg_l / nb,
            'loss_fgd_att': module.gamma_fgd * at_l / nb,
            'loss_fgd_global': module.lambda_fgd * gl_l / nb}


@pytest.mark.parametrize('cs', [4, 6])
def test_fgd_matches_direct_computation(cs):
    torch.manual_seed(1)
    m = FGDLoss(cs, 4, num_levels=2).double()
    with torch.no_grad():  # make the GcBlocks non-trivial (last conv is zero-initialised)
        for blk in list(m.gc_student) + list(m.gc_teacher):
            blk.channel_add[-1].weight.normal_()
            blk.channel_add[-1].bias.normal_()
    batch = make_batch(TWO_IMAGES, cs=cs, ct=4)
    out = m(batch)
    ref = _fgd_direct(m, batch)
    assert set(out) == set(ref)
    for k in out:
        assert torch.allclose(out[k], ref[k], rtol=1e-6, atol=1e-12), k


def test_fgd_defaults_presets_and_registry():
    m = MODELS.build(dict(type='FGDLoss', student_channels=4, teacher_channels=4))
    assert (m.temp, m.alpha_fgd, m.beta_fgd, m.gamma_fgd, m.lambda_fgd) == \
        (0.5, 1e-3, 5e-4, 5e-4, 5e-6)
    f = FGDLoss(4, 4, preset='fcos')
    assert (f.temp, f.alpha_fgd, f.beta_fgd, f.gamma_fgd, f.lambda_fgd) == \
        (0.8, 1.6e-3, 8e-4, 8e-4, 8e-6)
    assert FGDLoss(4, 4, preset='fcos', temp=0.3).temp == 0.3
    assert set(FGD_PRESETS) >= {'retinanet', 'fcos', 'gfl', 'atss', 'ddod', 'autoassign'}
    assert m.align is None and FGDLoss(4, 8).align is not None


def test_fgd_gradients_only_to_student_and_own_modules():
    m = FGDLoss(4, 6, num_levels=2).double()
    batch = make_batch(TWO_IMAGES, cs=4, ct=6)
    check_grad_flow(m, batch)
    # GcBlock of the teacher side is trainable -> receives gradient
    assert m.gc_teacher[0].channel_add[-1].weight.grad is not None
    assert m.align[0].weight.grad is not None


def test_fgd_is_per_image_mean_and_handles_no_gt():
    m = FGDLoss(4, 4, num_levels=2).double()
    batch = make_batch(TWO_IMAGES, seed=3)
    both = m(batch)
    singles = []
    for b in range(2):
        sb = make_batch([TWO_IMAGES[b]], student=[f[b:b + 1] for f in batch.student.neck],
                        teacher=[f[b:b + 1] for f in batch.teacher.neck])
        singles.append(m(sb))
    for k in both:
        assert torch.allclose(both[k], (singles[0][k] + singles[1][k]) / 2, rtol=1e-9)
    out = m(make_batch(NO_GT))
    assert all(torch.isfinite(v) for v in out.values())
    assert out['loss_fgd_fg'].item() == 0.


# -------------------------------------------------------------------------------------- FGFI
def _anchors_direct(size, stride, octave_base_scale, scales_per_octave, ratios, offset=0.5):
    """MMDetection AnchorGenerator semantics, written out: list over cells of A boxes."""
    h, w = size
    out = []
    scales = [octave_base_scale * 2 ** (k / scales_per_octave) for k in range(scales_per_octave)]
    for i in range(h):
        for j in range(w):
            cx, cy = (j + offset) * stride, (i + offset) * stride
            cell = []
            for r in ratios:
                for sc in scales:
                    hr = math.sqrt(r)
                    ws, hs = stride * sc / hr, stride * sc * hr
                    cell.append((cx - ws / 2, cy - hs / 2, cx + ws / 2, cy + hs / 2))
            out.append(cell)
    return out


def _iou(a, b):
    iw = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua


def _fgfi_mask_direct(boxes, size, stride, obs, spo, ratios, psi=0.5):
    h, w = size
    anchors = _anchors_direct(size, stride, obs, spo, ratios)
    mask = torch.zeros(h, w, dtype=torch.bool)
    for box in boxes:
        ious = [[_iou(a, box) for a in cell] for cell in anchors]
        mx = max(max(c) for c in ious)
        for n, cell in enumerate(ious):
            if mx > 0 and any(v > psi * mx for v in cell):
                mask[n // w, n % w] = True
    return mask


def test_fgfi_mask_single_box_hand_drawn():
    # 16x16 anchors (octave_base_scale 2 x stride 8) on an 8x8 level, GT 32x32 at (16, 16):
    # the 2x2 fully-inside anchors have IoU .25 (the max); threshold .125 keeps the 4x4 block.
    m = FGFILoss(4, 4, num_levels=1, octave_base_scale=2, scales_per_octave=1,
                 anchor_ratios=[1.0])
    batch = make_batch([[[16., 16., 48., 48.]]], sizes=[(8, 8)], strides=[8])
    mask = m.get_masks(batch)[0][0]
    exp = torch.zeros(8, 8, dtype=torch.bool)
    exp[2:6, 2:6] = True
    assert torch.equal(mask, exp)
    assert torch.equal(mask, _fgfi_mask_direct([(16., 16., 48., 48.)], (8, 8), 8, 2, 1, [1.0]))


def test_fgfi_mask_retinanet_anchors_match_explicit_iou():
    boxes = [(5., 9., 37., 30.), (30., 20., 62., 60.)]
    m = FGFILoss(4, 4, num_levels=2, preset='retinanet', octave_base_scale=1)
    batch = make_batch([boxes], sizes=SIZES, strides=STRIDES)
    masks = m.get_masks(batch)
    for lvl, (size, stride) in enumerate(zip(SIZES, STRIDES)):
        exp = _fgfi_mask_direct(boxes, size, stride, 1, 3, [0.5, 1.0, 2.0])
        assert torch.equal(masks[lvl][0], exp)
        assert exp.any()


def test_fgfi_mask_max_over_all_levels():
    boxes = [(5., 9., 37., 30.)]
    m = FGFILoss(4, 4, num_levels=2, octave_base_scale=2, max_iou_over='all')
    masks = m.get_masks(make_batch([boxes]))
    per_level = [[[_iou(a, boxes[0]) for a in cell]
                  for cell in _anchors_direct(size, stride, 2, 1, [1.0])]
                 for size, stride in zip(SIZES, STRIDES)]
    mx = max(v for lvl in per_level for cell in lvl for v in cell)
    for lvl, (h, w) in enumerate(SIZES):
        exp = torch.tensor([any(v > 0.5 * mx for v in cell) for cell in per_level[lvl]])
        assert torch.equal(masks[lvl][0].flatten(), exp)


def test_fgfi_mask_uses_mmdet_anchor_generator_order():
    from mmdet.models.task_modules.prior_generators import AnchorGenerator
    gen = AnchorGenerator(strides=[8], ratios=[0.5, 1., 2.], octave_base_scale=4,
                          scales_per_octave=3, center_offset=0.5)
    anchors = gen.grid_priors([(3, 2)], device='cpu')
    boxes, _, valid = pad_gts([torch.tensor([[0., 0., 30., 20.]])], [torch.tensor([0])])
    masks = fgfi_masks(boxes, valid, anchors, [(3, 2)], gen.num_base_priors)
    exp = _fgfi_mask_direct([(0., 0., 30., 20.)], (3, 2), 8, 4, 3, [0.5, 1., 2.])
    assert torch.equal(masks[0][0], exp)


@pytest.mark.parametrize('normalize', ['batch', 'image'])
@pytest.mark.parametrize('cs', [4, 6])
def test_fgfi_matches_direct_computation(normalize, cs):
    torch.manual_seed(2)
    m = FGFILoss(cs, 4, num_levels=2, normalize=normalize, octave_base_scale=2).double()
    batch = make_batch(TWO_IMAGES, cs=cs)
    out = m(batch)
    assert set(out) == {'loss_fgfi_feat'}
    num = [0., 0.]
    cnt = [0, 0]
    for lvl, (size, stride) in enumerate(zip(SIZES, STRIDES)):
        s = F.relu(adapt_out(m.adapt[lvl], batch.student.neck[lvl].detach()))  # conv + ReLU
        t = batch.teacher.neck[lvl].detach()
        for b, boxes in enumerate(TWO_IMAGES):
            mask = _fgfi_mask_direct(boxes, size, stride, 2, 1, [1.0])
            for i in range(size[0]):
                for j in range(size[1]):
                    if mask[i, j]:
                        cnt[b] += 1
                        num[b] += ((s[b, :, i, j] - t[b, :, i, j]) ** 2).sum()
    if normalize == 'batch':
        ref = (num[0] + num[1]) / (2 * (cnt[0] + cnt[1]))
    else:
        ref = sum(num[b] / (2 * cnt[b]) for b in range(2)) / 2
    assert torch.allclose(out['loss_fgfi_feat'], 0.01 * ref, rtol=1e-9)


def test_fgfi_gradients_no_gt_and_defaults():
    m = FGFILoss(4, 6, num_levels=2).double()
    assert m.loss_weight == 0.01 and m.psi == 0.5
    assert m.anchor_cfg == dict(anchor_ratios=(1.0,), octave_base_scale=8, scales_per_octave=1)
    batch = make_batch(TWO_IMAGES, cs=4, ct=6)
    check_grad_flow(m, batch)
    out = m(make_batch(NO_GT, cs=4, ct=6))
    assert torch.isfinite(out['loss_fgfi_feat']) and out['loss_fgfi_feat'].item() == 0.
    total(out).backward()
    assert MODELS.build(dict(type='FGFILoss', student_channels=2, teacher_channels=3,
                             preset='retinanet')).anchor_cfg['scales_per_octave'] == 3


# ------------------------------------------------------------------------------------ DeFeat
def test_defeat_level_assignment():
    boxes = torch.tensor([[[0., 0., 50., 50.], [0., 0., 120., 120.], [0., 0., 300., 300.],
                           [0., 0., 1000., 1000.]]])
    # sqrt((w+1)(h+1)) / 56 -> 0.91, 2.16, 5.4, 17.9 -> floor(log2) = -1->0, 1, 2, 4 -> clamp 2
    assert defeat_level_assignment(boxes, 3).tolist() == [[0, 1, 2, 2]]
    assert defeat_level_assignment(boxes, 5).tolist() == [[0, 1, 2, 4]]


def test_defeat_mask_single_box_hand_drawn():
    boxes, _, valid = pad_gts([torch.tensor([[16., 16., 40., 48.]])], [torch.tensor([0])])
    masks = defeat_masks(boxes, valid, SIZES, STRIDES)
    exp = torch.zeros(8, 8, dtype=torch.bool)
    exp[2:6, 2:5] = True  # rows floor(16/8)=2 .. 48/8=6 (excl.), cols 2 .. 40/8=5 (excl.)
    assert torch.equal(masks[0][0], exp)
    assert not masks[1].any()  # the box belongs to the first level only
    # a box thinner than one cell still marks one column
    boxes, _, valid = pad_gts([torch.tensor([[17., 8., 20., 30.]])], [torch.tensor([0])])
    m = defeat_masks(boxes, valid, SIZES, STRIDES)[0][0]
    exp = torch.zeros(8, 8, dtype=torch.bool)
    exp[1:3, 2] = True
    assert torch.equal(m, exp)


@pytest.mark.parametrize('normalize', ['batch', 'image'])
@pytest.mark.parametrize('cs', [4, 6])
def test_defeat_matches_direct_computation(normalize, cs):
    torch.manual_seed(3)
    m = DeFeatLoss(cs, 4, num_levels=2, normalize=normalize, adapt_init_std=None).double()
    batch = make_batch(TWO_IMAGES, cs=cs)
    out = m(batch)
    fg = bg = 0.
    for lvl, ((h, w), stride) in enumerate(zip(SIZES, STRIDES)):
        s = adapt_out(m.adapt[lvl], batch.student.neck[lvl].detach())
        t = batch.teacher.neck[lvl].detach()
        c = t.shape[1]
        nf, nbg, cf, cb = [0., 0.], [0., 0.], [0, 0], [0, 0]
        for b, boxes in enumerate(TWO_IMAGES):
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
            for i in range(h):
                for j in range(w):
                    e = ((s[b, :, i, j] - t[b, :, i, j]) ** 2).sum()
                    if mask[i, j]:
                        nf[b] += e
                        cf[b] += c
                    else:
                        nbg[b] += e
                        cb[b] += c
        if normalize == 'batch':
            fg += (nf[0] + nf[1]) / max(1, 2 * (cf[0] + cf[1]))
            bg += (nbg[0] + nbg[1]) / max(1, 2 * (cb[0] + cb[1]))
        else:
            fg += sum(nf[b] / max(1, 2 * cf[b]) for b in range(2)) / 2
            bg += sum(nbg[b] / max(1, 2 * cb[b]) for b in range(2)) / 2
    assert torch.allclose(out['loss_defeat_fg'], 3.0 * fg / 2, rtol=1e-9)
    assert torch.allclose(out['loss_defeat_bg'], 12.0 * bg / 2, rtol=1e-9)


def test_defeat_gradients_no_gt_and_registry():
    m = MODELS.build(dict(type='DeFeatLoss', student_channels=4, teacher_channels=6,
                          num_levels=2)).double()
    assert (m.fg_weight, m.bg_weight) == (3.0, 12.0)
    assert m.adapt[0].weight.abs().max() <= 2e-4  # truncated-normal * 1e-4 init
    check_grad_flow(m, make_batch(TWO_IMAGES, cs=4, ct=6))
    out = m(make_batch(NO_GT, cs=4, ct=6))
    assert all(torch.isfinite(v) for v in out.values())
    assert out['loss_defeat_fg'].item() == 0. and out['loss_defeat_bg'].item() > 0.


# --------------------------------------------------------------------------------------- FRS
@pytest.mark.parametrize('normalize', ['batch', 'image'])
@pytest.mark.parametrize('cs', [4, 6])
def test_frs_matches_direct_computation(normalize, cs):
    torch.manual_seed(4)
    anchors = 2
    m = FRSLoss(cs, 4, num_levels=2, normalize=normalize).double()
    batch = make_batch(TWO_IMAGES, cs=cs, anchors=anchors)
    out = m(batch)
    feat = cls = 0.
    for lvl, (h, w) in enumerate(SIZES):
        s = adapt_out(m.adapt[lvl], batch.student.neck[lvl].detach())
        t = batch.teacher.neck[lvl].detach()
        tl = batch.teacher_cls_logits[lvl].detach()
        sl = batch.student_cls_logits[lvl].detach()
        nf, nc, den = [0., 0.], [0., 0.], [0., 0.]
        for b in range(2):
            for i in range(h):
                for j in range(w):
                    r = max(1. / (1. + math.exp(-tl[b, k, i, j].item()))
                            for k in range(anchors * NUM_CLS))
                    den[b] += r
                    nf[b] += r * ((s[b, :, i, j] - t[b, :, i, j]) ** 2).sum()
                    for k in range(anchors * NUM_CLS):
                        p = 1. / (1. + math.exp(-tl[b, k, i, j].item()))
                        q = 1. / (1. + math.exp(-sl[b, k, i, j].item()))
                        nc[b] += r * -(p * math.log(q) + (1 - p) * math.log(1 - q))
        if normalize == 'batch':
            feat += (nf[0] + nf[1]) / (den[0] + den[1])
            cls += (nc[0] + nc[1]) / (den[0] + den[1])
        else:
            feat += (nf[0] / den[0] + nf[1] / den[1]) / 2
            cls += (nc[0] / den[0] + nc[1] / den[1]) / 2
    assert torch.allclose(out['loss_frs_feat'], 0.005 * feat, rtol=1e-9)
    assert abs(out['loss_frs_cls'].item() - 0.02 * cls) < 1e-9 * max(1., abs(cls))


def test_frs_warmup_gradients_and_no_gt():
    m = FRSLoss(4, 6, num_levels=2).double()
    batch = make_batch(TWO_IMAGES, cs=4, ct=6)
    full = m(batch)
    half = m(batch, cur_iter=250)
    later = m(batch, cur_iter=10_000)
    for k in full:
        assert torch.allclose(half[k], 0.5 * full[k])
        assert torch.allclose(later[k], full[k])
    assert m(batch, cur_iter=0)['loss_frs_feat'].item() == 0.
    check_grad_flow(m, batch, expect_student_logits=True)
    out = m(make_batch(NO_GT, cs=4, ct=6))
    assert all(torch.isfinite(v) for v in out.values())
    g = FRSLoss(4, 4, preset='gfl')
    assert (g.feat_weight, g.cls_weight) == (0.1, 0.05)
    assert MODELS.build(dict(type='FRSLoss', student_channels=4,
                             teacher_channels=4)).warmup_iters == 500


# --------------------------------------------------------------------------------------- FKD
def _nl_direct(block, x):
    """Non-local block (dot product, f/N) with train-mode BatchNorm, written out."""
    b, c, h, w = x.shape
    k = min(block.downsample, h, w)

    def conv1(conv, inp):
        return torch.einsum('oc,bchw->bohw', conv.weight[:, :, 0, 0], inp) + \
            conv.bias[None, :, None, None]

    def pool(inp):
        if k == 1:
            return inp
        hh, ww = inp.shape[2] // k, inp.shape[3] // k
        out = torch.empty(inp.shape[0], inp.shape[1], hh, ww, dtype=inp.dtype)
        for i in range(hh):
            for j in range(ww):
                out[:, :, i, j] = inp[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k].amax((2, 3))
        return out

    g = pool(conv1(block.g, x)).flatten(2)  # (B, I, M)
    th = conv1(block.theta, x).flatten(2)  # (B, I, HW)
    ph = pool(conv1(block.phi, x)).flatten(2)  # (B, I, M)
    y = torch.zeros(b, th.shape[1], h * w, dtype=x.dtype)
    for bi in range(b):
        f = th[bi].T @ ph[bi] / ph.shape[-1]  # (HW, M)
        y[bi] = (f @ g[bi].T).T
    y = y.reshape(b, -1, h, w)
    wy = conv1(block.W[0], y)
    bn = block.W[1]
    mean = wy.mean((0, 2, 3), keepdim=True)
    var = wy.var((0, 2, 3), unbiased=False, keepdim=True)
    wy = (wy - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] + \
        bn.bias[None, :, None, None]
    return wy + x


@pytest.mark.parametrize('cs', [4, 6])
def test_fkd_matches_direct_computation(cs):
    torch.manual_seed(5)
    m = FKDLoss(cs, 4, num_levels=2, nonlocal_inter_channels=[2, 2],
                nonlocal_downsample=[2, 2], attention_term='paper').double()
    with torch.no_grad():  # non-trivial non-local output (BN affine is zero-initialised)
        for blk in list(m.student_nl) + list(m.teacher_nl):
            blk.W[1].weight.normal_()
            blk.W[1].bias.normal_()
    batch = make_batch(TWO_IMAGES, cs=cs)
    out = m(batch)
    T = 0.1
    feat = att = nl = 0.
    for lvl, (h, w) in enumerate(SIZES):
        s_raw = batch.student.neck[lvl].detach()
        s = adapt_out(m.adapt[lvl], s_raw)
        src = s_raw if cs == 4 else s
        t = batch.teacher.neck[lvl].detach()
        c = t.shape[1]

        def sa(x):
            e = torch.exp(x.abs().mean(1) / T)  # (B, H, W)
            return h * w * e / e.sum((1, 2), keepdim=True)

        def ca(x):
            e = torch.exp(x.abs().mean((2, 3)) / T)  # (B, C)
            return c * e / e.sum(1, keepdim=True)

        ms = (sa(t) + sa(src)) / 2
        mc = (ca(t) + ca(src)) / 2
        acc = 0.
        for b in range(2):
            for k in range(c):
                for i in range(h):
                    for j in range(w):
                        acc += (t[b, k, i, j] - s[b, k, i, j]) ** 2 * ms[b, i, j] * mc[b, k]
        feat = feat + torch.sqrt(acc)
        att += (sa(t) - sa(src)).abs().mean() + (ca(t) - ca(src)).abs().mean()
        s_rel = adapt_out(m.nl_adapt[lvl], _nl_direct(m.student_nl[lvl], s_raw))
        t_rel = _nl_direct(m.teacher_nl[lvl], t)
        nl += torch.sqrt(((s_rel - t_rel) ** 2).sum())
    assert torch.allclose(out['loss_fkd_feat'], 7e-5 * 6 * feat, rtol=1e-7)
    assert torch.allclose(out['loss_fkd_att'], 4e-3 * 6 * att, rtol=1e-7)
    assert torch.allclose(out['loss_fkd_nonlocal'], 7e-5 * 6 * nl, rtol=1e-7)


def test_fkd_gradients_identical_features_and_no_gt():
    m = FKDLoss(4, 6, num_levels=2).double()
    batch = make_batch(TWO_IMAGES, cs=4, ct=6)
    check_grad_flow(m, batch)
    assert m.teacher_nl[0].W[1].weight.grad is not None  # trainable teacher-side block
    # identical student / teacher and identity adaptation: zero losses, finite gradients
    m2 = FKDLoss(4, 4, num_levels=2, attention_term='paper').double()
    with torch.no_grad():
        for conv in list(m2.adapt) + list(m2.nl_adapt):
            conv.weight.zero_()
            conv.weight[:, :, 0, 0] += torch.eye(4, dtype=DT)
            conv.bias.zero_()
    feats = [torch.randn(2, 4, h, w, dtype=DT) for h, w in SIZES]
    b2 = make_batch(NO_GT, student=feats, teacher=feats)
    out = m2(b2)
    assert all(torch.isfinite(v) and abs(v.item()) < 1e-12 for v in out.values())
    total(out).backward()
    assert all(torch.isfinite(f.grad).all() for f in b2.student.neck)
    assert MODELS.build(dict(type='FKDLoss', student_channels=4, teacher_channels=4,
                             preset='two_stage')).feat_weight == 7e-5


def test_all_losses_keys_prefixed_and_finite_with_mismatched_widths():
    batch = make_batch(TWO_IMAGES, cs=3, ct=5)
    for cls, prefix in [(FGDLoss, 'loss_fgd_'), (FGFILoss, 'loss_fgfi_'),
                        (DeFeatLoss, 'loss_defeat_'), (FRSLoss, 'loss_frs_'),
                        (FKDLoss, 'loss_fkd_')]:
        out = cls(3, 5, num_levels=2).double()(batch)
        assert out and all(k.startswith(prefix) for k in out), cls
        assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values()), cls


def test_tiny_levels_single_image():
    """1x1 top level with one image (e.g. P7 of a small image): every loss stays finite."""
    sizes, strides = [(2, 2), (1, 1)], [8, 16]
    batch = make_batch([[[2., 2., 10., 12.]]], cs=3, ct=5, sizes=sizes, strides=strides)
    for cls in (FGDLoss, FGFILoss, DeFeatLoss, FRSLoss, FKDLoss):
        out = cls(3, 5, num_levels=2).double()(batch)
        assert all(torch.isfinite(v) for v in out.values()), cls
        total(out).backward()
