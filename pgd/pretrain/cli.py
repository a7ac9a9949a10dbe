"""``python -m pgd pretrain-backbone --size mini_r18 --out DIR``: synthetic pretraining of one
detector backbone, the mini scale's stand-in for ImageNet pretraining.

Trains ``size_backbone`` of ``config/detectors/_base_/sizes/<size>.py`` to classify the shape of
object crops from SYNTHETIC scenes (:mod:`pgd.pretrain.data` says why this task and why its
images can never be detection images) with MMEngine's Runner: its optimizer wrapper, LR
schedulers, checkpoint hook (``DIR/runner/``), validation loop on held-out pretraining val
scenes, and deterministic seeding on CPU. On success it writes, atomically and only then:

* ``DIR/backbone.pth`` -- ``{'meta': ..., 'state_dict': ...}`` whose keys are exactly the
  backbone's own parameter names, loadable by any detector config of that size with
  ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint='DIR/backbone.pth')``;
* ``DIR/pretrain.json`` -- task, val accuracy (per epoch), schedule, wall time, seed and
  provenance (no machine-absolute paths).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

TASK = ('synthetic pretraining: 10-way shape classification (cross-entropy) of object crops '
        'from SYNTHETIC shapes scenes')


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ('Synthetic pretraining of a detector backbone (the mini scale\'s stand-in '
                     'for ImageNet): shape classification of object crops from SYNTHETIC '
                     'scenes that are never detection images. Writes DIR/backbone.pth and '
                     'DIR/pretrain.json.')
    p.add_argument('--size', required=True,
                   help='backbone size: a file of config/detectors/_base_/sizes/ '
                        '(mini_r18, mini_r34, mini_mbv2)')
    p.add_argument('--out', required=True, help='output directory')
    p.add_argument('--num-train', type=int, default=2000,
                   help='pretraining train scenes (each gives one crop per object)')
    p.add_argument('--num-val', type=int, default=300, help='held-out pretraining val scenes')
    p.add_argument('--image-size', type=int, default=128,
                   help="scene side in px (the mini detectors' 128)")
    p.add_argument('--crop-size', type=int, default=64, help='crop side in px')
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=2e-3, help='AdamW peak learning rate')
    p.add_argument('--seed', type=int, default=0,
                   help='seeds both the pretraining images and the training')
    p.add_argument('--difficulty', nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                   help='generator difficulty knobs, as for make-data (default: the '
                        "generator's defaults; the workflow passes its shapes dataset's)")
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')


def _check_args(args) -> None:
    from pgd.errors import UserError
    for name in ('num_train', 'num_val', 'epochs', 'batch_size', 'crop_size'):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.image_size < 64:
        raise UserError(f'--image-size must be >= 64, got {args.image_size}')
    if args.seed < 0 or not args.lr > 0:
        raise UserError('--seed must be >= 0 and --lr > 0')


def build_config(args, backbone: dict, difficulty: dict, device: str):
    """The MMEngine config of one synthetic pretraining run."""
    from mmengine.config import Config

    from pgd.pretrain.data import NUM_CLASSES

    def loader(part, num, shuffle, pipeline):
        return dict(batch_size=args.batch_size, num_workers=0, persistent_workers=False,
                    sampler=dict(type='DefaultSampler', shuffle=shuffle),
                    dataset=dict(type='SyntheticShapeCropDataset', num_images=num, part=part,
                                 seed=args.seed, image_size=args.image_size,
                                 crop_size=args.crop_size, difficulty=difficulty,
                                 pipeline=pipeline))

    return Config(dict(
        default_scope='mmdet',
        work_dir=str(Path(args.out) / 'runner'),
        model=dict(type='BackboneClassifier', backbone=backbone, num_classes=NUM_CLASSES),
        train_dataloader=loader('pretrain', args.num_train, True,
                                [dict(type='mmcv.RandomFlip', prob=0.5),
                                 dict(type='PackCropInputs')]),
        val_dataloader=loader('pretrain_val', args.num_val, False,
                              [dict(type='PackCropInputs')]),
        val_evaluator=dict(type='CropAccuracy'),
        train_cfg=dict(by_epoch=True, max_epochs=args.epochs, val_interval=1),
        val_cfg=dict(),
        # AdamW as the mini detector schedules; a short linear warm-up (BN from scratch) then
        # cosine decay to zero by the last epoch.
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=args.lr, weight_decay=0.05)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=args.epochs,
                 T_max=args.epochs, eta_min=0.0)],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=25),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1),
            sampler_seed=dict(type='DistSamplerSeedHook')),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        # Bit-exact reruns on CPU, as `pgd train` does.
        randomness=dict(seed=args.seed, deterministic=device == 'cpu'),
        log_level='INFO', load_from=None, resume=False))


def _val_history(runner) -> dict:
    """Every val metric, one value per epoch (from the Runner's message hub)."""
    out = {}
    for name in ('accuracy', 'mean_class_accuracy', 'chance'):
        values, _ = runner.message_hub.get_scalar(f'val/pretrain/{name}').data
        out[name] = [round(float(v), 2) for v in values]
    return out


def export_backbone(runner, path: Path, meta: dict) -> Path:
    """Atomically save the backbone's weights under its own parameter names (no prefix)."""
    import torch
    from mmengine.model import is_model_wrapper

    from pgd.io import atomic_write_bytes_via
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
    return atomic_write_bytes_via(path, lambda f: torch.save({'meta': meta, 'state_dict': state},
                                                             f))


def run(args) -> int:
    _check_args(args)
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # before torch initialises CUDA, as `train`
    from pgd.data import synthetic as syn
    from pgd.engine.config_utils import select_device
    from pgd.errors import UserError
    from pgd.pretrain.model import size_backbone
    try:
        overrides = syn.parse_difficulty(args.difficulty)
        difficulty = {k: v for k, v in vars(syn.make_difficulty('shapes', **overrides)).items()}
    except ValueError as exc:
        raise UserError(str(exc)) from None
    backbone, size_name, size_path = size_backbone(args.size)
    device = select_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from mmengine.runner import Runner

    from pgd.engine.registry import register_all
    register_all()
    cfg = build_config(args, backbone, difficulty, device)
    print(f'[pgd] synthetic pretraining of {args.size} ({size_name}) on {device}: '
          f'{args.num_train} train / {args.num_val} val images of {args.image_size} px, '
          f'{args.epochs} epochs, seed {args.seed}', flush=True)
    start = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    wall = time.time() - start
    history = _val_history(runner)
    final = {k: v[-1] for k, v in history.items()}
    meta = {'task': TASK, 'size': args.size, 'size_name': size_name, 'seed': args.seed,
            'epochs': args.epochs, 'val_accuracy': final['accuracy'], 'synthetic': True}
    ckpt = export_backbone(runner, out / 'backbone.pth', meta)
    write_report(args, out, runner, cfg, backbone, size_name, size_path, difficulty, history,
                 wall, ckpt)
    print(f"[pgd] synthetic pretraining done in {wall:.0f} s: val accuracy "
          f"{final['accuracy']:.1f} % (chance {final['chance']:.1f} %) -> {ckpt}", flush=True)
    return 0


def write_report(args, out, runner, cfg, backbone, size_name, size_path, difficulty, history,
                 wall, ckpt) -> Path:
    """``DIR/pretrain.json``: what was trained, how, how well, and from what."""
    from pgd.data import synthetic as syn
    from pgd.io import atomic_write_json
    from pgd.pretrain.data import PRETRAIN_SPLIT_IDS
    from pgd.provenance import file_sha256, provenance
    data = {'synthetic': True, 'kind': 'shapes', 'generator_version': syn.GENERATOR_VERSION,
            'seed': args.seed, 'image_size': args.image_size, 'crop_size': args.crop_size,
            'num_train': args.num_train, 'num_val': args.num_val,
            'train_crops': len(runner.train_dataloader.dataset),
            'val_crops': len(runner.val_dataloader.dataset),
            'splits': {'train': f"pretrain (split id {PRETRAIN_SPLIT_IDS['pretrain']})",
                       'val': f"pretrain_val (split id {PRETRAIN_SPLIT_IDS['pretrain_val']})",
                       'note': 'detection images use split ids 1 (train) and 2 (val): '
                               'pretraining images are never detection images'},
            'difficulty': difficulty}
    report = {
        'task': TASK,
        'size': args.size, 'size_name': size_name, 'backbone': backbone,
        'val': {**{k: v[-1] for k, v in history.items()}, 'per_epoch': history,
                'units': 'percent, on the crops of the held-out pretraining val scenes'},
        'epochs': args.epochs, 'batch_size': args.batch_size,
        'iterations': runner.iter,
        'optimizer': {'type': 'AdamW', 'lr': args.lr, 'weight_decay': 0.05,
                      'schedule': 'linear warm-up, cosine to 0'},
        'wall_time_s': round(wall, 1),
        'threads': _threads(),
        'checkpoint': ckpt.name, 'checkpoint_sha256': file_sha256(ckpt),
        'provenance': provenance(config_path=size_path, config_text=cfg.pretty_text,
                                 seed=args.seed, dataset=data, device=args.device),
    }
    return atomic_write_json(out / 'pretrain.json', report)


def _threads() -> int:
    import torch
    return torch.get_num_threads()
