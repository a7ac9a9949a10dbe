"""``python -m pgd test CONFIG CHECKPOINT --out metrics.json``: evaluate one checkpoint.

COCO metrics come from MMDetection's CocoMetric (pycocotools): AP, AP50, AP75, APS, APM, APL in
percent. ``--crowd`` adds the CrowdHuman-protocol metrics (MR^-2, AP@0.5, JI) computed by
``pgd.evaluation.crowd_metrics`` from the same detections. The JSON is written atomically and
carries provenance (config + hash, seed, git commit, versions, dataset marked synthetic/real).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

COCO_KEYS = {'AP': 'bbox_mAP', 'AP50': 'bbox_mAP_50', 'AP75': 'bbox_mAP_75',
             'APS': 'bbox_mAP_s', 'APM': 'bbox_mAP_m', 'APL': 'bbox_mAP_l'}


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
                   help='identifies the table row, e.g. table=table1 detector=atss setting=pgd')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)


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


def read_checkpoint_seed(path: Path):
    import torch
    try:
        meta = torch.load(path, map_location='cpu', weights_only=True).get('meta', {})
    except Exception:  # a checkpoint without readable meta still evaluates
        return None
    return meta.get('seed')


def run(args) -> int:
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    from pgd.engine.config_utils import (annotation_path, check_annotation_file, dataset_info,
                                         load_config, retarget_data_root, select_device)
    from pgd.engine.registry import register_all
    from pgd.engine.safe_load import allow_mmengine_checkpoints
    from pgd.io import atomic_write_json
    from pgd.provenance import file_sha256, provenance

    ckpt = Path(args.checkpoint)
    check_checkpoint(ckpt)
    path, cfg = load_config(args.config, args.cfg_options)
    if args.data_root:
        retarget_data_root(cfg, args.data_root)
    check_annotation_file(annotation_path(cfg, 'test_dataloader'))
    device = select_device(args.device)
    allow_mmengine_checkpoints()
    register_all()
    seed = args.seed if args.seed is not None else read_checkpoint_seed(ckpt)

    from mmengine.runner import Runner
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
        if args.crowd:
            from pgd.evaluation.crowd_metrics import evaluate_crowd
            with open(os.path.join(tmp, 'dets.bbox.json')) as f:
                dets = json.load(f)
            crowd = evaluate_crowd(str(annotation_path(cfg, 'test_dataloader')), dets)
            metrics = {**{k: round(float(v), 2) for k, v in crowd.items()},
                       **{f'coco_{k}': v for k, v in metrics.items()}}
    result = {
        'metrics': metrics,
        'provenance': provenance(
            config_path=path, config_text=cfg.pretty_text, seed=seed,
            dataset=dataset_info(cfg), device=device, checkpoint=str(ckpt),
            checkpoint_sha256=file_sha256(ckpt)),
        'run': dict(args.run_info or {}),
        'no_detections': no_detections,
    }
    atomic_write_json(args.out, result)
    print(f'[pgd test] {json.dumps(metrics)} -> {args.out}', flush=True)
    return 0
