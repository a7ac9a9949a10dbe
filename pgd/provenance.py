"""Provenance stamped into every result file: config (+hash), seed, git commit, versions."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from pgd.paths import REPO_ROOT

_PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmdet', 'pycocotools', 'numpy')


def git_commit(cwd=None) -> str:
    """HEAD commit of the repository holding ``cwd`` (the package's checkout by default),
    suffixed with ``-dirty`` when tracked files outside ``results/`` differ (committed results
    are rewritten by the very runs being stamped, so they say nothing about the code);
    'unknown' outside a git checkout."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=cwd, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--',
                                ':(top)', ':(top,exclude)results'],
                               cwd=cwd, capture_output=True, text=True).stdout.strip()
        return head + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def repo_relative(path) -> str:
    """``path`` relative to the checkout when it lies inside it (result files must not name
    the machine they were made on), else as given."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def portable_path(path, base=None) -> str:
    """``path`` as a relative path for a result file: relative to the checkout when inside
    it, else relative to ``base`` (the data root for an annotation file, the metrics file's
    folder for a checkpoint). Never absolute: provenance must not name the machine (user
    names, scratch mounts) and must stay valid when the results are moved or shared."""
    p = Path(os.path.abspath(path))
    for root in (REPO_ROOT, base):
        if root is None:
            continue
        try:
            return p.relative_to(Path(os.path.abspath(root))).as_posix()
        except ValueError:
            pass
    return Path(os.path.relpath(p, os.path.abspath(base or REPO_ROOT))).as_posix()


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict:
    out = {'python': platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(config_path=None, config_text: str | None = None, seed=None,
               dataset: dict | None = None, **extra) -> dict:
    """A provenance block. ``config_text`` is the fully resolved config (what really ran);
    its hash identifies the run even when the config file was edited later."""
    prov = {
        'created': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
        'git_commit': git_commit(),
        'versions': package_versions(),
        'seed': seed,
    }
    if config_path is not None:
        prov['config'] = repo_relative(config_path)
        prov['config_file_sha256'] = file_sha256(config_path)
    if config_text is not None:
        prov['resolved_config_sha256'] = hashlib.sha256(config_text.encode()).hexdigest()
    if dataset is not None:
        prov['dataset'] = dataset
    prov.update(extra)
    return prov
