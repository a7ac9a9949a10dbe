"""PGD loss terms and their gradient norms at step 0, side by side for the two loss readings.

On one batch of SYNTHETIC ``shapes`` images (``pgd.data.synthetic.generate_image``), for each
detector, the mini student/teacher pair is built with the ``PGDLoss`` of
``config/distill/pgd.py`` (per-detector overrides applied) in two variants:

* ``official`` -- the default: the official code's semantics (channel-mean attention, per-batch
  normalisation, level weights on the cls feature term only, official PGW candidates, K = 9 on
  ATSS);
* ``paper``    -- what the project ran before: Eq. 5-9 as printed (channel-sum attention),
  candidates inside the box, K = 30.

It prints each term's value and the L2 norm of its gradient with respect to the student's
parameters, next to the student's detection loss. ``loss_scale`` is 1 (the mini scale's 0.2
multiplies every distillation row). The teacher is the same randomly initialised network for
both variants unless ``--teacher-ckpt`` names trained weights (no download, no data needed).

    python benchmarks/pgd_loss_magnitudes.py [--detectors atss,fcos] [--batch 4] [--size 128]
"""
from __future__ import annotations

import argparse
import copy

import torch


def batch_of_synthetic_images(model, num, size, seed=0):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from pgd.data.synthetic import generate_image
    inputs, samples = [], []
    for i in range(num):
        img, objects = generate_image('shapes', seed, 'train', i, image_size=size)
        inputs.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        ds = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         scale_factor=(1.0, 1.0)))
        inst = InstanceData()
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (o['bbox'] for o in objects)]
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        inst.labels = torch.tensor([o['category_id'] - 1 for o in objects], dtype=torch.long)
        ds.gt_instances = inst
        samples.append(ds)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
    return data['inputs'], data['data_samples']


def build(det, variant, teacher_ckpt):
    from mmdet.registry import MODELS
    from mmengine.config import Config

    from pgd.engine.config_utils import CONFIG_ROOT
    from pgd.engine.distill import load_method, method_losses
    losses = method_losses(load_method('pgd'), det, None)
    if variant == 'paper':
        losses['pgd'].update(semantics='paper', candidates='inside', k=30)
    cfg = lambda name: Config.fromfile(str(CONFIG_ROOT / f'mini/{det}_{name}.py')).model  # noqa
    model = MODELS.build(dict(type='TeacherStudentDistiller', student=cfg('r18_student'),
                              teacher=cfg('r34_teacher'), teacher_ckpt=teacher_ckpt,
                              distill_losses=losses))
    model.init_weights()
    model.train()
    return model


def attention_support(model, x):
    """(H, W, support with the channel mean, support with the channel sum) per level of the
    teacher's captured cls-tower features."""
    from pgd.distill.attention import spatial_attention
    with torch.no_grad():
        model._run_teacher(x)
        out = []
        for feat in model._t_capture.cls:
            sup = []
            for reduce in ('mean', 'sum'):
                q = spatial_attention(feat, 0.8, reduce).flatten(1)
                q = q / q.sum(dim=1, keepdim=True)
                sup.append(float((1.0 / (q * q).sum(dim=1)).mean()))
            out.append((feat.shape[2], feat.shape[3], *sup))
    return out


def grad_norm(term, params):
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    sq = sum(float(g.pow(2).sum()) for g in grads if g is not None)
    return sq ** 0.5


def main(argv=None):
    from pgd.engine.registry import register_all
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--detectors', default='atss,fcos')
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--size', type=int, default=128)
    p.add_argument('--teacher-ckpt', default=None,
                   help='trained weights of the teacher of the one detector given')
    args = p.parse_args(argv)
    if args.teacher_ckpt and ',' in args.detectors:
        p.error('--teacher-ckpt holds one detector\'s teacher: give one --detectors value')
    from mmengine.logging import MMLogger
    MMLogger.get_instance('pgd_loss_magnitudes', log_level='WARNING')   # the current logger
    register_all()
    for det in args.detectors.split(','):
        rows = {}
        for variant in ('paper', 'official'):
            torch.manual_seed(0)
            model = build(det, variant, args.teacher_ckpt)
            x, samples = batch_of_synthetic_images(model, args.batch, args.size)
            losses = model.loss(x, copy.deepcopy(samples))
            params = [q for q in model.student.parameters() if q.requires_grad]
            det_total = sum(v.sum() if torch.is_tensor(v) else sum(t.sum() for t in v)
                            for k, v in losses.items()
                            if 'loss' in k and not k.startswith('loss_pgd'))
            rows.setdefault('detection (sum)', {})[variant] = (
                float(det_total), grad_norm(det_total, params))
            for key in sorted(k for k in losses if k.startswith('loss_pgd')):
                rows.setdefault(key, {})[variant] = (float(losses[key]),
                                                     grad_norm(losses[key], params))
        print(f'\n{det.upper()} mini, {args.batch} synthetic images of {args.size} px, '
              f'teacher {"trained" if args.teacher_ckpt else "randomly initialised"}')
        print('effective support of the teacher spatial attention P (participation ratio, '
              'cls tower, per level): ' + '; '.join(
                  f'P{3 + lvl} {h * w} locations: mean {mean:.1f}, sum {total:.1f}'
                  for lvl, (h, w, mean, total) in enumerate(attention_support(model, x))))
        print(f'{"term":<20} {"paper: value":>13} {"|grad|":>10} {"official: value":>16} '
              f'{"|grad|":>10}')
        for key, by in rows.items():
            (pv, pg), (ov, og) = by['paper'], by['official']
            print(f'{key:<20} {pv:>13.4g} {pg:>10.3g} {ov:>16.4g} {og:>10.3g}')


if __name__ == '__main__':
    main()
