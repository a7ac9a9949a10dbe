"""``python -m pgd train CONFIG --work-dir DIR``: train with MMEngine's Runner.

* Uses a GPU when present (``--device auto``), DDP when launched by ``torchrun``; the learning
  rate follows the linear scaling rule from the config's ``auto_scale_lr.base_batch_size`` to
  the real total batch (world size x batch per GPU).
* Resumes automatically from the last checkpoint in DIR (a killed or pre-empted job loses at
  most one epoch); a checkpoint that does not load is skipped for the newest one that does.
  Checkpoints are written atomically. Each start is recorded in ``DIR/resumes.json``.
* Deterministic for a given ``--seed`` on CPU, resumed or not: every generator is re-seeded
  from (seed, epoch) at each epoch start (``pgd.engine.runtime.EpochSeedHook``), so a run
  killed and rerun ends with the same ``final.pth``, bit for bit, as an uninterrupted one.
* A NaN or infinite loss stops the run with one line naming the iteration and the terms
  (``FiniteLossHook``), exit code 2 and no ``final.pth``.
* On success writes ``DIR/final.pth``: the trained detector's weights only (for a distillation
  run: the student, without the teacher), loadable as a plain MMDetection detector.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``train`` and ``distill``."""
    from mmengine.config import DictAction
    p.add_argument('--work-dir', required=True, help='checkpoints, logs and final.pth go here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config keys, e.g. train_cfg.max_epochs=1')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data-root', default=None, help='dataset directory (overrides config)')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    p.add_argument('--no-resume', action='store_true',
                   help='start from scratch even if DIR has checkpoints')


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('config', help='config file or name under config/detectors, '
                                  'e.g. mini/atss_r18_student')
    add_common_arguments(p)


def world_size() -> int:
    return int(os.environ.get('WORLD_SIZE', '1'))


def settle_runtime(cfg, args):
    """Seed, data root, device, launcher and resume; checks the train/val data
    (``pgd.data.check``, as ``pgd test`` does) and that the work dir is writable."""
    from pgd.engine.config_utils import (check_split_data, check_writable, retarget_data_root,
                                         select_device)
    if args.data_root:
        retarget_data_root(cfg, args.data_root)
    for key in ('train_dataloader', 'val_dataloader'):
        if key in cfg:
            check_split_data(cfg, key)
    device = select_device(args.device)
    cfg.work_dir = str(check_writable(args.work_dir))
    # Bit-exact reruns on CPU; on GPU deterministic kernels cost too much speed for training.
    cfg.randomness = dict(seed=args.seed, deterministic=device == 'cpu')
    cfg.launcher = 'pytorch' if world_size() > 1 else 'none'
    cfg.env_cfg.dist_cfg = dict(backend='nccl' if device == 'cuda' else 'gloo')
    if world_size() > 1 and device == 'cpu':
        setup_cpu_ddp(cfg)
    return device


def settle_resume(cfg, args):
    """Point the Runner at the checkpoint to resume from (one that loads), or start afresh;
    records the start in the work dir's resume note. Returns ``(checkpoint, meta)`` or None.

    The checkpoint is passed explicitly (``load_from`` + ``resume``) instead of letting
    MMEngine read ``last_checkpoint``, which it trusts blindly."""
    from pgd.engine.workdir import (choose_resume_checkpoint, record_start,
                                    remove_stale_temporaries)
    work_dir = Path(cfg.work_dir)
    announce = print if is_main_rank() else (lambda *_: None)
    chosen = None if args.no_resume else choose_resume_checkpoint(work_dir, announce)
    cfg.resume = chosen is not None
    if chosen is not None:
        cfg.load_from = str(chosen[0])
    if is_main_rank():
        work_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(work_dir)
        record_start(work_dir, chosen)
    return chosen


def is_main_rank() -> bool:
    return int(os.environ.get('RANK', '0')) == 0


def setup_cpu_ddp(cfg) -> None:
    """DDP on CPU processes (gloo), which MMEngine 0.10 cannot set up by itself: its
    ``init_dist`` always calls ``torch.cuda.set_device(LOCAL_RANK)`` and its DDP wrapper always
    passes ``device_ids=[LOCAL_RANK]`` (CPU modules need ``None``). The process group is
    initialised here (the Runner then skips ``init_dist``) and the wrapper gets
    ``device_ids=None``; MMEngine's GPU path is left as it is."""
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')  # env:// from torchrun (RANK, MASTER_ADDR...)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def export_final_weights(runner, out_path: Path) -> Path:
    """Save only the deployable detector's weights (the student for a distiller)."""
    import torch
    from mmengine.model import is_model_wrapper

    from pgd.io import atomic_write_bytes_via
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    deploy = getattr(model, 'deployable_detector', lambda: model)()
    state = {k: v.detach().cpu() for k, v in deploy.state_dict().items()}
    meta = {'epoch': runner.epoch, 'iter': runner.iter, 'seed': runner.seed}
    return atomic_write_bytes_via(out_path, lambda f: torch.save(
        {'meta': meta, 'state_dict': state}, f))


def train_config(cfg, args, label: str) -> int:
    """Run MMEngine's Runner on a prepared config and export ``final.pth``."""
    if args.device == 'cpu':
        # Hide GPUs before torch initialises CUDA so every component stays on the CPU.
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    device = settle_runtime(cfg, args)
    from pgd.engine.registry import register_all
    from pgd.engine.runtime import TRAINING_HOOKS, AtomicCheckpointRunner
    from pgd.engine.safe_load import allow_mmengine_checkpoints
    from pgd.engine.workdir import FINAL, drop_superseded, record_final
    from pgd.pretrain.check import check_pretrained
    allow_mmengine_checkpoints()
    register_all()
    # MMEngine loads Pretrained backbones non-strictly: a wrong file would train a partly
    # random backbone; stop with one line before anything is built
    check_pretrained(cfg)
    resumed = settle_resume(cfg, args)
    cfg.custom_hooks = [*(cfg.get('custom_hooks') or []), *TRAINING_HOOKS]
    print(f'[pgd] training {label} on {device} (world size {world_size()}), seed {args.seed}, '
          f'work dir {cfg.work_dir}' + (f' -- resuming from {Path(resumed[0]).name}'
                                        if resumed else ''), flush=True)
    runner = AtomicCheckpointRunner.from_cfg(cfg)
    runner.train()
    if runner.rank == 0:
        final = export_final_weights(runner, Path(cfg.work_dir) / FINAL)
        record_final(Path(cfg.work_dir), final)
        drop_superseded(Path(cfg.work_dir))
        print(f'[pgd] wrote {final}', flush=True)
    return 0


def run(args) -> int:
    from pgd.engine.config_utils import load_config
    path, cfg = load_config(args.config, args.cfg_options)
    return train_config(cfg, args, str(path))
