"""``python -m pgd test CONFIG CHECKPOINT --out metrics.json``: evaluate one checkpoint.

COCO metrics come from MMDetection's CocoMetric (pycocotools): AP, AP50, AP75, APS, APM, APL in
percent. ``--crowd`` adds the CrowdHuman-protocol metrics (MR^-2, AP@0.5, JI) computed by
``pgd.evaluation.crowd_metrics`` from the same detections. The JSON is written atomically and
carries provenance (config + hash, seed, git commit, versions, dataset marked synthetic/real,
and, for a ``final.pth`` of ``pgd train``, ``training``: whether and from which epochs the run
was resumed).

A checkpoint with NaN or infinite weights is not evaluated: its metrics are all None and the
JSON says ``"diverged": true`` with the reason (tables show such a run as *diverged*).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

COCO_KEYS = {'AP': 'bbox_mAP', 'AP50': 'bbox_mAP_50', 'AP75': 'bbox_mAP_75',
             'APS': 'bbox_mAP_s', 'APM': 'bbox_mAP_m', 'APL': 'bbox_mAP_l'}
CROWD_KEYS = ('MR', 'AP', 'JI')  # pgd.evaluation.crowd_metrics.evaluate_crowd


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction
    p.add_argument('config', help='config file or name under config/detectors')
    p.add_argument('checkpoint', help='weights to evaluate (e.g. a run\'s final.pth)')
    p.add_argument('--out', required=True, help='metrics JSON to write')
    p.add_argument('--data-root', default=None)
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    p.add_argument('--seed', type=int, default=None,
                   help='seed of the run (recorded; read from the checkpoint when omitted)')
    p.add_argument('--crowd', action='store_true', help='also compute MR^-2, AP@0.5 and JI')
    p.add_argument('--run-info', nargs='+', action=DictAction, default=None,
                   help='identifies the run, e.g. run=... detector=atss setting=pgd; dotted keys '
                   'nest (options.k=9 -> {"options": {"k": 9}})')
    p.add_argument('--fingerprint', default=None,
                   help="the workflow's run fingerprint (pgd.workflow.fingerprint), recorded "
                   'as provenance.run_fingerprint so `pgd estimate` can tell whose settings a '
                   'benchmark timed')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)


def nest_dotted(items: dict) -> dict:
    """``{'options.k': 9, 'seed': 0}`` -> ``{'options': {'k': 9}, 'seed': 0}``: the run's options
    reach the command line as dotted keys (mmengine's DictAction takes lists but no mappings)
    and are stored as the structured mapping they came from."""
    out: dict = {}
    for key, value in items.items():
        *parents, leaf = str(key).split('.')
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def coco_metrics(raw: dict) -> dict:
    """Runner.test() output (fractions, 'coco/bbox_mAP'...) -> percent with paper names.

    pycocotools reports -1 for an area range without any ground truth (e.g. no large objects
    in a small val set); that is "not defined", written as None, never as -100 %.
    """
    out = {}
    for name, key in COCO_KEYS.items():
        value = raw.get(f'coco/{key}')
        undefined = value is None or float(value) < 0
        out[name] = None if undefined else round(100.0 * float(value), 2)
    return out


def check_checkpoint(path: Path) -> None:
    from pgd.errors import UserError
    if not path.is_file():
        raise UserError(f'checkpoint not found: {path} (train it first: python -m pgd train)')
    if path.stat().st_size == 0:
        raise UserError(f'checkpoint is empty: {path}')


def read_checkpoint(path: Path):
    """The checkpoint's contents (``meta``, ``state_dict``), or None if unreadable here (the
    Runner then reports why when it loads it)."""
    import torch
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # a checkpoint without readable meta still evaluates
        return None
    return ckpt if isinstance(ckpt, dict) else None


def non_finite_tensors(state_dict) -> list:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    import torch
    return [name for name, t in (state_dict or {}).items()
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def metric_names(crowd: bool) -> list:
    return [*CROWD_KEYS, *(f'coco_{k}' for k in COCO_KEYS)] if crowd else list(COCO_KEYS)


def diverged_reason(ckpt: dict | None):
    """Why a checkpoint's model counts as diverged (non-finite weights), or None."""
    bad = non_finite_tensors((ckpt or {}).get('state_dict'))
    if not bad:
        return None
    return (f'non-finite weights in {len(bad)} tensor(s), e.g. {", ".join(bad[:3])}')


