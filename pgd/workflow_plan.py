"""Pure-Python planning for the Snakemake workflow (no Snakemake import; unit-tested).

The Snakefile turns the validated config into a :class:`Plan` once, and every rule's input,
params and run-info come from it. The plan has three layers:

* **runs** (:class:`Run`): one training job each -- a teacher, a student baseline, a
  distillation or a teacher-free run -- identified by its directory under
  ``results/<scale>/runs/`` (``Run.rel``)::

      teacher/<dataset>/<det>_<model>/seed<S>
      student/<dataset>/<det>_<model>/seed<S>
      distill/<dataset>/<det>_<student>/<teacher|self>/<method>/<variant>/seed<S>
      teacher_free/<dataset>/<det>_<student>/<method>/<variant>/seed<S>

  A run is trained and evaluated **once**, however many tables use it. Distillation runs get
  the method's full option set explicitly (``method_defaults`` merged with
  ``detector_method_defaults`` and the row's overrides); ``<variant>`` names the options that
  differ from those defaults (``default`` when none do), so e.g. the ATSS PGD run of Table 1 is
  also Table 5's ``pgw`` row, Table 6a's ``k=30`` column and Table 7's ``cls+reg`` row.
  Teachers are keyed by (dataset, detector, model) only and always use ``teacher_seed``.
  Self-distillation (``teacher: self``, Table 4) uses the student baseline of
  ``self_teacher_seed`` as teacher (same config, student schedule).

* **rows** (:class:`Row`): table membership, ``(table, detector, setting, seed) -> run``. Each
  row becomes a *tagged* metrics file ``results/<scale>/metrics/<table>/<det>/<setting>/seed<S>
  .json``: a copy of the run's ``metrics.json`` whose ``run`` block names that row (see
  :func:`tag_metrics`). ``pgd.tables.build.load_runs`` identifies a row by the ``run`` block,
  so this is how one evaluation feeds several tables.

* **analyses**: Fig. 3 mask-out and Fig. 2 quality maps on trained teachers.

Also a small CLI used by the rules: ``python -m pgd.workflow_plan {tag,guard-workdir,
check-data,summary,describe}`` (``describe CONFIG [OVERLAY...]`` prints the job counts).
"""
from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pgd.engine.config_utils import CONFIG_ROOT, resolve_config
from pgd.paths import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

DETECTORS = ("atss", "fcos", "gfl", "ddod", "autoassign")
DISTILL_METHODS = ("pgd", "fgd", "fgfi", "defeat", "frs", "fkd", "ld", "inherit")
TEACHER_FREE_METHODS = ("lgd",)
PAPER_TABLES = ("table1", "table2", "table3", "table4", "table5", "table6a", "table6b",
                "table7")
#: tables whose deltas take the student row of Table 1 (``pgd.tables.build.default_spec``).
BASELINE_FALLBACK = {"table5": "table1", "table6a": "table1", "table6b": "table1",
                     "table7": "table1"}
RUN_KINDS = ("teacher", "student", "distill", "teacher_free")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
FINGERPRINT_FILE = ".pgd_fingerprint"

#: figure stem -> what it needs (a table id or an analysis name).
FIGURES = {"fig_table1_gains": "table1", "fig_k_sweep": "table6a",
           "fig_alpha_sweep": "table6b", "fig3_mask_out": "mask_out"}


class ConfigError(ValueError):
    """A bad configuration value; the message is one line and starts with the key."""


# ----------------------------------------------------------------------------- validation

def _key_path(parts: Iterable) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<config>"


def load_yaml(path) -> dict:
    import yaml
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def validate_config(config: dict, schema_path=SCHEMA_PATH) -> dict:
    """Validate ``config`` in place against the JSON schema, filling in defaults.

    Mirrors ``snakemake.utils.validate(config, schema, set_default=True)`` but raises
    :class:`ConfigError` with a single line ``"<key.path>: <problem>"``.
    """
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import best_match

    schema = load_yaml(schema_path)
    base = Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema_)

    validator_cls = validators.extend(base, {"properties": set_defaults})
    if not isinstance(config, dict):
        raise ConfigError("<config>: the configuration must be a mapping")
    errors = list(validator_cls(schema).iter_errors(config))
    if errors:
        err = best_match(errors)
        msg = " ".join(str(err.message).split())
        if len(msg) > 300:
            msg = msg[:297] + "..."
        raise ConfigError(f"{_key_path(err.absolute_path)}: {msg}")
    return config


