"""Training-time pieces that make ``pgd train``/``pgd distill`` honest under faults.

* :class:`EpochSeedHook` -- re-seeds every generator at the start of each epoch from
  ``(seed, epoch, rank)``. MMEngine seeds once, when the Runner is built, and does not store
  RNG states in checkpoints; a run resumed from epoch k therefore drew its augmentations
  (RandomFlip...) from the state "just after start-up" instead of "after k epochs", and its
  weights differed from an uninterrupted run. Deriving each epoch's state from the epoch
  alone makes both runs draw the same numbers.
* :class:`FiniteLossHook` -- stops a diverged run at the first non-finite loss, so that it
  fails instead of writing a NaN ``final.pth`` that later scores "0.0 AP".
* :class:`AtomicCheckpointRunner` -- MMEngine's Runner with checkpoints written to a
  temporary file and renamed into place: a crash or a full disk while saving never leaves a
  truncated checkpoint under the real name.
"""
from __future__ import annotations

import math
import os
import random
from functools import partial

import numpy as np
import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from pgd.errors import UserError

#: custom hooks every training run gets (``pgd.engine.train.train_config`` adds them)
TRAINING_HOOKS = (dict(type='EpochSeedHook'), dict(type='FiniteLossHook'))


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the run failed (the CLI prints one line, exit 2)."""


def derived_seed(*parts: int) -> int:
    """A 32-bit seed that depends on every part (NumPy's SeedSequence mixes them well, so
    (seed 0, epoch 1) and (seed 1, epoch 0) give unrelated streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Python ``random``, NumPy's global generator, torch's CPU and every CUDA generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def seed_worker(worker_id: int, base_seed: int) -> None:
    """DataLoader ``worker_init_fn``: each worker's seed from the epoch's seed and its id."""
    seed_everything(derived_seed(base_seed, worker_id))


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Re-seed all generators at every epoch start from ``(seed, epoch, rank)``.

    Runs before every other hook's ``before_train_epoch`` so nothing draws a random number
    from the previous epoch's state. DataLoader workers get seeds that depend on the epoch
    too (MMEngine's default gives them the same seeds every epoch, so each epoch saw the same
    augmentations); persistent workers are restarted each epoch, because a worker kept alive
    from the previous epoch would continue its own generator and a resumed run, whose
    workers are new, could not reproduce it. The sampler's order is already a function of
    ``(seed, epoch)`` (DefaultSampler + DistSamplerSeedHook)."""

    priority = 'HIGHEST'

    def before_train_epoch(self, runner) -> None:
        epoch_seed = derived_seed(runner.seed, runner.epoch, runner.rank)
        seed_everything(epoch_seed)
        loader = runner.train_loop.dataloader
        if getattr(loader, 'num_workers', 0) > 0:
            loader.worker_init_fn = partial(seed_worker, base_seed=epoch_seed)
            if getattr(loader, 'persistent_workers', False):
                # torch keeps persistent workers in DataLoader._iterator; dropping it makes
                # the next iter() start new workers, which run the new worker_init_fn
                loader._iterator = None


def non_finite_terms(log_vars) -> dict:
    """``{name: value}`` of the loss terms in ``log_vars`` that are NaN or infinite (loss
    terms: the names containing "loss", the ones MMEngine's ``parse_losses`` sums)."""
    bad = {}
    for name, value in (log_vars or {}).items():
        if 'loss' not in name:
            continue
        try:
            v = float(value.detach().float().mean()) if torch.is_tensor(value) else float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(v):
            bad[name] = v
    return bad


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Fail the run at the first iteration whose loss terms are not all finite.

    MMEngine has no such check, and mmdet's ``CheckInvalidLossHook`` only asserts on the total
    loss every 50 iterations without naming the terms. Raising before the epoch ends also
    means no checkpoint of the diverged model is written and ``final.pth`` never is."""

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        bad = non_finite_terms(outputs)
        if bad:
            terms = ', '.join(f'{k}={v}' for k, v in bad.items())
            raise TrainingDiverged(
                f'training diverged at iteration {runner.iter + 1} (epoch {runner.epoch + 1}, '
                f'batch {batch_idx + 1}): non-finite loss {terms}; no final.pth written')


class AtomicCheckpointRunner(Runner):
    """MMEngine's Runner, with checkpoints written atomically (temporary file, fsync,
    ``os.replace``) and superseded runs' files dropped once a new checkpoint exists."""

    @master_only
    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        if '://' in str(out_dir):  # a remote backend: no local rename possible
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        from pgd.engine.workdir import drop_superseded
        final = os.path.join(out_dir, filename)
        tmp = os.path.join(out_dir, f'.{filename}.tmp')
        try:
            super().save_checkpoint(out_dir, os.path.basename(tmp), *args, **kwargs)
            _fsync(tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        drop_superseded(self.work_dir)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
