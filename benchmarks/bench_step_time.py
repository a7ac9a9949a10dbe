"""Benchmark: mini-scale training-step overhead of PGD and the other feature methods.

For each detector (all five by default) the mini student ``config/detectors/mini/
<det>_r18_student.py`` and teacher ``<det>_r34_teacher.py`` are built with mmdet's
``MODELS.build`` (after ``pgd.engine.registry.register_all()``), and on one batch of 8 random
256 x 256 images with ~10 random GTs each (DetDataSample / InstanceData) these are timed side
by side, interleaved (every repeat runs all of them, in rotating order):

* ``student``  -- plain student train step: ``student.loss`` + ``parse_losses`` + backward +
                  SGD step;
* ``teacher``  -- teacher forward under ``no_grad`` (``extract_feat`` + ``bbox_head``);
* one ``TeacherStudentDistiller`` train step per method of ``--methods`` (default PGD, FGD,
  FGFI, DeFeat, FRS, FKD), each with the losses of ``config/distill/<method>.py``
  (per-detector overrides applied): teacher forward, student loss, head decoding, the
  method's loss, backward, SGD step.

It prints the medians and, per method, the ratio ``t(method) / (t(student) + t(teacher))``
with a 95 % bootstrap interval over the rounds (PGD target <= 1.05: MEETS when the whole
interval is below it, MISSES when all of it is above, UNDECIDED otherwise), plus, on a
``DistillBatch`` captured from the same step, the PGW-only time (both masks) and the PGD loss
alone (forward, and forward + backward into detached student features), and the ATen operators
each step dispatches (``op_count.py``: beyond the student step and teacher forward, what a
method adds where a step is bound by the host, as on a GPU).
Wall-clock and process CPU time (user + system of all threads) are both reported; on
a shared machine the CPU-time ratio is the less load-sensitive of the two. Nothing is asserted;
last figures: benchmarks/README.md.

    python benchmarks/bench_step_time.py [--detectors atss,fcos] [--methods pgd,fgd]
                                         [--repeats 15] [--threads 0] [--batch 8] [--size 256]
                                         [--device cuda]
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

from pgd.catalog import feature_method_names
from timing import interleaved

TARGET_RATIO = 1.05


def build_models(s_model: dict, t_model: dict, det: str, methods=('pgd', ),
                 device: str = 'cpu'):
    """From student / teacher model configs: the stand-alone student and teacher, and one
    distiller per method (its ``config/distill/<method>.py`` losses for ``det``) sharing their
    weights (so every step sees the same predictions), on ``device``."""
    from mmdet.registry import MODELS

    from pgd.engine.distill import load_method, method_losses
    torch.manual_seed(0)
    student = MODELS.build(copy.deepcopy(s_model))
    teacher = MODELS.build(copy.deepcopy(t_model))
    student.init_weights()
    teacher.init_weights()
    student.to(device).train()
    teacher.to(device).eval()
    distillers = {}
    for method in methods:
        losses = method_losses(load_method(method), det, None)
        distiller = MODELS.build(dict(type='TeacherStudentDistiller', student=s_model,
                                      teacher=t_model, distill_losses=losses,
                                      init_student_from_teacher=False))
        distiller.student.load_state_dict(student.state_dict())
        distiller.teacher.load_state_dict(teacher.state_dict())
        distiller.to(device).train()
        distillers[method] = distiller
    return student, teacher, distillers


def mini_models(det: str):
    """The model configs of the mini student ``<det>_r18_student`` and teacher
    ``<det>_r34_teacher``."""
    from pgd.engine.config_utils import load_config
    _, s_cfg = load_config(f'mini/{det}_r18_student')
    _, t_cfg = load_config(f'mini/{det}_r34_teacher')
    return s_cfg.model, t_cfg.model


def random_batch(batch: int, size: int, num_classes: int, seed: int = 0, device: str = 'cpu'):
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
        samples.append(ds.to(device))
    return x.to(device), samples


def ratio_of_medians(d: dict, method: str = 'pgd') -> float:
    """``med(d[method]) / (med(d['student']) + med(d['teacher']))`` of per-round seconds."""
    med = {n: statistics.median(d[n]) for n in (method, 'student', 'teacher')}
    return med[method] / (med['student'] + med['teacher'])


def step_ratios(wall: dict, cpu: dict, method: str = 'pgd'):
    """Ratio of medians, and median of the per-round ratios (robust to load drifting between
    rounds), for wall and CPU time, of ``method``'s step against student step + teacher
    forward."""
    def ratios(d):
        of_medians = ratio_of_medians(d, method)
        per_round = statistics.median(
            p / (s + t) for p, s, t in zip(d[method], d['student'], d['teacher']))
        return of_medians, per_round
    return ratios(wall), ratios(cpu)


def ratio_interval(d: dict, method: str = 'pgd', level: float = 0.95, draws: int = 2000,
                   seed: int = 0):
    """Percentile-bootstrap interval of the ratio of medians
    ``med(d[method]) / (med(d['student']) + med(d['teacher']))``.

    Rounds are resampled as wholes (one index draws the same round of every function), so the
    pairing of the interleaved rounds is kept. On a shared machine the spread between calls is
    several per cent, as large as the margin to the target: the interval says whether one run
    decides the target or not. Fixed ``seed``: the same timings give the same interval."""
    import numpy as np
    times = np.array([d[method], d['student'], d['teacher']], dtype=float)  # (3, R)
    rounds = times.shape[1]
    if rounds < 2:
        raise ValueError(f'a bootstrap interval needs >= 2 rounds, got {rounds}')
    idx = np.random.default_rng(seed).integers(0, rounds, size=(draws, rounds))
    med = np.median(times[:, idx], axis=2)                                   # (3, draws)
    ratios = med[0] / (med[1] + med[2])
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(ratios, [tail, 100.0 - tail])
    return float(lo), float(hi)


def verdict(interval, target: float = TARGET_RATIO) -> str:
    """MEETS when the whole interval is <= target, MISSES when all of it is above, otherwise
    UNDECIDED (the run's spread straddles the target: more repeats or a quieter machine)."""
    lo, hi = interval
    return 'MEETS' if hi <= target else 'MISSES' if lo > target else 'UNDECIDED'


def _train_step(model, opt, x, samples, check_finite: bool = False):
    """One train step of ``model`` on (x, samples); ``check_finite``: raise on a non-finite
    loss (a host sync per step)."""
    def step():
        opt.zero_grad()
        loss, _ = model.parse_losses(model.loss(x, samples))
        if check_finite and not torch.isfinite(loss):
            raise FloatingPointError(f'non-finite step loss {float(loss)}')
        loss.backward()
        opt.step()
    return step


def _pgd_parts(distiller, x, samples):
    """PGW alone, the PGD loss forward, and forward + backward, on a DistillBatch of this step
    whose student features are detached leaves."""
    from pgd.distill.pgw import pgw_masks_from_batch
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

    return dict(pgw=pgw_only, pgd_loss_fwd=loss_forward, pgd_loss_fwd_bwd=loss_fwd_bwd), batch


def bench_detector(det: str, args):
    methods = args.methods.split(',')
    student, teacher, distillers = build_models(*mini_models(det), det, methods, args.device)
    x, samples = random_batch(args.batch, args.size, student.bbox_head.num_classes,
                              device=args.device)
    params = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
    fns = dict(student=_train_step(student, torch.optim.SGD(params(student), lr=1e-5,
                                                            momentum=0.9), x, samples))

    @torch.no_grad()
    def teacher_forward():
        teacher.bbox_head(teacher.extract_feat(x))

    fns['teacher'] = teacher_forward
    for method, distiller in distillers.items():
        opt = torch.optim.SGD(params(distiller), lr=1e-5, momentum=0.9)
        fns[method] = _train_step(distiller, opt, x, samples)
    batch = None
    if 'pgd' in distillers:
        parts, batch = _pgd_parts(distillers['pgd'], x, samples)
        fns.update(parts)
    load0 = os.getloadavg()[0]
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)
    wall, cpu = interleaved(fns, args.repeats, sync)
    load1 = os.getloadavg()[0]
    t = {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in fns}
    print(f'\n{det.upper()}: B={args.batch}, {args.size}x{args.size}, methods {methods}; '
          f'threads={torch.get_num_threads()}; loadavg(1 min) {load0:.1f} -> {load1:.1f}')
    if batch is not None:
        pgd_loss = distillers['pgd'].distill_losses['pgd']
        print(f'  N={sum(h * w for h, w in batch.level_sizes)} locations, '
              f'{int(batch.gt_valid.sum())} GTs, PGDLoss({pgd_loss.extra_repr()})')
    for name, (w, c) in t.items():
        print(f'  {name:18s} wall {w * 1e3:8.1f} ms   cpu {c * 1e3:8.1f} ms')
    from op_count import aten_op_count
    ops = {name: aten_op_count(fns[name]) for name in ['student', 'teacher'] + methods}
    print('  ATen ops per step: ' + ', '.join(
        [f'student {ops["student"]}', f'teacher {ops["teacher"]}']
        + [f'{m} {ops[m]} ({ops[m] - ops["student"] - ops["teacher"]:+d})' for m in methods]))
    ratios = {}
    for method in methods:
        (rw, rw_round), (rc, rc_round) = step_ratios(wall, cpu, method)
        ci_w, ci_c = ratio_interval(wall, method), ratio_interval(cpu, method)
        ratios[method] = dict(wall=rw, wall_round=rw_round, cpu=rc, cpu_round=rc_round,
                              wall_ci=ci_w, cpu_ci=ci_c)
        over_w = t[method][0] - t['student'][0] - t['teacher'][0]
        print(f'  ratio t({method}) / (t(student) + t(teacher)): wall {rw:.3f} '
              f'[{ci_w[0]:.3f}, {ci_w[1]:.3f}] (median per round {rw_round:.3f}), cpu {rc:.3f} '
              f'[{ci_c[0]:.3f}, {ci_c[1]:.3f}] (per round {rc_round:.3f}); overhead '
              f'{over_w * 1e3:.1f} ms wall')
    rounds = dict(wall_s=wall, cpu_s=cpu, ops=ops, loadavg_1min=[load0, load1])
    return det, ratios, t, rounds