def check_method_option_keys(config: Mapping) -> None:
    """Every loss option of the config must be one its method reads, with a value the
    schema allows (:func:`pgd.method_options.check_method_options`, the rules ``pgd distill``
    applies): a misspelt key (``kk: 9``) would otherwise become a run of its own that trains
    exactly the default. Checked at plan time, before any job starts; one-line
    :class:`ConfigError` naming the key path and the method's known options."""
    from pgd.errors import UserError
    from pgd.method_options import check_method_options

    def check(method: str, options: Mapping, key: str) -> None:
        for opt, value in (options or {}).items():
            try:
                check_method_options(method, {opt: value})
            except UserError as exc:
                raise ConfigError(f"{key}.{opt}: {exc}") from None

    for method, opts in (config.get("method_defaults") or {}).items():
        check(method, opts, f"method_defaults.{method}")
    for det, per_method in (config.get("detector_method_defaults") or {}).items():
        for method, opts in (per_method or {}).items():
            check(method, opts, f"detector_method_defaults.{det}.{method}")
    for tid, table in (config.get("tables") or {}).items():
        ablation = (table or {}).get("ablation")
        if not ablation:
            continue
        method = ablation.get("method", "pgd")
        key = f"tables.{tid}.ablation"
        for label, opts in (ablation.get("variants") or {}).items():
            check(method, opts, f"{key}.variants.{label}")
        for opt, values in (ablation.get("sweep") or {}).items():
            for v in values:
                check(method, {opt: v}, f"{key}.sweep")


# ----------------------------------------------------------------------------- helpers

def format_value(value) -> str:
    """Option value as used in row labels, run directories and ``--loss-options``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 0.07 -> "0.07", 1.0 stays "1.0" (paper_values uses repr)
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value)
    return str(value)


def cli_value(value) -> str:
    """Value for ``--loss-options key=value`` (lists as ``[a,b]``, mmengine DictAction)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(cli_value(v) for v in value) + "]"
    return format_value(value)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def backbone_label(model: str) -> str:
    """``r18_student`` -> ``r18``; ``mbv2_student`` -> ``mbv2``; ``r50_student_crowdhuman``
    -> ``r50``."""
    return model.split("_", 1)[0]


def launcher(gpus: int, python: str = sys.executable) -> str:
    """Command prefix for ``pgd`` with ``gpus`` processes (torchrun when more than one)."""
    py = _quote(python)
    if int(gpus) > 1:
        return (f"{py} -m torch.distributed.run --standalone --nnodes=1 "
                f"--nproc_per_node={int(gpus)} -m pgd")
    return f"{py} -m pgd"


def _quote(s) -> str:
    import shlex
    return shlex.quote(str(s))


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
    from mmengine.config import Config  # lazy: the planner itself stays pure Python
    path = resolve_config(name, config_root)
    cfg = Config.fromfile(str(path), import_custom_modules=False)
    return fingerprint(cfg.to_dict())


# ----------------------------------------------------------------------------- plan objects

@dataclass(frozen=True)
class Run:
    """One training job; ``rel`` is its directory under ``results/<scale>/runs``."""

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

    def run_info(self) -> Dict[str, object]:
        """``pgd test --run-info`` of the run itself. It depends on the run only (not on which
        tables read it), so adding a table row never re-triggers an evaluation; the table
        rows are written by :func:`tag_metrics`."""
        return {"run": self.rel, "kind": self.kind, "detector": self.detector,
                "setting": self.method or self.kind, "variant": self.variant,
                "seed": self.seed, "backbone": backbone_label(self.model)}


@dataclass(frozen=True)
class Row:
    """One (table, detector, setting, seed) cell group, read from ``run``'s metrics."""

    table: str
    detector: str
    setting: str
    seed: int
    run: str                      # Run.rel
    student_backbone: str

    @property
    def tag(self) -> str:
        """Path of the tagged metrics file under ``results/<scale>/metrics``."""
        return f"{self.table}/{self.detector}/{self.setting}/seed{self.seed}.json"

    def run_info(self) -> Dict[str, object]:
        return {"table": self.table, "detector": self.detector, "setting": self.setting,
                "seed": self.seed, "student_backbone": self.student_backbone}


@dataclass(frozen=True)
class Analysis:
    """A teacher analysis (``mask_out`` for Fig. 3, ``quality_maps`` for Fig. 2)."""

    name: str
    dataset: str
    detector: str
    model: str
    run: str                       # the teacher's Run.rel
    config: str
    ratios: Tuple[float, ...] = ()

    @property
    def stem(self) -> str:
        return f"{self.dataset}/{self.detector}_{self.model}"


