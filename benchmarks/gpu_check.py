"""One-device check of PGD (and its competitors) at paper scale: step-time ratio, PGW, peak
memory, images/s.

Written to be run as one short script the first time a CUDA device is available (<= 8 min on
one GPU); ``--device cpu --tiny`` runs the same code paths on the CPU in seconds, which the test
suite does (``tests/test_gpu_check.py``) so that the script cannot rot.

What it does, on ``--device`` (default ``cuda``):

1. builds the paper-scale ATSS teacher ``config/detectors/paper/atss_r101_teacher.py`` and
   student ``atss_r50_student.py`` with **random weights** (the ImageNet ``init_cfg`` is
   dropped: nothing is downloaded) and one distiller per method of ``--methods`` (default:
   every feature method of the catalog, PGD and its competitors, each with the losses of
   ``config/distill/<method>.py``);
2. on one batch of random images at the paper's input size and per-GPU batch (2 images of
   1333 x 800, ~10 COCO-like GTs each; ``--tiny``: 2 images of 320 x 192) times, interleaved,
   (a) the student train step, (b) the teacher forward, (c) each method's distillation train
   step, and prints ``t(c) / (t(a) + t(b))`` and the images/s of (a) and (c);
3. measures the peak device memory of (a) and (c) (CUDA only; ``n/a`` on CPU) and counts the
   ATen operators each dispatches (where a step is bound by the host, the cost of (c) beyond
   (a) + (b) follows this count), and on CUDA the kernel time against the wall time of (a) and
   (c) under ``torch.profiler`` (kernel time well below wall time: bound by the host);
4. times PGW alone on the COCO-sized case of ``bench_pgw.py`` (8 images x 30 GTs, N = 22,300;
   ``--tiny``: 2 x 5) for both candidate rules, on the device, and checks that its masks equal
   those of the per-GT torch loop run on the CPU bit for bit (a mismatch fails the check).

It prints one summary table and exits non-zero if any part failed (the other parts still run).

    python benchmarks/gpu_check.py                      # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --tiny  # smoke test anywhere
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import sys
import time
import traceback
import warnings

import torch

from pgd.catalog import feature_method_names

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PAPER_SIZE = (800, 1333)           # (H, W): MMDetection's 1333 x 800 COCO resize
TINY_SIZE = (192, 320)


def _drop_pretrained(model_cfg):
    """Random weights: no ``Pretrained`` init (it would download ImageNet weights)."""
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg['backbone'].pop('init_cfg', None)
    return model_cfg


def build(device, methods=('pgd', )):
    """The paper-scale ATSS student and teacher (random weights) and one distiller per method,
    as :func:`bench_step_time.build_models` builds them."""
    from bench_step_time import build_models

    from pgd.engine.config_utils import load_config
    _, s_cfg = load_config('paper/atss_r50_student')
    _, t_cfg = load_config('paper/atss_r101_teacher')
    return build_models(_drop_pretrained(s_cfg.model), _drop_pretrained(t_cfg.model), 'atss',
                        methods, device)


def image_batch(num, hw, num_classes, device, seed=0):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    x = torch.randn(num, 3, h, w, generator=g)
    samples = []
    for _ in range(num):
        n = int(torch.randint(8, 13, (1, ), generator=g))
        side = torch.exp(torch.log(torch.tensor(12.)) + torch.rand(n, generator=g)
                         * torch.log(torch.tensor(min(h, w) * 0.8 / 12.)))
        aspect = torch.exp((torch.rand(n, generator=g) - 0.5) * 2 * torch.log(torch.tensor(3.)))
        bw, bh = side * aspect.sqrt(), side / aspect.sqrt()
        cx, cy = torch.rand(n, generator=g) * w, torch.rand(n, generator=g) * h
        boxes = torch.stack([(cx - bw / 2).clamp(0, w), (cy - bh / 2).clamp(0, h),
                             (cx + bw / 2).clamp(0, w), (cy + bh / 2).clamp(0, h)], -1)
        ds = DetDataSample(metainfo=dict(img_shape=hw, pad_shape=hw, ori_shape=hw,
                                         batch_input_shape=hw, scale_factor=(1., 1.)))
        inst = InstanceData()
        inst.bboxes = boxes
        inst.labels = torch.randint(0, num_classes, (n, ), generator=g)
        ds.gt_instances = inst
        samples.append(ds.to(device))
    return x.to(device), samples


def sync_for(device):
    return torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)


def timed(fns, repeats, sync):
    """Median wall seconds per function over :func:`timing.interleaved` rounds (all
    of them per round, in rotating order, after two warm-up calls: allocator, cudnn)."""
    from timing import interleaved
    wall, _ = interleaved(fns, repeats, sync)
    return {n: statistics.median(v) for n, v in wall.items()}


def peak_memory(fn, device, sync):
    """Peak allocated device memory (MiB) of one call, or None off CUDA."""
    if not device.startswith('cuda'):
        return None
    sync()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync()
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def device_busy(fn, device, sync, calls=3):
    """(kernel ms, wall ms, kernel launches) per call of ``fn`` under ``torch.profiler``, or
    None off CUDA. Kernel time well below wall time means the step is bound by the host."""
    if not device.startswith('cuda'):
        return None
    from torch.profiler import ProfilerActivity, profile
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        wall = time.perf_counter() - t0
    events = prof.events()
    # device-side activities (kernels, copies), not the GPU spans of record_function
    # annotations such as the optimiser's, which would count their kernels twice
    kernel_us = sum(e.time_range.elapsed_us() for e in events
                    if e.device_type == torch.autograd.DeviceType.CUDA
                    and not getattr(e, 'is_user_annotation', False))
    launches = sum(1 for e in events if 'LaunchKernel' in e.name)
    return kernel_us / 1e3 / calls, wall * 1e3 / calls, launches // calls


def check_step(args, report):
    from bench_step_time import _train_step
    from op_count import aten_op_count
    device, sync = args.device, sync_for(args.device)
    methods = args.methods.split(',')
    student, teacher, distillers = build(device, methods)
    hw = TINY_SIZE if args.tiny else PAPER_SIZE
    x, samples = image_batch(args.batch, hw, student.bbox_head.num_classes, device)

    @torch.no_grad()
    def teacher_forward():
        teacher.bbox_head(teacher.extract_feat(x))

    def train_step(model):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        return _train_step(model, opt, x, samples, check_finite=True)

    fns = dict(student=train_step(student), teacher=teacher_forward)
    fns.update({m: train_step(d) for m, d in distillers.items()})
    t = timed(fns, args.repeats, sync)
    ops = {name: aten_op_count(fn) for name, fn in fns.items()}
    report.append(('input', f'{args.batch} x {hw[1]}x{hw[0]}, ATSS R101 -> R50 (random weights)'))
    report.append(('steps', 'time, t / (t(student) + t(teacher)), images/s, peak memory, '
                   'ATen ops (a method\'s beyond student + teacher)'))
    base = t['student'] + t['teacher']
    for name, fn in fns.items():
        mem = None if name == 'teacher' else peak_memory(fn, device, sync)
        ratio = '-' if name in ('student', 'teacher') else f'{t[name] / base:.3f}'
        ips = '-' if name == 'teacher' else f'{args.batch / t[name]:.2f}'
        extra = (f'{ops[name]}' if name in ('student', 'teacher') else
                 f'{ops[name]} ({ops[name] - ops["student"] - ops["teacher"]:+d})')
        report.append((f'  {name}', f'{t[name] * 1e3:8.1f} ms  {ratio:>5}  {ips:>6} img/s  '
                       f'{"n/a" if mem is None else f"{mem:.0f} MiB":>9}  {extra}'))
    try:
        busy = {name: device_busy(fns[name], device, sync) for name in ['student'] + methods}
        report.append(('GPU kernels / wall per step, launches', 'n/a' if busy['student'] is None
                       else '; '.join(f'{n} {k:.0f} / {w:.0f} ms, {c}'
                                      for n, (k, w, c) in busy.items())))
    except Exception as exc:          # a diagnostic: say why it is missing, keep the figures
        report.append(('GPU kernels / wall per step, launches', f'unavailable ({exc!r})'))


def check_pgw(args, report):
    from bench_pgw import coco_like_batch

    from pgd.distill.pgw import pgw_masks
    sync = sync_for(args.device)
    batch, gts = (2, 5) if args.tiny else (8, 30)
    case = coco_like_batch(1, batch=batch, num_gts=gts, device=args.device)
    fns = {cand: (lambda c=cand: pgw_masks(**case, xis=(0.8, 0.6), k=30, candidates=c))
           for cand in ('all_then_mask', 'inside')}
    t = timed(fns, args.repeats, sync)
    for cand, sec in t.items():
        report.append((f'PGW {batch} x {gts} GTs, N={case["points"].shape[0]}, {cand}',
                       f'{sec * 1e3:.1f} ms'))
    # the masks must equal, bit for bit, the plain per-GT torch loop run on the CPU
    from bench_pgw import compare
    from pgw_reference import pgw_loop_torch_multi
    cpu_case = coco_like_batch(1, batch=batch, num_gts=gts)
    verdicts = {cand: compare(fn(), pgw_loop_torch_multi(**cpu_case, xis=(0.8, 0.6), k=30,
                                                         candidates=cand))
                for cand, fn in fns.items()}
    report.append(('PGW masks vs per-GT loop on CPU',
                   ', '.join(f'{c} {v}' for c, v in verdicts.items())))
    if any(v != '==' for v in verdicts.values()):
        raise AssertionError(f'PGW masks on {args.device} differ from the CPU reference: '
                             f'{verdicts}')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', help='cuda, cuda:N or cpu')
    p.add_argument('--tiny', action='store_true', help='small inputs (CPU smoke test)')
    p.add_argument('--batch', type=int, default=2, help='images per step (paper: 2 per GPU)')
    p.add_argument('--methods', default=','.join(feature_method_names()),
                   help='distillation methods to time (default: every feature method, '
                   f'{",".join(feature_method_names())})')
    p.add_argument('--repeats', type=int, default=None,
                   help='timed rounds (default 10; 2 with --tiny)')
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.tiny else 10)
    unknown = sorted(set(args.methods.split(',')) - set(feature_method_names()))
    if unknown:
        p.error(f'unknown --methods {",".join(unknown)} (feature methods: '
                f'{",".join(feature_method_names())})')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print(f'error: --device {args.device} but CUDA is not available '
              f'(use --device cpu --tiny for a CPU smoke run)', file=sys.stderr)
        return 2
    from mmengine.logging import MMLogger

    from pgd.engine.registry import register_all
    warnings.filterwarnings('ignore')
    MMLogger.get_instance('gpu_check', log_level='WARNING')
    logging.getLogger().setLevel(logging.WARNING)
    register_all()
    dev_name = (torch.cuda.get_device_name(torch.device(args.device))
                if args.device.startswith('cuda') else f'CPU ({os.cpu_count()} cores)')
    report = [('device', dev_name), ('torch', torch.__version__)]
    failed = []
    start = time.perf_counter()
    for name, check in (('step', check_step), ('pgw', check_pgw)):
        try:
            check(args, report)
        except Exception:                     # report and go on: one summary at the end
            traceback.print_exc()
            failed.append(name)
            report.append((f'{name} check', 'FAILED (traceback above)'))
    report.append(('total time', f'{time.perf_counter() - start:.0f} s'))
    width = max(len(k) for k, _ in report)
    print('\nPGD GPU check' + (' (tiny CPU smoke run)' if args.tiny else ''))
    for key, value in report:
        print(f'  {key:<{width}}  {value}')
    if failed:
        print(f'FAILED: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
