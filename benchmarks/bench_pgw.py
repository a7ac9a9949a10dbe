"""Benchmark: batched PGW vs per-image, per-GT loop references on a COCO-sized batch.

Case: 8 images x 30 GTs, 1333 x 800 input, 5 FPN levels (strides 8..128, N = 22,300
locations), C = 80 classes, GT sizes COCO-like (sqrt(area) log-uniform in [12, 640] px, about
205k (image, GT, inside location) pairs). A = 1 prediction per location (ATSS, DDOD, FCOS,
GFL, AutoAssign: every detector of this repo) is the case the target is about; A = 9
(RetinaNet-like anchors) is reported as well. Both masks of PGD are computed (xi = 0.8, 0.6).

Implementations timed (all return the same masks, checked below):

* ``batched``         -- :func:`pgd.distill.pgw.pgw_masks` with the inside candidate rule (the
                         paper text; ``PGDLoss(semantics='paper')``) as the loss calls it
                         (``impl='auto'`` with ``level_sizes``: on the CPU the sparse engine's
                         grid enumeration, elsewhere dense); the loss's default
                         official rule is ``batched/all_then_mask`` (``--all-then-mask``);
* ``batched-nogrid``  -- the same without ``level_sizes`` (dense inside test + nonzero);
* ``batched-dense``   -- ``impl='dense'`` (B, G, N) pieces;
* ``batched-sparse``  -- ``impl='sparse'`` with ``level_sizes``, off the CPU only (there
                         ``'auto'``, hence ``batched``, is dense);
* ``loop-torch``      -- ``pgw_loop_torch_multi`` of ``tests/pgw_reference.py``: the plain
                         per-image, per-GT torch loop over all N locations and A predictions
                         (the issue's "per-GT loop reference"; IoU shared between the two xi);
* ``loop-numpy``      -- ``pgw_reference`` of ``tests/pgw_reference.py`` (float64 NumPy,
                         already sparse: only inside locations per GT; one call per xi).

The target ">= 30x faster than the loop reference" is evaluated against ``loop-torch``;
the speed-up over ``loop-numpy`` is printed too. Timings are interleaved (every repeat runs
every implementation once, in rotating order); medians of wall-clock and of process CPU time
(less sensitive to other jobs on a shared machine) are reported, with the load average and the
minor page faults, for each torch thread count given. Before timing, the outputs are checked
(bit-identical batched vs loop-torch; on another ``--device`` also against the loop run on
the CPU, and a mismatch says how many selections and values differ). Nothing is asserted.
Last figures: benchmarks/README.md.

    python benchmarks/bench_pgw.py [--repeats 7] [--threads 1,2] [--anchors 1,9]
                                   [--all-then-mask] [--device cuda]
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys

import numpy as np
import torch

from pgd.distill.inputs import level_points
from pgd.distill.pgw import pgw_masks

# The per-GT loop references are test code, kept out of the package in tests/; appended (not
# prepended) so that nothing in tests/ can shadow an installed module.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))
from pgw_reference import pgw_loop_torch_multi, pgw_reference  # noqa: E402
from timing import interleaved  # noqa: E402

TARGET_SPEEDUP = 30.0   # issue target: >= 30x the per-GT torch loop, >= 15x the NumPy loop
STRIDES = (8, 16, 32, 64, 128)
H_IMG, W_IMG = 800, 1333
XIS = (0.8, 0.6)


def coco_like_batch(num_anchors: int, batch: int = 8, num_gts: int = 30, seed: int = 0,
                    device: str = 'cpu'):
    g = torch.Generator().manual_seed(seed)
    sizes = level_sizes()
    points, level_index = level_points(sizes, STRIDES)
    n = points.shape[0]
    stride_of = torch.tensor(STRIDES, dtype=torch.float32)[level_index]
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
    cx = torch.rand(batch, num_gts, generator=g) * W_IMG
    cy = torch.rand(batch, num_gts, generator=g) * H_IMG
    gt = torch.stack([(cx - bw / 2).clamp(0, W_IMG), (cy - bh / 2).clamp(0, H_IMG),
                      (cx + bw / 2).clamp(0, W_IMG), (cy + bh / 2).clamp(0, H_IMG)], -1)
    labels = torch.randint(0, 80, (batch, num_gts), generator=g)
    valid = torch.ones(batch, num_gts, dtype=torch.bool)
    case = dict(cls_prob=cls_prob, boxes=boxes, points=points, level_index=level_index,
                num_levels=len(STRIDES), gt_bboxes=gt, gt_labels=labels, gt_valid=valid)
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in case.items()}


def level_sizes():
    return [(math.ceil(H_IMG / s), math.ceil(W_IMG / s)) for s in STRIDES]


def compare(masks, refs) -> str:
    """'==' when every mask equals its reference bit for bit, else '!=' with how: locations
    whose selection (mask > 0) differs, values that differ, and the largest relative gap."""
    if all(torch.equal(m, r) for m, r in zip(masks, refs)):
        return '=='
    sel = vals = 0
    rel = 0.0
    for m, r in zip(masks, refs):
        m, r = m.cpu().double(), r.cpu().double()
        sel += int(((m > 0) != (r > 0)).sum())
        gap = (m - r).abs()
        vals += int((gap > 0).sum())
        nonzero = r != 0
        if nonzero.any():
            rel = max(rel, float((gap[nonzero] / r[nonzero].abs()).max()))
    return f'!= ({sel} selections differ, {vals} values differ, max rel {rel:.1e})'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--repeats', type=int, default=7)
    ap.add_argument('--k', type=int, default=30)
    ap.add_argument('--threads', default='1,2',
                    help='comma-separated torch CPU thread counts to measure (0 = default)')
    ap.add_argument('--anchors', default='1,9', help='comma-separated A values')
    ap.add_argument('--all-then-mask', action='store_true',
                    help="also time candidates='all_then_mask' (PGDLoss's default since it follows "
                    "the official code): batched sparse and dense vs its torch loop")
    ap.add_argument('--skip-numpy', action='store_true')
    args = ap.parse_args()
    sync = (torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None))
    print(f'device={args.device} torch={torch.__version__} cpus={os.cpu_count()} '
          f'loadavg={os.getloadavg()} repeats={args.repeats} (medians, interleaved)')
    print(f'target: batched PGW >= {TARGET_SPEEDUP:.0f}x faster than the per-GT loop '
          f'reference (loop-torch)')
    sizes = level_sizes()
    k = args.k
    summary = []
    for threads in [int(t) for t in args.threads.split(',')]:
        if threads:
            torch.set_num_threads(threads)
        for num_anchors in [int(a) for a in args.anchors.split(',')]:
            case = coco_like_batch(num_anchors, device=args.device)
            n = case['points'].shape[0]
            fns = {
                'batched': lambda: pgw_masks(**case, xis=XIS, k=k, level_sizes=sizes),
                'batched-nogrid': lambda: pgw_masks(**case, xis=XIS, k=k),
                'batched-dense': lambda: pgw_masks(**case, xis=XIS, k=k, impl='dense'),
                'loop-torch': lambda: pgw_loop_torch_multi(**case, xis=XIS, k=k),
            }
            if args.device != 'cpu':   # 'auto' is dense off the CPU: time sparse by name
                fns['batched-sparse'] = lambda: pgw_masks(**case, xis=XIS, k=k, impl='sparse',
                                                          level_sizes=sizes)
                if args.all_then_mask:
                    fns['batched-sparse/all_then_mask'] = lambda: pgw_masks(
                        **case, xis=XIS, k=k, candidates='all_then_mask', impl='sparse',
                        level_sizes=sizes)
            if not args.skip_numpy:
                fns['loop-numpy'] = lambda: [pgw_reference(**case, xi=x, k=k) for x in XIS]
            if args.all_then_mask:
                fns['batched/all_then_mask'] = lambda: pgw_masks(
                    **case, xis=XIS, k=k, candidates='all_then_mask', level_sizes=sizes)
                fns['batched-dense/all_then_mask'] = lambda: pgw_masks(
                    **case, xis=XIS, k=k, candidates='all_then_mask')
                fns['loop-torch/all_then_mask'] = lambda: pgw_loop_torch_multi(
                    **case, xis=XIS, k=k, candidates='all_then_mask')
            # correctness first
            ref = fns['loop-torch']()
            checks = []
            for name in ('batched', 'batched-nogrid', 'batched-dense', 'batched-sparse'):
                if name not in fns:
                    continue
                checks.append(f'{name} {compare(fns[name](), ref)} loop-torch')
            if 'loop-numpy' in fns:
                npref = fns['loop-numpy']()
                err = max(float(np.abs(o.double().cpu().numpy() - r).max())
                          for o, r in zip(ref, npref))
                checks.append(f'max|loop-torch - loop-numpy| = {err:.1e}')
            if args.all_then_mask:
                b = fns['loop-torch/all_then_mask']()
                for name in ('batched/all_then_mask', 'batched-dense/all_then_mask',
                             'batched-sparse/all_then_mask'):
                    if name not in fns:
                        continue
                    checks.append(f'{name} {compare(fns[name](), b)} loop-torch/all_then_mask')
            if args.device != 'cpu':
                # off the CPU the loop's own kernels may round differently (one ulp on H200);
                # the CPU loop is the reference every implementation must equal bit for bit
                cpu_case = coco_like_batch(num_anchors)
                rules = ('inside', 'all_then_mask') if args.all_then_mask else ('inside', )
                for rule in rules:
                    cpu_ref = pgw_loop_torch_multi(**cpu_case, xis=XIS, k=k, candidates=rule)
                    for name in ('batched', 'batched-dense', 'loop-torch'):
                        fn = name if rule == 'inside' else f'{name}/all_then_mask'
                        checks.append(f'{fn} {compare(fns[fn](), cpu_ref)} {rule} loop on cpu')
            load0 = os.getloadavg()[0]
            flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            wall, cpu = interleaved(fns, args.repeats, sync, warmups=1)
            t = {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in fns}
            flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
            load1 = os.getloadavg()[0]
            print(f'\nthreads={torch.get_num_threads()} A={num_anchors}: B=8, G=30, N={n}, '
                  f'K={k}, both masks (xi={XIS}); loadavg(1 min) {load0:.1f} -> {load1:.1f}; '
                  f'{flt} minor page faults')
            print('  checks: ' + '; '.join(checks))
            for name, (sec, cpu) in t.items():
                line = f'  {name:28s} wall {sec * 1e3:9.1f} ms  cpu {cpu * 1e3:9.1f} ms'
                base = ('loop-torch/all_then_mask' if name.endswith('/all_then_mask')
                        and name.startswith('batched')
                        else 'loop-torch' if name.startswith('batched') else None)
                if base:
                    line += (f'   {t[base][0] / sec:6.1f}x (cpu {t[base][1] / cpu:6.1f}x) vs '
                             f'{base.split("/")[0]}')
                    if 'loop-numpy' in t and '/' not in name:
                        line += f', {t["loop-numpy"][0] / sec:5.1f}x vs loop-numpy'
                print(line)
            summary.append((torch.get_num_threads(), num_anchors, t['batched'], t['loop-torch'],
                            t.get('loop-numpy')))
    print('\nsummary (batched = the inside rule as PGDLoss(semantics="paper") runs it; '
          'wall-clock, process CPU time in brackets):')
    for threads, a, (tb, cb), (tl, cl), tn in summary:
        speed, speed_cpu = tl / tb, cl / cb
        verdict = ('MEETS' if min(speed, speed_cpu) >= TARGET_SPEEDUP else
                   'MISSES' if max(speed, speed_cpu) < TARGET_SPEEDUP else 'BORDERLINE')
        extra = f'; {tn[0] / tb:.1f}x ({tn[1] / cb:.1f}x) vs loop-numpy' if tn else ''
        print(f'  threads={threads} A={a}: batched {tb * 1e3:.1f} ms ({cb * 1e3:.1f}), '
              f'loop-torch {tl * 1e3:.1f} ms ({cl * 1e3:.1f}) -> {speed:.1f}x ({speed_cpu:.1f}x)'
              f' {verdict} the >= {TARGET_SPEEDUP:.0f}x target{extra}')


if __name__ == '__main__':
    main()