# ----------------------------------------------------------------------------- the plan

class Plan:
    """Everything the Snakefile needs, derived from a validated config."""

    def __init__(self, config: Mapping, config_root: Optional[Path] = CONFIG_ROOT,
                 validated: bool = False):
        if not validated:
            config = validate_config(copy.deepcopy(dict(config)))
        check_method_option_keys(config)
        self.config = config
        self.scale: str = config["scale"]
        self.config_dir: str = config["config_dir"]
        self.config_root = Path(config_root) if config_root is not None else None
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

    def method_defaults(self, method: str, detector: str) -> Dict[str, object]:
        out = dict(self.config.get("method_defaults", {}).get(method, {}) or {})
        per_det = self.config.get("detector_method_defaults", {}).get(detector, {}) or {}
        out.update(per_det.get(method, {}) or {})
        return out

    def resolve_options(self, method: str, detector: str, overrides: Mapping,
                        key: str) -> Tuple[Tuple[Tuple[str, object], ...], str]:
        """Full option set (sorted) and the variant name for ``overrides``."""
        base = self.method_defaults(method, detector)
        full = {**base, **dict(overrides)}
        diff = {k: v for k, v in full.items() if k not in base or not _same(base[k], v)}
        if not diff:
            variant = "default"
        else:
            variant = "__".join(f"{k}={format_value(v)}" for k, v in sorted(diff.items()))
        if not LABEL_RE.match(variant) or "/" in variant:
            raise ConfigError(f"{key}: option values give an unusable run name {variant!r} "
                              f"(use letters, digits and _ . = + -)")
        options = tuple(sorted((k, full[k]) for k in full))
        return options, variant

    def distill_run(self, dataset: str, detector: str, student: str, teacher: str,
                    method: str, overrides: Mapping, seed: int, key: str) -> Run:
        s_cfg = self.config_name(detector, student, key)
        if method == "ld" and detector != "gfl":
            raise ConfigError(f"{key}: method 'ld' is only defined for the gfl detector, "
                              f"not {detector!r}")
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
        ident = (row.table, row.detector, row.setting, row.seed)
        old = self._row_index.get(ident)
        if old is not None:
            if old.run == row.run:
                return
            raise ConfigError(f"{key}: row {row.setting!r} of {row.table}/{row.detector} "
                              f"is defined twice (runs {old.run} and {row.run})")
        self._row_index[ident] = row
        self.rows.append(row)

    def _add_table(self, tid: str, t: Mapping) -> None:
        key = f"tables.{tid}"
        ds = t["dataset"]
        if ds not in self.datasets:
            raise ConfigError(f"{key}.dataset: unknown dataset {ds!r} (defined: "
                              f"{', '.join(self.datasets)})")
        methods: Mapping[str, List[str]] = t.get("methods") or {}
        ablation = t.get("ablation")
        if not methods and not ablation:
            raise ConfigError(f"{key}: needs `methods` and/or `ablation`")
        dets = list(methods)
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
            for d, ms in methods.items():
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
            for m in methods.get(det, []):
                for s in seeds:
                    run = self.distill_run(ds, det, student, teacher, m, {}, s,
                                           f"{key}.methods.{det}")
                    self._add_row(Row(tid, det, m, s, run.rel, bb), key)
            if ablation and det in ablation["detectors"]:
                for label, overrides in self.ablation_variants(ablation, f"{key}.ablation"):
                    for s in seeds:
                        run = self.distill_run(ds, det, student, teacher, ablation["method"],
                                               overrides, s, f"{key}.ablation")
                        self._add_row(Row(tid, det, label, s, run.rel, bb), key)

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

    # ------------------------------------------------------------------ queries
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

    def row(self, table: str, detector: str, setting: str, seed: int) -> Row:
        try:
            return self._row_index[(table, detector, setting, int(seed))]
        except KeyError:
            raise KeyError(f"no row {setting!r} seed {seed} for {detector} in {table} of the "
                           f"{self.scale!r} plan") from None

    def rows_of(self, table: str) -> List[Row]:
        return [r for r in self.rows if r.table == table]

    def table_input_rows(self, table: str) -> List[Row]:
        """Rows whose tagged metrics the builder of ``table`` needs: its own rows plus, where
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

    def tuning_tables(self) -> List[str]:
        """``tune_<method>`` tables: the loss-scale search of config/tuning.yaml."""
        return [t for t in self.tables if t.startswith("tune_")]

    def figure_stems(self) -> List[str]:
        have = set(self.tables) | {a.name for a in self.analyses}
        return [stem for stem, need in FIGURES.items() if need in have]

    def figure_input_rows(self) -> List[Row]:
        rows: Dict[str, Row] = {}
        for stem in self.figure_stems():
            need = FIGURES[stem]
            if need in PAPER_TABLES:
                for r in self.table_input_rows(need):
                    rows[r.tag] = r
        return list(rows.values())

    def analyses_of(self, name: str) -> List[Analysis]:
        return [a for a in self.analyses if a.name == name]

    def analysis(self, name: str, stem: str) -> Analysis:
        for a in self.analyses:
            if a.name == name and a.stem == stem:
                return a
        raise KeyError(f"no {name} analysis {stem!r} in the {self.scale!r} plan")

    def counts(self) -> Dict[str, int]:
        """Number of jobs per kind (as the DAG will have them from scratch)."""
        out = {k: len(self.runs_of(k)) for k in RUN_KINDS}
        out["evaluate"] = len(self.evaluated_runs())
        out["tag"] = len(self.rows)
        out["tables"] = len(self.tables)
        out["datasets"] = (len(self.synthetic_datasets()) + len(self.external_datasets())
                           + len(self.holdout_datasets()))
        out["mask_out"] = len(self.analyses_of("mask_out"))
        out["quality_maps"] = len(self.analyses_of("quality_maps"))
        return out

    def describe(self) -> str:
        lines = [f"scale {self.scale}: " + ", ".join(f"{k}={v}" for k, v in
                                                     self.counts().items())]
        for tid in self.tables:
            rows = self.rows_of(tid)
            settings = list(dict.fromkeys((r.detector, r.setting) for r in rows))
            lines.append(f"  {tid}: {len(settings)} rows, {len(rows)} metrics files")
        return "\n".join(lines)


def load_plan(config_path, overlays: Sequence = (), config_root: Optional[Path] = CONFIG_ROOT,
              **overrides) -> Plan:
    """Plan of a config file (deep-merged with ``overlays`` like Snakemake's configfiles)."""
    config = load_yaml(config_path)
    for ov in overlays:
        _deep_update(config, ov if isinstance(ov, dict) else load_yaml(ov))
    _deep_update(config, overrides)
    return Plan(config, config_root=config_root)


def _deep_update(dst: dict, src: Mapping) -> dict:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


# ----------------------------------------------------------------------------- rule helpers

def tag_metrics(src, dst, run_info: Mapping) -> dict:
    """Copy metrics JSON ``src`` to ``dst`` with its ``run`` block replaced by ``run_info``
    (the table row); the original block is kept as ``run.evaluated_as``."""
    from pgd.io import atomic_write_json
    with open(src, "r", encoding="utf-8") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict):
        raise ValueError(f"{src}: metrics JSON must be an object")
    original = doc.get("run")
    doc["run"] = dict(run_info)
    if original and original != doc["run"]:
        doc["run"]["evaluated_as"] = original
    atomic_write_json(dst, doc)
    return doc


