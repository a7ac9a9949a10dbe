"""The run plan: every training job, table row and analysis a validated config asks for.

Distillation runs are trained with the defaults of ``config/distill/<method>.py`` for their
detector (:mod:`pgd.workflow.methods`), the scale's deliberate overrides (``method_defaults``,
``detector_method_defaults``) and the table row's own; ``--loss-options`` carries exactly the
values that differ from the method config (:attr:`Run.options`). ``<variant>`` in the run
directory names the options that differ from the scale's defaults (``default`` when none
do), so e.g. the ATSS PGD run of Table 1 is also Table 5's ``pgw`` row, Table 6a's ``k=9``
column and Table 7's ``cls+reg`` row. Teachers are keyed by (dataset, detector, model) and
use ``teacher_seed``; self-distillation (``teacher: self``, Table 4) uses the student
baseline of ``self_teacher_seed`` as teacher (same config, student schedule).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from pgd import catalog
from pgd.engine.config_utils import CONFIG_ROOT
from pgd.workflow import methods
from pgd.workflow.config import (ConfigError, check_method_option_keys, load_config,
                                 validate_config)
from pgd.workflow.plan_queries import PlanQueries
from pgd.workflow.runs import TEACHER_FREE_METHODS, Analysis, Row, Run
from pgd.workflow.values import LABEL_RE, backbone_label, format_value, same


class Plan(PlanQueries):
    """Everything the Snakefile needs, derived from a validated config.

    ``config_root``: the detector configs (``config/detectors``; ``None`` skips the existence
    check); ``method_root``: the method configs (``None``: ``pgd.method_options.METHOD_ROOT``,
    i.e. ``config/distill``)."""

    def __init__(self, config: Mapping, config_root: Optional[Path] = CONFIG_ROOT,
                 validated: bool = False, method_root: Optional[Path] = None):
        if not validated:
            config = validate_config(copy.deepcopy(dict(config)))
        check_method_option_keys(config)
        self.config = config
        self.scale: str = config["scale"]
        self.config_dir: str = config["config_dir"]
        self.config_root = Path(config_root) if config_root is not None else None
        self.method_root = Path(method_root) if method_root is not None else None
        self.datasets: Dict[str, dict] = config["datasets"]
        self.runs: Dict[str, Run] = {}
        self.rows: List[Row] = []
        self._row_index: Dict[Tuple[str, str, str, int], Row] = {}
        self.analyses: List[Analysis] = []
        self._check_datasets()
        for tid, table in config["tables"].items():
            self._add_table(tid, table)
        self._add_analyses(config.get("analyses") or {})

    # ------------------------------------------------------------------ datasets
    def _check_datasets(self) -> None:
        for name, ds in self.datasets.items():
            if ds["kind"] == "external" and not ds.get("root"):
                raise ConfigError(f"datasets.{name}.root: required for an external dataset")
            if ds["kind"] != "external" and ds.get("root"):
                raise ConfigError(f"datasets.{name}.root: only for kind 'external' (synthetic "
                                  f"data goes to data_dir)")
            if (ds["kind"] == "holdout") != ("of" in ds):
                raise ConfigError(f"datasets.{name}.of: required for kind 'holdout' and only "
                                  f"allowed there")
            if ds["kind"] == "holdout" and self.datasets.get(ds["of"], {}).get("kind") in (
                    None, "holdout", "external"):
                raise ConfigError(f"datasets.{name}.of: {ds['of']!r} must be a synthetic "
                                  f"dataset of this config")

    # ------------------------------------------------------------------ runs
    def config_name(self, detector: str, model: str, key: str) -> str:
        name = f"{self.config_dir}/{detector}_{model}"
        if self.config_root is not None and not (self.config_root / f"{name}.py").is_file():
            raise ConfigError(f"{key}: no detector config config/detectors/{name}.py")
        return name

    def _register(self, run: Run) -> Run:
        old = self.runs.get(run.rel)
        if old is not None and old != run:
            raise ConfigError(f"{run.rel}: two different runs map to the same directory "
                              f"({old} vs {run})")
        self.runs[run.rel] = run
        return run

    def teacher_run(self, dataset: str, detector: str, model: str, key: str) -> Run:
        return self._register(Run("teacher", dataset, detector, model,
                                  int(self.config["teacher_seed"]),
                                  self.config_name(detector, model, key)))

    def student_run(self, dataset: str, detector: str, model: str, seed: int, key: str) -> Run:
        return self._register(Run("student", dataset, detector, model, int(seed),
                                  self.config_name(detector, model, key)))

    def config_defaults(self, method: str, detector: str) -> Dict[str, object]:
        """The defaults of ``config/distill/<method>.py`` for ``detector``."""
        return methods.config_defaults(method, detector, self.method_root)

    def yaml_overrides(self, method: str, detector: str) -> Dict[str, object]:
        """The scale's deliberate overrides: ``method_defaults`` then
        ``detector_method_defaults``."""
        out = dict((self.config.get("method_defaults") or {}).get(method) or {})
        per_det = (self.config.get("detector_method_defaults") or {}).get(detector) or {}
        out.update(per_det.get(method) or {})
        return out

    def method_defaults(self, method: str, detector: str) -> Dict[str, object]:
        """What a ``default`` run of ``method`` on ``detector`` trains with at this scale."""
        return {**self.config_defaults(method, detector),
                **self.yaml_overrides(method, detector)}

    def resolve_options(self, method: str, detector: str, overrides: Mapping,
                        key: str) -> Tuple[Tuple[Tuple[str, object], ...], str]:
        """``(options, variant)`` of a run with the row's ``overrides``: the options that
        differ from the method config (sorted; ``--loss-options``) and the name of those that
        differ from the scale's defaults."""
        cfg = self.config_defaults(method, detector)
        base = {**cfg, **self.yaml_overrides(method, detector)}
        full = {**base, **dict(overrides)}
        diff = {k: v for k, v in full.items() if k not in base or not same(base[k], v)}
        if not diff:
            variant = "default"
        else:
            variant = "__".join(f"{k}={format_value(v)}" for k, v in sorted(diff.items()))
        if not LABEL_RE.match(variant) or "/" in variant:
            raise ConfigError(f"{key}: option values give an unusable run name {variant!r} "
                              f"(use letters, digits and _ . = + -)")
        options = tuple(sorted((k, v) for k, v in full.items()
                               if k not in cfg or not same(cfg[k], v)))
        return options, variant

    def distill_run(self, dataset: str, detector: str, student: str, teacher: str,
                    method: str, overrides: Mapping, seed: int, key: str) -> Run:
        s_cfg = self.config_name(detector, student, key)
        entry = catalog.method(method)
        if not entry.supports(detector):
            raise ConfigError(f"{key}: method {method!r} is only defined for the "
                              f"{', '.join(entry.detectors)} detector, not {detector!r}")
        if teacher == "none":
            if method not in TEACHER_FREE_METHODS:
                raise ConfigError(f"{key}: method {method!r} needs a teacher (teacher: none "
                                  f"is only for {', '.join(TEACHER_FREE_METHODS)})")
            options, variant = self.resolve_options(method, detector, overrides, key)
            return self._register(Run("teacher_free", dataset, detector, student, int(seed),
                                      s_cfg, method=method, variant=variant, options=options))
        if method in TEACHER_FREE_METHODS:
            raise ConfigError(f"{key}: method {method!r} is teacher-free; use it in a table "
                              f"with teacher: none")
        if teacher == "self":
            t_run = self.student_run(dataset, detector, student,
                                     int(self.config["self_teacher_seed"]), key)
            t_cfg = s_cfg
        else:
            t_run = self.teacher_run(dataset, detector, teacher, key)
            t_cfg = t_run.config
        options, variant = self.resolve_options(method, detector, overrides, key)
        return self._register(Run("distill", dataset, detector, student, int(seed), s_cfg,
                                  method=method, teacher=teacher, variant=variant,
                                  options=options, teacher_run=t_run.rel,
                                  teacher_config=t_cfg))

    # ------------------------------------------------------------------ tables
    def _add_row(self, row: Row, key: str) -> None:
        old = self._row_index.get(row.key)
        if old is not None:
            if old.run == row.run:
                return
            raise ConfigError(f"{key}: row {row.setting!r} of {row.table}/{row.detector} "
                              f"is defined twice (runs {old.run} and {row.run})")
        self._row_index[row.key] = row
        self.rows.append(row)

    def _add_table(self, tid: str, t: Mapping) -> None:
        key = f"tables.{tid}"
        ds = t["dataset"]
        if ds not in self.datasets:
            raise ConfigError(f"{key}.dataset: unknown dataset {ds!r} (defined: "
                              f"{', '.join(self.datasets)})")
        methods_: Mapping[str, List[str]] = t.get("methods") or {}
        ablation = t.get("ablation")
        if not methods_ and not ablation:
            raise ConfigError(f"{key}: needs `methods` and/or `ablation`")
        dets = list(methods_)
        if ablation:
            dets += [d for d in ablation["detectors"] if d not in dets]
        for d in t.get("seeds_per_detector") or {}:
            if d not in dets:
                raise ConfigError(f"{key}.seeds_per_detector.{d}: detector not in this table")
        student, teacher = t["student"], t["teacher"]
        bb = backbone_label(student)
        if teacher == "none" and "teacher" in t["baselines"]:
            raise ConfigError(f"{key}.baselines: a teacher-free table (teacher: none) has no "
                              f"teacher row")
        if teacher != "none":
            for d, ms in methods_.items():
                bad = [m for m in ms if m in TEACHER_FREE_METHODS]
                if bad:
                    raise ConfigError(f"{key}.methods.{d}: {bad[0]!r} is teacher-free; put it "
                                      f"in a table with teacher: none")
        for det in dets:
            seeds = [int(s) for s in (t.get("seeds_per_detector") or {}).get(det, t["seeds"])]
            if "teacher" in t["baselines"]:
                if teacher == "self":
                    trun = self.student_run(ds, det, student,
                                            int(self.config["self_teacher_seed"]), key)
                else:
                    trun = self.teacher_run(ds, det, teacher, f"{key}.teacher")
                self._add_row(Row(tid, det, "teacher", trun.seed, trun.rel, bb), key)
            if "student" in t["baselines"]:
                for s in seeds:
                    srun = self.student_run(ds, det, student, s, f"{key}.student")
                    self._add_row(Row(tid, det, "student", s, srun.rel, bb), key)
            for m in methods_.get(det, []):
                for s in seeds:
                    run = self.distill_run(ds, det, student, teacher, m, {}, s,
                                           f"{key}.methods.{det}")
                    self._add_row(Row(tid, det, m, s, run.rel, bb, run.options), key)
            if ablation and det in ablation["detectors"]:
                for label, overrides in self.ablation_variants(ablation, f"{key}.ablation"):
                    for s in seeds:
                        run = self.distill_run(ds, det, student, teacher, ablation["method"],
                                               overrides, s, f"{key}.ablation")
                        options = tuple(sorted({**dict(run.options), **overrides}.items()))
                        self._add_row(Row(tid, det, label, s, run.rel, bb, options), key)

    @staticmethod
    def ablation_variants(ablation: Mapping, key: str) -> List[Tuple[str, dict]]:
        """``[(row label, option overrides)]`` of an ablation, variants first then sweep."""
        out: List[Tuple[str, dict]] = []
        for label, overrides in (ablation.get("variants") or {}).items():
            out.append((label, dict(overrides or {})))
        sweep = ablation.get("sweep") or {}
        for option, values in sweep.items():
            for v in values:
                label = ablation.get("sweep_label", "{option}={value}").format(
                    option=option, value=format_value(v))
                if not LABEL_RE.match(label):
                    raise ConfigError(f"{key}.sweep.{option}: row label {label!r} is not "
                                      f"usable (letters, digits and _ . = + -)")
                out.append((label, {option: v}))
        if not out:
            raise ConfigError(f"{key}: needs `variants` or `sweep`")
        labels = [lbl for lbl, _ in out]
        dup = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
        if dup:
            raise ConfigError(f"{key}: row label {dup[0]!r} appears twice")
        for reserved in ("teacher", "student"):
            if reserved in labels:
                raise ConfigError(f"{key}: row label {reserved!r} is reserved")
        return out

    # ------------------------------------------------------------------ analyses
    def _add_analyses(self, analyses: Mapping) -> None:
        for name in ("mask_out", "quality_maps"):
            a = analyses.get(name)
            if not a:
                continue
            key = f"analyses.{name}"
            if a["dataset"] not in self.datasets:
                raise ConfigError(f"{key}.dataset: unknown dataset {a['dataset']!r}")
            for det in a["detectors"]:
                run = self.teacher_run(a["dataset"], det, a["model"], f"{key}.model")
                self.analyses.append(Analysis(name, a["dataset"], det, a["model"], run.rel,
                                              run.config, tuple(a.get("ratios") or ())))
        if analyses.get("sanity"):
            self._add_sanity(analyses["sanity"])

    def _add_sanity(self, a: Mapping) -> None:
        """The zero-weight distillation (``config/distill/zero.py``) of one Table row's
        detector and seed, with the table's student and teacher, against that student run."""
        key = "analyses.sanity"
        table = self.config["tables"].get(a["table"])
        if table is None or table["teacher"] in ("none", "self"):
            raise ConfigError(f"{key}.table: {a['table']!r} is not a table with a trained "
                              f"teacher in this config")
        det, seed, ds = a["detector"], int(a["seed"]), table["dataset"]
        zero = self.distill_run(ds, det, table["student"], table["teacher"], "zero", {}, seed,
                                key)
        student = self.student_run(ds, det, table["student"], seed, key)
        self.analyses.append(Analysis("sanity", ds, det, table["student"], zero.rel,
                                      zero.config, baseline=student.rel))


def load_plan(config_path, overlays: Sequence = (), config_root: Optional[Path] = CONFIG_ROOT,
              method_root: Optional[Path] = None, **overrides) -> Plan:
    """Plan of a config file (deep-merged with ``overlays`` like Snakemake's configfiles)."""
    return Plan(load_config(config_path, overlays, **overrides), config_root=config_root,
                method_root=method_root)
