"""Benchmark: mini-scale training-step overhead of PGD distillation.

For each detector (ATSS, FCOS, GFL by default) the mini student ``config/detectors/mini/
<det>_r18_student.py`` and teacher ``<det>_r34_teacher.py`` are built with mmdet's
``MODELS.build`` (after ``pgd.engine.registry.register_all()``), and on one batch of 8 random
256 x 256 images with ~10 random GTs each (DetDataSample / InstanceData) three things are
timed side by side, interleaved (every repeat runs all of them, in rotating order):

(a) ``student``  -- plain student train step: ``student.loss`` + ``parse_losses`` + backward +
                    SGD step;
(b) ``teacher``  -- teacher forward under ``no_grad`` (``extract_feat`` + ``bbox_head``);
(c) ``pgd``      -- ``TeacherStudentDistiller`` train step with the ``PGDLoss`` of
                    ``config/distill/pgd.py`` (per-detector overrides applied): teacher forward,
                    student loss, head decoding, PGW, PGD loss, backward, SGD step.

and it prints the medians and the ratio ``t(c) / (t(a) + t(b))`` (target <= 1.10), plus, on a
``DistillBatch`` captured from the same step, the PGW-only time (both masks) and the PGD loss
alone (PGW + Eq. 5-9 forward, and forward + backward into detached student features).
Wall-clock and process CPU time (user + system of all threads) are both reported; on a shared
machine the CPU-time ratio is the less load-sensitive of the two. Nothing is asserted; last
figures: benchmarks/README.md.

    python benchmarks/bench_step_time.py [--detectors atss,fcos,gfl] [--repeats 15]
                                         [--threads 0] [--batch 8] [--size 256]
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import time
import warnings

import torch

TARGET_RATIO = 1.10


def build_models(det: str):
    from mmdet.registry import MODELS

    from pgd.engine.config_utils import load_config
    from pgd.engine.distill import load_method, method_losses
    _, s_cfg = load_config(f'mini/{det}_r18_student')
    _, t_cfg = load_config(f'mini/{det}_r34_teacher')
    losses = method_losses(load_method('pgd'), det, None)
    torch.manual_seed(0)
    student = MODELS.build(copy.deepcopy(s_cfg.model))
    teacher = MODELS.build(copy.deepcopy(t_cfg.model))
    student.init_weights()
    teacher.init_weights()
    distiller = MODELS.build(dict(type='TeacherStudentDistiller', student=s_cfg.model,
                                  teacher=t_cfg.model, distill_losses=losses,
                                  init_student_from_teacher=False))
    # same weights as the stand-alone models, so every step sees the same predictions
    distiller.student.load_state_dict(student.state_dict())
    distiller.teacher.load_state_dict(teacher.state_dict())
    student.train()
    teacher.eval()
    distiller.train()
    return student, teacher, distiller, losses


def random_batch(batch: int, size: int, num_classes: int, seed: int = 0):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    samples = []
    for _ in range(batch):
        n = int(torch.randint(8, 13, (1, ), generator=g))          # ~10 GTs per image
        wh = size * (0.05 + 0.55 * torch.rand(n, 2, generator=g))
        ctr = size * torch.rand(n, 2, generator=g)
        boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], 1).clamp(0, size)
        ds = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         ori_shape=(size, size),
                                         batch_input_shape=(size, size),
                                         scale_factor=(1., 1.)))
        inst = InstanceData()
        inst.bboxes = boxes
        inst.labels = torch.randint(0, num_classes, (n, ), generator=g)
        ds.gt_instances = inst
        samples.append(ds)
    return x, samples


def interleaved(fns: dict, repeats: int):
    """Per function: lists of (wall s, process CPU s) per round; every round runs every
    function once, in rotating order."""
    names = list(fns)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for name in names:  # warm-up (twice: first-call allocations, lazy imports)
        fns[name]()
        fns[name]()
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def step_ratios(wall: dict, cpu: dict):
    """Ratio of medians, and median of the per-round ratios (robust to load drifting between
    rounds), for wall and CPU time."""
    def ratios(d):
        med = {n: statistics.median(v) for n, v in d.items()}
        of_medians = med['pgd'] / (med['student'] + med['teacher'])
        per_round = statistics.median(
            p / (s + t) for p, s, t in zip(d['pgd'], d['student'], d['teacher']))
        return of_medians, per_round
    return ratios(wall), ratios(cpu)


def bench_detector(det: str, args):
    from pgd.distill.pgw import pgw_masks_from_batch
    student, teacher, distiller, losses = build_models(det)
    num_classes = student.bbox_head.num_classes
    x, samples = random_batch(args.batch, args.size, num_classes)
    opt_s = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=1e-5,
                            momentum=0.9)
    opt_d = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=1e-5,
                            momentum=0.9)

    def student_step():
        opt_s.zero_grad()
        loss, _ = student.parse_losses(student.loss(x, samples))
        loss.backward()
        opt_s.step()

    @torch.no_grad()
    def teacher_forward():
        teacher.bbox_head(teacher.extract_feat(x))

    def pgd_step():
        opt_d.zero_grad()
        loss, _ = distiller.parse_losses(distiller.loss(x, samples))
        loss.backward()
        opt_d.step()

    # a DistillBatch of this step, with the student features as detached leaves, to time the
    # PGD loss on its own
    with torch.no_grad():
        t_feats, t_outs = distiller._run_teacher(x)
    distiller._s_capture.reset()
    s_feats = distiller.student.extract_feat(x)
    distiller.student.bbox_head.loss(s_feats, samples)
    batch = distiller.build_distill_batch(x, samples, s_feats, t_feats, t_outs)
    for feats in (batch.student.neck, batch.student.cls_feat, batch.student.reg_feat):
        feats[:] = [f.detach().requires_grad_(True) for f in feats]
    pgd_loss = distiller.distill_losses['pgd']
    xis = (pgd_loss.xi_cls, pgd_loss.xi_reg)

    def pgw_only():
        pgw_masks_from_batch(batch, xis, k=pgd_loss.k, candidates=pgd_loss.candidates,
                             ridge=pgd_loss.ridge)

    def loss_forward():
        with torch.no_grad():
            pgd_loss(batch)

    def loss_fwd_bwd():
        sum(pgd_loss(batch).values()).backward()

    fns = dict(student=student_step, teacher=teacher_forward, pgd=pgd_step, pgw=pgw_only,
               pgd_loss_fwd=loss_forward, pgd_loss_fwd_bwd=loss_fwd_bwd)
    load0 = os.getloadavg()[0]
    wall, cpu = interleaved(fns, args.repeats)
    load1 = os.getloadavg()[0]
    t = {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in fns}
    (rw, rw_round), (rc, rc_round) = step_ratios(wall, cpu)
    n_pts = sum(h * w for h, w in batch.level_sizes)
    n_gt = int(batch.gt_valid.sum())
    print(f'\n{det.upper()}: B={args.batch}, {args.size}x{args.size}, N={n_pts} locations, '
          f'{n_gt} GTs, PGDLoss(k={pgd_loss.k}, alpha={pgd_loss.alpha}, '
          f'branches={pgd_loss.branches}); threads={torch.get_num_threads()}; '
          f'loadavg(1 min) {load0:.1f} -> {load1:.1f}')
    for name, (w, c) in t.items():
        print(f'  {name:18s} wall {w * 1e3:8.1f} ms   cpu {c * 1e3:8.1f} ms')
    over_w = t['pgd'][0] - t['student'][0] - t['teacher'][0]
    print(f'  ratio t(pgd) / (t(student) + t(teacher)) (target <= {TARGET_RATIO:.2f}): '
          f'wall {rw:.3f} (median per round {rw_round:.3f}), cpu {rc:.3f} (per round '
          f'{rc_round:.3f}); overhead {over_w * 1e3:.1f} ms wall, of which PGD loss fwd+bwd '
          f'{t["pgd_loss_fwd_bwd"][0] * 1e3:.1f} ms (PGW {t["pgw"][0] * 1e3:.1f} ms)')
    return det, (rw, rw_round, rc, rc_round), t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--detectors', default='atss,fcos,gfl')
    ap.add_argument('--repeats', type=int, default=15)
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--size', type=int, default=256)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger

    from pgd.engine.registry import register_all
    warnings.filterwarnings('ignore')
    register_all()
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no init_weights chatter
    print(f'torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} '
          f'loadavg={os.getloadavg()} repeats={args.repeats} (medians, interleaved)')
    results = [bench_detector(det, args) for det in args.detectors.split(',')]
    print('\nsummary: t(PGD step) / (t(student step) + t(teacher forward)), target <= '
          f'{TARGET_RATIO:.2f}')
    for det, rs, t in results:
        verdict = ('MEETS' if max(rs) <= TARGET_RATIO else
                   'MISSES' if min(rs) > TARGET_RATIO else 'BORDERLINE')
        print(f'  {det:6s} wall {rs[0]:.3f} (per round {rs[1]:.3f})  cpu {rs[2]:.3f} (per round '
              f'{rs[3]:.3f})  {verdict};  PGW {t["pgw"][0] * 1e3:.1f} ms, PGD loss fwd+bwd '
              f'{t["pgd_loss_fwd_bwd"][0] * 1e3:.1f} ms, student step '
              f'{t["student"][0] * 1e3:.0f} ms, teacher fwd {t["teacher"][0] * 1e3:.0f} ms')


if __name__ == '__main__':
    main()