def write_json(path: str, args, results, commit: str) -> None:
    """Every round's timings (s), the ratios with their intervals, the load and the code's
    commit (taken when the run started), for analyses the printed medians do not allow
    (pooling runs, other estimators)."""
    import platform

    from pgd.io import atomic_write_json
    atomic_write_json(path, dict(
        benchmark='bench_step_time', git_commit=commit,
        args={k: v for k, v in vars(args).items() if k != 'json'},  # no machine path inside
        torch=torch.__version__, threads=torch.get_num_threads(), cpus=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        time=time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        detectors={det: dict(ratios=ratios, **rounds) for det, ratios, _, rounds in results}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--detectors', default='atss,fcos,gfl,ddod,autoassign')
    ap.add_argument('--methods', default=','.join(feature_method_names()),
                    help='feature-imitation methods to time (each is one distiller)')
    ap.add_argument('--repeats', type=int, default=15)
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    ap.add_argument('--json', help='also write every round\'s timings to this JSON file')
    args = ap.parse_args()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        ap.error(f'--device {args.device} but CUDA is not available')
    from pgd.catalog import detector_names
    for flag, given, known in (('--detectors', args.detectors, detector_names()),
                               ('--methods', args.methods, feature_method_names())):
        unknown = sorted(set(given.split(',')) - set(known))
        if unknown:
            ap.error(f'unknown {flag} {",".join(unknown)} (known: {",".join(known)})')
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger

    from pgd.engine.registry import register_all
    warnings.filterwarnings('ignore')
    register_all()
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no init_weights chatter
    print(f'device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} '
          f'cpus={os.cpu_count()} '
          f'loadavg={os.getloadavg()} repeats={args.repeats} (medians, interleaved)')
    from pgd.provenance import git_commit
    commit = git_commit()      # the code measured, before anyone edits the checkout meanwhile
    results = [bench_detector(det, args) for det in args.detectors.split(',')]
    print('\nsummary: t(method step) / (t(student step) + t(teacher forward)), ratio of '
          'medians [95 % bootstrap interval over rounds]; PGD target <= '
          f'{TARGET_RATIO:.2f}, judged on the wall-time interval')
    for det, ratios, t, _ in results:
        for method, r in ratios.items():
            judged = f'  {verdict(r["wall_ci"])}' if method == 'pgd' else ''
            print(f'  {det:10s} {method:7s} wall {r["wall"]:.3f} [{r["wall_ci"][0]:.3f}, '
                  f'{r["wall_ci"][1]:.3f}] (per round {r["wall_round"]:.3f})  cpu '
                  f'{r["cpu"]:.3f} [{r["cpu_ci"][0]:.3f}, {r["cpu_ci"][1]:.3f}]{judged}')
        if 'pgw' in t:
            print(f'  {det:10s} PGW {t["pgw"][0] * 1e3:.1f} ms, PGD loss fwd+bwd '
                  f'{t["pgd_loss_fwd_bwd"][0] * 1e3:.1f} ms, student step '
                  f'{t["student"][0] * 1e3:.0f} ms, teacher fwd {t["teacher"][0] * 1e3:.0f} ms')
    if args.json:
        write_json(args.json, args, results, commit)
        print(f'\nevery round\'s timings: {args.json}')


if __name__ == '__main__':
    main()
