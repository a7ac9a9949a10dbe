"""The read-only side of :class:`pgd.workflow.plan.Plan` (datasets, lookups, counts), as a
mixin so that ``plan.py`` holds only how a config becomes runs and rows."""
from __future__ import annotations

import functools
from typing import Dict, List, Optional

from pgd.workflow.runs import BASELINE_FALLBACK, FIGURES, PAPER_TABLES, RUN_KINDS, Analysis, Row, Run


@functools.lru_cache(maxsize=None)
def _required_checkpoints(config: str, scale: str) -> tuple:
    # one config load per (config, scale): the DAG asks once per training job
    from pgd.pretrain.required import required_checkpoints
    return tuple(required_checkpoints(config, scale))


class PlanQueries:
    """Queries on ``self.datasets``, ``self.runs``, ``self.rows`` and ``self.analyses``."""

    config: dict
    config_root: object
    scale: str
    datasets: Dict[str, dict]
    runs: Dict[str, Run]
    rows: List[Row]
    analyses: List[Analysis]

    # ------------------------------------------------------------------ datasets
    def is_synthetic(self, dataset: str) -> bool:
        return self.datasets[dataset]["kind"] != "external"

    def data_root(self, dataset: str) -> str:
        ds = self.datasets[dataset]
        if ds["kind"] == "external":
            return ds["root"].rstrip("/")
        return f"{self.config['data_dir'].rstrip('/')}/{self.scale}/{dataset}"

    def data_marker(self, dataset: str) -> str:
        """The file a training job depends on for ``dataset`` (Snakemake output of the data
        rule): ``meta.json`` of a synthetic dataset, a check stamp for an external one."""
        if self.is_synthetic(dataset):
            return f"{self.data_root(dataset)}/meta.json"
        return f"results/{self.scale}/data/{dataset}.ok"

    def used_datasets(self) -> set:
        """Datasets some run trains on, plus the sources of used held-out splits."""
        used = {r.dataset for r in self.runs.values()}
        return used | {self.datasets[d]["of"] for d in used
                       if self.datasets[d]["kind"] == "holdout"}

    def synthetic_datasets(self) -> List[str]:
        """Datasets made by `pgd make-data` (held-out splits excluded)."""
        used = self.used_datasets()
        return [d for d in self.datasets if d in used and self.is_synthetic(d)
                and self.datasets[d]["kind"] != "holdout"]

    def holdout_datasets(self) -> List[str]:
        """Datasets made by `pgd split-holdout` from another dataset's train split."""
        used = self.used_datasets()
        return [d for d in self.datasets if d in used and self.datasets[d]["kind"] == "holdout"]

    def external_datasets(self) -> List[str]:
        used = {r.dataset for r in self.runs.values()}
        return [d for d in self.datasets if d in used and not self.is_synthetic(d)]

    def crowd(self, dataset: str) -> bool:
        return bool(self.datasets[dataset].get("crowd_metrics"))

    # ------------------------------------------------------------------ runs and rows
    @property
    def tables(self) -> List[str]:
        return list(dict.fromkeys(r.table for r in self.rows))

    def run(self, rel: str) -> Run:
        try:
            return self.runs[rel]
        except KeyError:
            raise KeyError(f"{rel!r} is not a run of the {self.scale!r} plan") from None

    def runs_of(self, kind: str) -> List[Run]:
        return [r for r in self.runs.values() if r.kind == kind]

    def evaluated_runs(self) -> List[Run]:
        """Runs that some table row reads (each evaluated once)."""
        return [self.runs[rel] for rel in dict.fromkeys(r.run for r in self.rows)]

    def fingerprint(self, run: Run) -> str:
        """The run's fingerprint (:func:`pgd.workflow.fingerprint.run_fingerprint`)."""
        from pgd.workflow.fingerprint import run_fingerprint
        return run_fingerprint(self, run)

    def image_size_override(self, config: str, dataset: str) -> Optional[int]:
        """The side ``dataset``'s SYNTHETIC images are drawn at when ``config`` resizes to
        another one (e.g. ``image_size: 256`` with the 128-px mini configs): the jobs pass it
        as ``--cfg-options image_size=N`` (:func:`pgd.engine.config_utils.apply_image_size`).
        None when they agree or the data is external."""
        from pgd.workflow.fingerprint import config_image_size
        ds = self.datasets[dataset]
        if ds["kind"] == "holdout":       # cut from another dataset's train images
            ds = self.datasets[ds["of"]]
        if ds["kind"] == "external":
            return None
        own = config_image_size(config, self.config_root)
        size = int(ds["image_size"])
        return size if own is not None and size != own else None

    def pretrained_checkpoints(self, run: Run) -> List[str]:
        """Local pretrained backbone files the run's config loads at this scale (the
        ``pretrain_backbone`` rule's outputs, :func:`pgd.pretrain.required.required_checkpoints`);
        for a distillation the student's (the teacher comes from its final.pth)."""
        return list(_required_checkpoints(run.config, self.scale))

    def row(self, table: str, detector: str, setting: str, seed: int) -> Row:
        try:
            return self._row_index[(table, detector, setting, int(seed))]
        except KeyError:
            raise KeyError(f"no row {setting!r} seed {seed} for {detector} in {table} of the "
                           f"{self.scale!r} plan") from None

    def rows_of(self, table: str) -> List[Row]:
        return [r for r in self.rows if r.table == table]

    def table_input_rows(self, table: str) -> List[Row]:
        """The rows the builder of ``table`` needs (its manifest): its own rows plus, where
        the table has no student row, the student rows of its fallback table (deltas)."""
        own = self.rows_of(table)
        fb = BASELINE_FALLBACK.get(table)
        if not fb or any(r.setting == "student" for r in own):
            return own
        dets = {r.detector for r in own}
        bbs = {r.student_backbone for r in own}
        extra = [r for r in self.rows_of(fb) if r.setting == "student" and r.detector in dets
                 and r.student_backbone in bbs]
        return own + extra

    def input_runs(self, tables) -> List[Run]:
        """The runs whose metrics the manifests of ``tables`` point at (plan order)."""
        rels = dict.fromkeys(r.run for t in tables for r in self.table_input_rows(t))
        return [self.runs[rel] for rel in rels]

    def tuning_tables(self) -> List[str]:
        """``tune_<method>`` tables: the loss-scale search of config/tuning.yaml."""
        return [t for t in self.tables if t.startswith("tune_")]

    def figure_stems(self) -> List[str]:
        have = set(self.tables) | {a.name for a in self.analyses}
        return [stem for stem, need in FIGURES.items() if need in have]

    def figure_tables(self) -> List[str]:
        """The tables whose manifests the figures read."""
        return list(dict.fromkeys(FIGURES[s] for s in self.figure_stems()
                                  if FIGURES[s] in PAPER_TABLES))

    def figure_input_rows(self) -> List[Row]:
        rows: Dict[tuple, Row] = {}
        for t in self.figure_tables():
            for r in self.table_input_rows(t):
                rows[r.key] = r
        return list(rows.values())

    def analyses_of(self, name: str) -> List[Analysis]:
        return [a for a in self.analyses if a.name == name]

    def analysis(self, name: str, stem: str) -> Analysis:
        for a in self.analyses:
            if a.name == name and a.stem == stem:
                return a
        raise KeyError(f"no {name} analysis {stem!r} in the {self.scale!r} plan")

    # ------------------------------------------------------------------ summary
    def counts(self) -> Dict[str, int]:
        """Number of jobs per kind (as the DAG will have them from scratch)."""
        out = {k: len(self.runs_of(k)) for k in RUN_KINDS}
        out["evaluate"] = len(self.evaluated_runs())
        out["manifests"] = len(self.tables)
        out["tables"] = len(self.tables)
        out["datasets"] = (len(self.synthetic_datasets()) + len(self.external_datasets())
                           + len(self.holdout_datasets()))
        out["mask_out"] = len(self.analyses_of("mask_out"))
        out["quality_maps"] = len(self.analyses_of("quality_maps"))
        out["sanity"] = len(self.analyses_of("sanity"))
        return out

    def describe(self) -> str:
        lines = [f"scale {self.scale}: " + ", ".join(f"{k}={v}" for k, v in
                                                     self.counts().items())]
        for tid in self.tables:
            rows = self.rows_of(tid)
            settings = list(dict.fromkeys((r.detector, r.setting) for r in rows))
            lines.append(f"  {tid}: {len(settings)} rows, {len(rows)} metrics files")
        return "\n".join(lines)