def guard_workdir(workdir, fp: str) -> bool:
    """Make ``pgd train``'s automatic resume safe: if ``workdir`` holds the files of a run with
    other parameters (fingerprint differs), move them aside into
    ``superseded-<old fingerprint>/``. Returns True if it moved anything.

    Nothing is deleted here: the new run may still crash at once (a misspelt option), and the
    old model must then stay recoverable. ``pgd train`` deletes the superseded folders once
    the new run has written its first checkpoint or finished
    (:func:`pgd.engine.workdir.drop_superseded`). Files set aside earlier for exactly the
    parameters now asked for are moved back, so the run resumes (or is already done)."""
    from pgd.engine.workdir import move_run_state, restore_superseded, superseded_dir
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    stamp = wd / FINGERPRINT_FILE
    old = stamp.read_text().strip() if stamp.is_file() else None
    moved = False
    if old is not None and old != fp:
        moved = move_run_state(wd, superseded_dir(wd, old))
        if moved:
            print(f"[workflow] {wd}: parameters changed, the previous run's checkpoints moved "
                  f"to {superseded_dir(wd, old).name}/ (deleted once the new run has "
                  f"written a checkpoint)", flush=True)
        if restore_superseded(wd, fp):
            print(f"[workflow] {wd}: restored the checkpoints of a run with these parameters "
                  f"from {superseded_dir(wd, fp).name}/", flush=True)
    stamp.write_text(fp + "\n")
    return moved


