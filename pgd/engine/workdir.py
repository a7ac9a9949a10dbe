"""What a training work dir holds besides checkpoints, and how a rerun picks up from it.

* Resume selection: the checkpoint named in MMEngine's ``last_checkpoint`` is used only if it
  really loads; a truncated one (disk full while saving, killed mid-write by an older version)
  falls back to the newest checkpoint of the work dir that loads, with one printed line.
* The resume note (:data:`RESUME_NOTE`): every start of ``pgd train``/``pgd distill`` records
  whether it resumed and from which epoch; ``pgd test`` copies it into the metrics provenance
  when it belongs to the evaluated ``final.pth`` (same sha256).
* Superseded runs: ``guard-workdir`` (pgd.workflow.rules) moves the files of a run with other
  parameters into ``superseded-<fingerprint>/`` instead of deleting them; the training command
  deletes those folders once the new run has written a checkpoint (or finished), so a new run
  that crashes at once leaves the old model recoverable.

No torch import at module level: ``pgd.workflow.rules`` (the Snakemake helper) imports this.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import List, Optional, Tuple

LAST_CHECKPOINT = 'last_checkpoint'  # MMEngine's pointer file
FINAL = 'final.pth'
RESUME_NOTE = 'resumes.json'
SUPERSEDED_PREFIX = 'superseded-'
#: the files that make up a run's state in its work dir (what guard-workdir moves aside)
RUN_STATE_GLOBS = ('*.pth', LAST_CHECKPOINT, RESUME_NOTE)


# ----------------------------------------------------------------------------- resume choice

def checkpoint_meta(path: Path) -> Optional[dict]:
    """The ``meta`` of a checkpoint if the whole file loads (as the Runner will load it),
    else None. Loading in full is the only test that catches every truncation."""
    import torch

    from pgd.engine.safe_load import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # any failure (zip error, EOF, unpickling) means "does not load"
        return None
    return ckpt.get('meta', {}) if isinstance(ckpt, dict) and 'state_dict' in ckpt else None


def _step_of(path: Path) -> Tuple[int, float]:
    """Sort key, newest last: the number in ``epoch_<n>.pth``/``iter_<n>.pth``, then mtime."""
    m = re.search(r'(\d+)\.pth$', path.name)
    return (int(m.group(1)) if m else -1, path.stat().st_mtime)


def training_checkpoints(work_dir: Path) -> List[Path]:
    """The work dir's resumable checkpoints, newest first (``final.pth`` has no optimizer
    state and is not one of them)."""
    found = [p for p in Path(work_dir).glob('*.pth') if p.name != FINAL and p.is_file()]
    return sorted(found, key=_step_of, reverse=True)


def named_last_checkpoint(work_dir: Path) -> Optional[Path]:
    """The checkpoint ``last_checkpoint`` names (possibly an empty or dangling name).

    MMEngine writes an absolute path; a work dir that was moved or copied still points at the
    old place, so a file of that name in the work dir itself is preferred."""
    pointer = Path(work_dir) / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    named = Path(pointer.read_text().strip() or '<empty last_checkpoint>')
    local = Path(work_dir) / named.name
    return local if local.is_file() else named


def choose_resume_checkpoint(work_dir: Path, announce=print) -> Optional[Tuple[Path, dict]]:
    """``(checkpoint, meta)`` to resume from, or None to start from scratch.

    Uses the checkpoint named in ``last_checkpoint`` when it loads; otherwise the newest
    checkpoint of the work dir that loads, announced in one line."""
    named = named_last_checkpoint(work_dir)
    if named is None:
        return None
    meta = checkpoint_meta(named) if named.is_file() else None
    if meta is not None:
        return named, meta
    for candidate in training_checkpoints(work_dir):
        if os.path.abspath(candidate) == os.path.abspath(named):
            continue  # already found not to load
        meta = checkpoint_meta(candidate)
        if meta is not None:
            announce(f'[pgd] last checkpoint {named.name} does not load; resuming from '
                     f'{candidate.name} (epoch {meta.get("epoch")}) instead')
            return candidate, meta
    announce(f'[pgd] last checkpoint {named.name} does not load and no other checkpoint in '
             f'{work_dir} does; starting from scratch')
    return None


def remove_stale_temporaries(work_dir: Path) -> None:
    """Delete checkpoint temporaries (``.<name>.pth.tmp``) a killed save left behind."""
    for tmp in Path(work_dir).glob('.*.pth.tmp'):
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- resume note

def record_start(work_dir: Path, resumed_from: Optional[Tuple[Path, dict]]) -> dict:
    """Append this start to the resume note (a fresh start resets it); returns the note."""
    from pgd.io import atomic_write_json
    path = Path(work_dir) / RESUME_NOTE
    note = {'resumes': []}
    if resumed_from is not None:
        if path.is_file():
            try:
                note = json.loads(path.read_text())
            except ValueError:
                note = {'resumes': []}
        ckpt, meta = resumed_from
        note.pop('final_sha256', None)  # a resumed run writes a new final.pth
        note.setdefault('resumes', []).append({
            'from_epoch': meta.get('epoch'), 'from_iter': meta.get('iter'),
            'checkpoint': ckpt.name,
            'time': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')})
    atomic_write_json(path, note)
    return note


def record_final(work_dir: Path, final_path: Path) -> None:
    """Tie the resume note to the ``final.pth`` it describes (by sha256)."""
    from pgd.io import atomic_write_json
    from pgd.provenance import file_sha256
    path = Path(work_dir) / RESUME_NOTE
    note = json.loads(path.read_text()) if path.is_file() else {'resumes': []}
    note['final_sha256'] = file_sha256(final_path)
    atomic_write_json(path, note)


def training_history(checkpoint: Path, checkpoint_sha256: str) -> Optional[dict]:
    """``{'resumed': bool, 'resumes': [...]}`` for a ``final.pth`` whose work dir holds a
    resume note written for exactly this file; None when unknown (older run, copied file)."""
    path = Path(checkpoint).parent / RESUME_NOTE
    try:
        note = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if note.get('final_sha256') != checkpoint_sha256:
        return None
    resumes = list(note.get('resumes', []))
    return {'resumed': bool(resumes), 'resumes': resumes}


# ----------------------------------------------------------------------------- superseded runs

def superseded_dir(work_dir: Path, fingerprint: str) -> Path:
    return Path(work_dir) / f'{SUPERSEDED_PREFIX}{fingerprint}'


def run_state_files(work_dir: Path) -> List[Path]:
    wd = Path(work_dir)
    return [p for pattern in RUN_STATE_GLOBS for p in sorted(wd.glob(pattern)) if p.is_file()]


def move_run_state(src: Path, dst: Path) -> bool:
    """Move the run-state files of ``src`` into ``dst`` (created); True if any moved."""
    files = run_state_files(src)
    if files:
        dst.mkdir(parents=True, exist_ok=True)
    for p in files:
        os.replace(p, dst / p.name)
    return bool(files)


def restore_superseded(work_dir: Path, fingerprint: str) -> bool:
    """Move the files set aside for ``fingerprint`` back into the work dir; True if any."""
    earlier = superseded_dir(work_dir, fingerprint)
    if not earlier.is_dir():
        return False
    restored = move_run_state(earlier, Path(work_dir))
    shutil.rmtree(earlier, ignore_errors=True)
    return restored


def drop_superseded(work_dir: Path) -> List[Path]:
    """Delete the superseded runs' folders: called once the new run is known to be sound."""
    dropped = sorted(Path(work_dir).glob(f'{SUPERSEDED_PREFIX}*'))
    for d in dropped:
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
    return dropped
