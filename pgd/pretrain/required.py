"""Which pretrained backbone files a detector config needs at a workflow scale.

Apart from :mod:`pgd.pretrain.check` because it loads configs (:mod:`pgd.engine.config_utils`),
which itself resolves the ``{scale}`` placeholder with :mod:`pgd.pretrain.check`: keeping the
two directions in two modules keeps the import graph acyclic.
"""
from __future__ import annotations

from pgd.engine.config_utils import load_config
from pgd.pretrain.check import resolve_pretrained


def required_checkpoints(config: str, scale: str, cfg_options: dict | None = None) -> list:
    """Repo-relative pretrained checkpoints a detector config needs at workflow ``scale``, e.g.
    ``required_checkpoints('mini/atss_r18_student', 'smoke')`` ->
    ``['results/smoke/pretrain/mini_r18/backbone.pth']``; ``[]`` for configs that train from
    scratch or load remote (ImageNet) weights. For the workflow planner: a train or distill job
    of ``config`` must depend on these files (the ``pretrain_backbone`` rule's output), and must
    pass ``--cfg-options pretrain_scale=<scale>`` (the configs default to ``none``, from
    scratch). A distillation needs its student's list (its teacher's weights come from the
    teacher's final.pth)."""
    _, cfg = load_config(config, cfg_options, resolve=False)
    cfg.pretrain_scale = scale
    out = []
    for path in resolve_pretrained(cfg):
        if '://' not in path and path not in out:
            out.append(path)
    return out
