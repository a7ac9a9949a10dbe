"""Benchmark: batched PGW vs the per-image, per-GT loop reference on a COCO-sized batch.

8 images x 30 GTs, 1333 x 800 input, 5 FPN levels (strides 8..128, N = 22,300 locations),
A = 1 (ATSS-like) and A = 9 (RetinaNet-like) predictions per location, C = 80 classes.
Prints timings, the speed-up, the target (>= 20x) and the max difference between the batched
masks and the reference; asserts nothing.

    python benchmarks/bench_pgw.py [--device cuda] [--repeats 5] [--threads 1]

The reference is single-threaded NumPy, so the CPU comparison uses one torch thread by default.
(On an oversubscribed machine torch's OpenMP threads can be 10-40x slower than one thread.)
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch

from pgd.distill.inputs import level_points
from pgd.distill.pgw import pgw_masks
from pgd.distill.pgw_reference import pgw_reference

TARGET_SPEEDUP = 20.0


def coco_like_batch(num_anchors: int, batch: int = 8, num_gts: int = 30, seed: int = 0,
                    device: str = 'cpu'):
    g = torch.Generator().manual_seed(seed)
    h_img, w_img = 800, 1333
    strides = [8, 16, 32, 64, 128]
    sizes = [(math.ceil(h_img / s), math.ceil(w_img / s)) for s in strides]
    points, level_index = level_points(sizes, strides)
    n = points.shape[0]
    stride_of = torch.tensor(strides, dtype=torch.float32)[level_index]
    if num_anchors == 1:
        base = torch.tensor([[8.0, 8.0]])
    else:
        base = torch.tensor([[s * math.sqrt(1 / r), s * math.sqrt(r)]
                             for s in (4.0, 4 * 2 ** (1 / 3), 4 * 2 ** (2 / 3))
                             for r in (0.5, 1.0, 2.0)])
    wh = base[None, None] * stride_of[None, :, None, None] * torch.exp(
        0.5 * (torch.rand(batch, n, num_anchors, 2, generator=g) - 0.5))
    ctr = points[None, :, None] + 0.3 * wh * (torch.rand(batch, n, num_anchors, 2,
                                                         generator=g) - 0.5)
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], -1)
    cls_prob = torch.rand(batch, n, num_anchors, 80, generator=g) ** 3
    # COCO-like GT sizes: sqrt(area) log-uniform in [12, 640] px, aspect in [1/3, 3]
    side = torch.exp(math.log(12) + torch.rand(batch, num_gts, generator=g)
                     * (math.log(640) - math.log(12)))
    aspect = torch.exp((torch.rand(batch, num_gts, generator=g) - 0.5) * 2 * math.log(3))
    bw, bh = side * aspect.sqrt(), side / aspect.sqrt()
    cx = torch.rand(batch, num_gts, generator=g) * w_img
    cy = torch.rand(batch, num_gts, generator=g) * h_img
    gt = torch.stack([(cx - bw / 2).clamp(0, w_img), (cy - bh / 2).clamp(0, h_img),
                      (cx + bw / 2).clamp(0, w_img), (cy + bh / 2).clamp(0, h_img)], -1)
    labels = torch.randint(0, 80, (batch, num_gts), generator=g)
    valid = torch.ones(batch, num_gts, dtype=torch.bool)
    case = dict(cls_prob=cls_prob, boxes=boxes, points=points, level_index=level_index,
                num_levels=len(strides), gt_bboxes=gt, gt_labels=labels, gt_valid=valid)
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in case.items()}


def _time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--ref-repeats', type=int, default=1)
    ap.add_argument('--k', type=int, default=30)
    ap.add_argument('--threads', type=int, default=1,
                    help='torch CPU threads (default 1, like the single-threaded NumPy loop; '
                         '0 keeps torch\'s default)')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = (torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None))
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} '
          f'cpus={os.cpu_count()} loadavg(1min)={load:.1f}')
    print(f'target speed-up of batched PGW over the per-GT loop: >= {TARGET_SPEEDUP:.0f}x')
    for num_anchors in (1, 9):
        case = coco_like_batch(num_anchors, device=args.device)
        n = case['points'].shape[0]
        print(f'\nA={num_anchors}: B=8, G=30, N={n}, K={args.k}')
        xis = (0.8, 0.6)
        ref_fn = lambda: [pgw_reference(**case, xi=x, k=args.k) for x in xis]  # noqa: E731
        t_ref = _time(ref_fn, args.ref_repeats, sync)
        ref = ref_fn()
        sizes = [(math.ceil(800 / s), math.ceil(1333 / s)) for s in (8, 16, 32, 64, 128)]
        rows = [('sparse+grid (dflt)', 'inside', 'sparse', sizes),
                ('sparse, no grid', 'inside', 'sparse', None),
                ('dense pieces', 'inside', 'dense', None)]
        for name, cand, impl, lsz in rows:
            fn = lambda: pgw_masks(**case, xis=xis, k=args.k, candidates=cand,  # noqa: E731
                                   impl=impl, level_sizes=lsz)
            t = _time(fn, args.repeats, sync)
            out = fn()
            err = max(float(np.abs(o.double().cpu().numpy() - r).max())
                      for o, r in zip(out, ref))
            speed = t_ref / t
            flag = 'meets' if speed >= TARGET_SPEEDUP else 'BELOW'
            print(f'  {name:18s} M_cls+M_reg: {t * 1e3:8.1f} ms   loop reference: '
                  f'{t_ref * 1e3:8.1f} ms   speed-up {speed:6.1f}x ({flag} target '
                  f'{TARGET_SPEEDUP:.0f}x)   max |diff| {err:.2e}')
        t_atm = _time(lambda: pgw_masks(**case, xis=xis, k=args.k, candidates='all_then_mask'),
                      max(1, args.repeats // 2), sync)
        t_ref_atm = _time(lambda: [pgw_reference(**case, xi=x, k=args.k,
                                                 candidates='all_then_mask') for x in xis],
                          args.ref_repeats, sync)
        print(f'  all_then_mask      M_cls+M_reg: {t_atm * 1e3:8.1f} ms   loop reference: '
              f'{t_ref_atm * 1e3:8.1f} ms   speed-up {t_ref_atm / t_atm:6.1f}x')


if __name__ == '__main__':
    main()
