"""The method defaults of ``config/distill/<method>.py``, per detector: read-only.

``config/distill/<method>.py`` is the one home of a method's hyper-parameters. The planner
needs them to name runs (a row whose options equal the defaults is the method's ``default``
run, shared between tables) and to pass only what differs as ``--loss-options``. It reads
them the way ``python -m pgd distill`` applies them (``pgd.engine.distill_feature``,
``distill_ld``, ``distill_lgd``), as a flat ``{option: value}``:

* feature methods: each loss of ``distill_losses`` (less ``type``) updated with
  ``detector_overrides[<detector>][<loss>]`` (``--loss-options`` update every loss);
* LD: ``ld_variant``, the ``ld_head_options`` of that head, and the keyword arguments its KL
  terms (``loss_ld``, ``loss_ld_vlr``) share;
* LGD: ``lgd`` updated with ``detector_overrides[<detector>]``.

``loss_scale`` (the distiller's global factor, default 1) is not a value of these files, so
a ``loss_scale`` of the YAML is always passed on explicitly.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Dict, Optional

from pgd.workflow.values import same


def method_root() -> Path:
    """``pgd.method_options.METHOD_ROOT`` (``config/distill``), looked up at call time: the one
    place the folder is named, so a test pointing it elsewhere points the planner too."""
    from pgd import method_options
    return Path(method_options.METHOD_ROOT)


def method_path(method: str, root: Optional[Path] = None) -> Path:
    return Path(root if root is not None else method_root()) / f"{method}.py"


@functools.lru_cache(maxsize=None)
def _load(path: str, stamp: tuple) -> str:
    from mmengine.config import Config  # lazy: importing the planner stays cheap
    cfg = Config.fromfile(path, import_custom_modules=False)
    return json.dumps(cfg.to_dict(), sort_keys=True, default=str)


def method_config(method: str, root: Optional[Path] = None) -> dict:
    """``config/distill/<method>.py`` as MMEngine loads it, as a plain dict (cached per file
    version, so an edited file is re-read)."""
    path = method_path(method, root)
    st = os.stat(path)
    return json.loads(_load(str(path), (st.st_mtime_ns, st.st_size)))


def detector_view(method: str, detector: str, root: Optional[Path] = None) -> dict:
    """The method config as one detector sees it: ``detector_overrides`` narrowed to that
    detector (an edit of another detector's overrides does not concern this one)."""
    cfg = method_config(method, root)
    if "detector_overrides" in cfg:
        cfg["detector_overrides"] = {detector: cfg["detector_overrides"].get(detector)}
    return cfg


def config_defaults(method: str, detector: str, root: Optional[Path] = None) -> Dict[str, object]:
    """``{option: default}`` of ``method`` on ``detector`` (see the module docstring)."""
    cfg = method_config(method, root)
    over = (cfg.get("detector_overrides") or {}).get(detector) or {}
    out: Dict[str, object] = {}
    for name, loss in (cfg.get("distill_losses") or {}).items():
        merged = {**loss, **(over.get(name) or {})}
        for key, value in merged.items():
            if key != "type":
                out.setdefault(key, value)
    if "ld_heads" in cfg:
        variant = cfg.get("ld_variant", "vlr")
        out["ld_variant"] = variant
        head = cfg["ld_heads"].get(variant) or {}
        for key in cfg.get("ld_head_options") or ():
            if key in head:
                out[key] = head[key]
        terms = [head[t] for t in ("loss_ld", "loss_ld_vlr") if head.get(t)]
        if terms:
            for key, value in terms[0].items():
                if key != "type" and all(key in t and same(t[key], value) for t in terms):
                    out[key] = value
    if "lgd" in cfg:
        out.update(cfg["lgd"])
        out.update(over)
    return out
