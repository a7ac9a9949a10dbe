"""Shared fixtures: tiny SYNTHETIC datasets made once per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Keep BLAS/OpenMP from oversubscribing the 2-core CI machine when tests spawn trainings.
os.environ.setdefault('OMP_NUM_THREADS', '2')


@pytest.fixture(scope='session')
def tiny_shapes(tmp_path_factory) -> Path:
    """16 train / 8 val SYNTHETIC shapes images at 128 px (the mini configs' size)."""
    from pgd.data.make_data import make_dataset
    out = tmp_path_factory.mktemp('tiny_shapes')
    # max_size 0.85 (109 px) so that the tiny val set has large objects (COCO APL defined)
    make_dataset("shapes", str(out), num_train=16, num_val=8, image_size=128, seed=3,
                 max_size=0.85)
    return out


def run_pgd(*args, cwd=REPO, timeout=900):
    """Run ``python -m pgd ARGS`` and return the CompletedProcess (stdout+stderr merged)."""
    import subprocess
    return subprocess.run([PYTHON, '-m', 'pgd', *map(str, args)], cwd=cwd, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