def check_data(root, required: Sequence[str], out) -> None:
    """Fail with one line if an external dataset is missing; else write the stamp ``out``."""
    from pgd.io import atomic_write_json
    rootp = Path(root)
    if not rootp.is_dir():
        raise SystemExit(f"error: dataset root {root} does not exist (set datasets.<name>.root "
                         f"in the config)")
    missing = [r for r in required if not (rootp / r).exists()]
    if missing:
        raise SystemExit(f"error: dataset root {root} lacks {', '.join(missing)}")
    from pgd.data.check import require_clean
    from pgd.errors import UserError
    folders = [rootp / r for r in required if (rootp / r).is_dir()] or [rootp]
    for ann in [rootp / r for r in required if r.endswith(".json")]:
        try:  # the `pgd check-data` of every annotation file, as pgd train/test repeat it
            require_clean(ann, _images_folder(ann, folders))
        except UserError as exc:
            raise SystemExit(f"error: {exc}") from None
    atomic_write_json(out, {"root": str(rootp.resolve()), "required": list(required)})


def _images_folder(ann: Path, folders: Sequence[Path]) -> Path:
    """The required folder holding the first image of ``ann`` (COCO: ``train2017/`` for
    ``instances_train2017.json``; CrowdHuman: ``Images/``); the first folder if none does
    (the check then reports the images as missing)."""
    try:
        with open(ann, "r", encoding="utf-8") as fh:
            first = (json.load(fh).get("images") or [{}])[0].get("file_name", "")
    except (OSError, ValueError, AttributeError, IndexError):
        return folders[0]
    return next((f for f in folders if first and (f / first).is_file()), folders[0])


def write_summary(out, tables: Sequence, claims: Optional[str], figures: Sequence,
                  scale: str, synthetic: bool) -> None:
    """``results/<scale>/report.md``: every table, the claim check and links to figures."""
    from pgd.io import atomic_write_text
    outp = Path(out)
    parts = [f"# PGD reproduction -- scale `{scale}`", ""]
    if synthetic:
        parts += ["> **SYNTHETIC DATA.** Reproduced numbers come from procedurally generated "
                  "images and are not comparable to the paper's COCO / CrowdHuman numbers.", ""]
    parts += ["Generated by the Snakemake workflow (`snakemake --report` gives the HTML "
              "version with captions).", "", "## Tables", ""]
    for t in tables:
        parts += [f"### {Path(t).stem}", "", Path(t).read_text(encoding="utf-8").strip(), ""]
    if figures:
        parts += ["## Figures", ""]
        for f in figures:
            rel = os.path.relpath(f, outp.parent)
            parts += [f"![{Path(f).stem}]({rel})", ""]
    if claims:
        parts += ["## Claim check", "", Path(claims).read_text(encoding="utf-8").strip(), ""]
    atomic_write_text(outp, "\n".join(parts))


def _parse_kv(items: Sequence[str]) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: {item!r} is not key=value")
        k, v = item.split("=", 1)
        out[k] = int(v) if k == "seed" else v
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgd.workflow_plan",
                                 description="helpers of the Snakemake workflow")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("tag", help="copy a metrics JSON with the run block of a table row")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--run", nargs="+", required=True, metavar="KEY=VALUE")
    p = sub.add_parser("guard-workdir", help="drop stale checkpoints before (re)training")
    p.add_argument("workdir")
    p.add_argument("fingerprint")
    p = sub.add_parser("check-data", help="check an external dataset, write a stamp")
    p.add_argument("--root", required=True)
    p.add_argument("--require", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p = sub.add_parser("summary", help="write results/<scale>/report.md")
    p.add_argument("--out", required=True)
    p.add_argument("--scale", required=True)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--tables", nargs="*", default=[])
    p.add_argument("--claims", default=None)
    p.add_argument("--figures", nargs="*", default=[])
    p = sub.add_parser("describe", help="print the job counts of a config")
    p.add_argument("configfiles", nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "tag":
        tag_metrics(args.src, args.dst, _parse_kv(args.run))
    elif args.cmd == "guard-workdir":
        guard_workdir(args.workdir, args.fingerprint)
    elif args.cmd == "check-data":
        check_data(args.root, args.require, args.out)
    elif args.cmd == "summary":
        write_summary(args.out, args.tables, args.claims, args.figures, args.scale,
                      args.synthetic)
    elif args.cmd == "describe":
        try:
            print(load_plan(args.configfiles[0], args.configfiles[1:]).describe())
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
