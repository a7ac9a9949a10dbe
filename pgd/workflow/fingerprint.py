"""Run fingerprints: what defines a run's trained weights, hashed.

The fingerprint is a Snakemake ``params`` of the training rules (a changed fingerprint
re-runs the job) and the stamp ``guard-workdir`` compares before ``pgd train`` resumes. It
covers the detector configs as MMEngine merges them (:func:`config_digest`) and, for
distillation and teacher-free runs, the method config as the run's detector sees it
(:func:`method_digest`), so editing ``config/distill/pgd.py`` re-runs PGD runs only.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Optional

from pgd.engine.config_utils import CONFIG_ROOT, resolve_config
from pgd.workflow import methods


def fingerprint(*parts) -> str:
    """Short stable hash of a run's defining parameters (see ``guard-workdir``)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def config_digest(name: Optional[str], config_root: Optional[Path] = CONFIG_ROOT) -> Optional[str]:
    """sha256 (16 hex) of detector config ``name`` as MMEngine merges it (``_base_`` chain
    resolved), for the run fingerprints.

    Without it the fingerprint names the config only, and an edited teacher schedule or
    student width would leave Snakemake's params trigger (and ``guard-workdir``) satisfied
    with checkpoints trained under the old settings. Hashing the merged dict rather than the
    file bytes means an edited comment does not retrain anything, while a change in any base
    file does. ``None`` (a run without that config) stays ``None``.
    """
    if name is None:
        return None
    return fingerprint(_merged_config(name, config_root))


def _merged_config(name: str, config_root: Optional[Path]) -> dict:
    from mmengine.config import Config  # lazy: the planner itself stays pure Python
    path = resolve_config(name, config_root)
    return Config.fromfile(str(path), import_custom_modules=False).to_dict()


@functools.lru_cache(maxsize=None)
def config_image_size(name: str, config_root: Optional[Path] = CONFIG_ROOT) -> Optional[int]:
    """The ``image_size`` a SYNTHETIC detector config resizes to (None for other configs)."""
    cfg = _merged_config(name, config_root)
    size = cfg.get('image_size')
    return int(size) if cfg.get('dataset_is_synthetic') and size is not None else None


def method_digest(method: str, detector: str, method_root: Optional[Path] = None) -> str:
    """Hash of ``config/distill/<method>.py`` as loaded (comments do not count), with its
    ``detector_overrides`` narrowed to ``detector``."""
    return fingerprint(methods.detector_view(method, detector, method_root))


def run_fingerprint(plan, run) -> str:
    """The fingerprint of ``run`` (a :class:`pgd.workflow.runs.Run` of ``plan``)."""
    train_opts = plan.config["cfg_options"]["train"]
    data_root = plan.data_root(run.dataset)
    # only when the data is drawn at another size than the config's: every fingerprint of a
    # run at the configs' own size stays what it was before sizes could be changed
    size = plan.image_size_override(run.config, run.dataset)
    extra = ({"image_size": size}, ) if size is not None else ()
    if run.kind in ("teacher", "student"):
        return fingerprint(run.config, config_digest(run.config, plan.config_root),
                           data_root, run.seed, train_opts, *extra)
    return fingerprint(run.config, run.teacher_config, run.teacher_run, run.method,
                       run.loss_options(), data_root, run.seed, train_opts,
                       config_digest(run.config, plan.config_root),
                       config_digest(run.teacher_config, plan.config_root),
                       method_digest(run.method, run.detector, plan.method_root), *extra)