def evaluate(cfg, ckpt: Path, crowd: bool):
    """``(metrics, no_detections)`` of ``ckpt`` on the config's test set."""
    from mmengine.runner import Runner

    from pgd.engine.config_utils import annotation_path
    with tempfile.TemporaryDirectory(prefix='pgd-test-') as tmp:
        cfg.work_dir = tmp
        cfg.load_from = str(ckpt)
        cfg.resume = False
        cfg.launcher = 'none'
        cfg.test_evaluator['outfile_prefix'] = os.path.join(tmp, 'dets')
        # Keep the raw detections on disk so the crowd metrics read exactly what COCO scored.
        cfg.test_evaluator['format_only'] = False
        runner = Runner.from_cfg(cfg)
        raw = runner.test()
        metrics = coco_metrics(raw)
        no_detections = not any(k.startswith('coco/') for k in raw)
        if no_detections:
            # CocoMetric returns nothing when the model output no box above score_thr; a
            # detector that detects nothing has recall 0, so every AP is 0 by definition.
            metrics = {k: 0.0 for k in COCO_KEYS}
        if crowd:
            from pgd.evaluation.crowd_metrics import evaluate_crowd
            with open(os.path.join(tmp, 'dets.bbox.json')) as f:
                dets = json.load(f)
            scores = evaluate_crowd(str(annotation_path(cfg, 'test_dataloader')), dets)
            metrics = {**{k: round(float(v), 2) for k, v in scores.items()},
                       **{f'coco_{k}': v for k, v in metrics.items()}}
    return metrics, no_detections


def run(args) -> int:
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    from pgd.engine.config_utils import (check_split_data, check_writable, dataset_info,
                                         load_config, retarget_data_root, select_device)
    from pgd.engine.registry import register_all
    from pgd.engine.safe_load import allow_mmengine_checkpoints
    from pgd.engine.workdir import training_history
    from pgd.io import atomic_write_json
    from pgd.provenance import file_sha256, portable_path, provenance

    ckpt = Path(args.checkpoint)
    check_checkpoint(ckpt)
    path, cfg = load_config(args.config, args.cfg_options)
    if args.data_root:
        retarget_data_root(cfg, args.data_root)
    check_split_data(cfg, 'test_dataloader')  # the same data check as training
    check_writable(Path(args.out).resolve().parent)  # not after the whole evaluation
    device = select_device(args.device)
    allow_mmengine_checkpoints()
    register_all()
    contents = read_checkpoint(ckpt)
    seed = args.seed if args.seed is not None else (contents or {}).get('meta', {}).get('seed')
    diverged = diverged_reason(contents)
    if diverged:
        print(f'[pgd test] {ckpt}: {diverged}; not evaluated, metrics marked diverged',
              file=sys.stderr, flush=True)
        metrics, no_detections = {k: None for k in metric_names(args.crowd)}, False
    else:
        metrics, no_detections = evaluate(cfg, ckpt, args.crowd)
    sha = file_sha256(ckpt)
    history = training_history(ckpt, sha)
    result = {
        'metrics': metrics,
        'provenance': provenance(
            config_path=path, config_text=cfg.pretty_text, seed=seed,
            dataset=dataset_info(cfg), device=device,
            checkpoint=portable_path(ckpt, Path(args.out).resolve().parent),
            checkpoint_sha256=sha, **({'training': history} if history else {}),
            **({'run_fingerprint': args.fingerprint} if args.fingerprint else {})),
        'run': nest_dotted(args.run_info or {}),
        'no_detections': no_detections,
        'diverged': bool(diverged),
    }
    if diverged:
        result['diverged_reason'] = diverged
    atomic_write_json(args.out, result)
    print(f'[pgd test] {json.dumps(metrics)} -> {args.out}', flush=True)
    return 0
