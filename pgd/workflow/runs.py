"""The plan's objects: runs (training jobs), rows (table membership) and analyses.

* **runs** (:class:`Run`): one training job each -- a teacher, a student baseline, a
  distillation or a teacher-free run -- identified by its directory under
  ``results/<scale>/runs/`` (``Run.rel``)::

      teacher/<dataset>/<det>_<model>/seed<S>
      student/<dataset>/<det>_<model>/seed<S>
      distill/<dataset>/<det>_<student>/<teacher|self>/<method>/<variant>/seed<S>
      teacher_free/<dataset>/<det>_<student>/<method>/<variant>/seed<S>

  A run is trained and evaluated **once**, however many tables use it.
* **rows** (:class:`Row`): ``(table, detector, setting, seed) -> run``; each table's rows are
  listed in its row manifest (:mod:`pgd.workflow.manifest`).
* **analyses** (:class:`Analysis`): Fig. 3 mask-out and Fig. 2 quality maps on teachers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from pgd import catalog
from pgd.workflow.values import backbone_label, cli_value, json_value

#: names from the catalog (the one home of method and detector names)
DETECTORS = catalog.detector_names()
DISTILL_METHODS = catalog.distill_method_names()
TEACHER_FREE_METHODS = catalog.teacher_free_method_names()
PAPER_TABLES = ("table1", "table2", "table3", "table4", "table5", "table6a", "table6b",
                "table7")
#: tables whose deltas take the student row of Table 1 (``pgd.tables.build.default_spec``).
BASELINE_FALLBACK = {"table5": "table1", "table6a": "table1", "table6b": "table1",
                     "table7": "table1"}
RUN_KINDS = ("teacher", "student", "distill", "teacher_free")

#: figure stem -> what it needs (a table id or an analysis name).
FIGURES = {"fig_table1_gains": "table1", "fig_k_sweep": "table6a",
           "fig_alpha_sweep": "table6b", "fig3_mask_out": "mask_out"}


@dataclass(frozen=True)
class Run:
    """One training job; ``rel`` is its directory under ``results/<scale>/runs``.

    ``options`` are the method options the run is trained with beyond the defaults of
    ``config/distill/<method>.py`` for its detector (the YAML's deliberate overrides and the
    table row's own), exactly what ``--loss-options`` passes; ``variant`` names the options
    that differ from the scale's defaults (``default`` when none do)."""

    kind: str                      # teacher | student | distill | teacher_free
    dataset: str
    detector: str
    model: str                     # config token of the trained network (student for distill)
    seed: int
    config: str                    # detector config name, e.g. "mini/atss_r18_student"
    method: Optional[str] = None
    teacher: Optional[str] = None  # teacher model token | "self" | None
    variant: str = "default"
    options: Tuple[Tuple[str, object], ...] = ()
    teacher_run: Optional[str] = None
    teacher_config: Optional[str] = None

    @property
    def rel(self) -> str:
        name = f"{self.detector}_{self.model}"
        if self.kind in ("teacher", "student"):
            return f"{self.kind}/{self.dataset}/{name}/seed{self.seed}"
        if self.kind == "distill":
            return (f"distill/{self.dataset}/{name}/{self.teacher}/{self.method}/"
                    f"{self.variant}/seed{self.seed}")
        return f"teacher_free/{self.dataset}/{name}/{self.method}/{self.variant}/seed{self.seed}"

    @property
    def student_backbone(self) -> str:
        return backbone_label(self.model)

    def loss_options(self) -> List[str]:
        return [f"{k}={cli_value(v)}" for k, v in self.options]

    def options_json(self) -> Dict[str, object]:
        """The options as structured JSON values (``{"branches": ["neck"]}``)."""
        return {k: json_value(v) for k, v in self.options}

    def run_info(self) -> Dict[str, object]:
        """``pgd test --run-info`` of the run itself. It depends on the run only (not on which
        tables read it), so adding a table row never re-triggers an evaluation; the table
        rows are listed in the row manifests."""
        return {"run": self.rel, "kind": self.kind, "detector": self.detector,
                "setting": self.method or self.kind, "variant": self.variant,
                "seed": self.seed, "backbone": backbone_label(self.model),
                "options": self.options_json()}


@dataclass(frozen=True)
class Row:
    """One (table, detector, setting, seed) cell group, read from ``run``'s metrics.

    ``options`` (the manifest's): the run's ``--loss-options`` (:attr:`Run.options`) plus the
    options that define the row (an ablation variant's or sweep value's overrides) even where
    they equal the method default -- Table 6a's ATSS ``k=9`` column is the default run, and
    its row still says ``k: 9``; ``()`` for teacher / student rows."""

    table: str
    detector: str
    setting: str
    seed: int
    run: str                      # Run.rel
    student_backbone: str
    options: Tuple[Tuple[str, object], ...] = ()

    @property
    def key(self) -> Tuple[str, str, str, int]:
        return (self.table, self.detector, self.setting, self.seed)

    def options_json(self) -> Dict[str, object]:
        return {k: json_value(v) for k, v in self.options}

    def run_info(self) -> Dict[str, object]:
        return {"table": self.table, "detector": self.detector, "setting": self.setting,
                "seed": self.seed, "student_backbone": self.student_backbone}


@dataclass(frozen=True)
class Analysis:
    """A teacher analysis (``mask_out`` for Fig. 3, ``quality_maps`` for Fig. 2) or the
    ``sanity`` check (the zero-weight distillation against the plain student)."""

    name: str
    dataset: str
    detector: str
    model: str
    run: str                       # the teacher's Run.rel (sanity: the zero-weight run's)
    config: str
    ratios: Tuple[float, ...] = ()
    baseline: str = ""             # sanity: the plain student's Run.rel (same seed)

    @property
    def stem(self) -> str:
        return f"{self.dataset}/{self.detector}_{self.model}"
