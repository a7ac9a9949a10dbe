# Shared state and helpers: config validation, the run plan, paths, resources, launcher.
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

REPO = Path(workflow.basedir)
if str(REPO) not in sys.path:  # pgd importable even without `pip install -e .`
    sys.path.insert(0, str(REPO))
from pgd import workflow_plan as wp  # noqa: E402

# 1) our validator: defaults + one-line errors naming the key; 2) snakemake's (same schema);
# 3) cross-field checks while building the plan (unknown dataset, ld without GFL, ...).
try:
    wp.validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    validate(config, "../schemas/config.schema.yaml")
    PLAN = wp.Plan(config, config_root=REPO / "config" / "detectors", validated=True)
except wp.ConfigError as _exc:
    raise ValueError(f"config error: {_exc}") from None

SCALE = config["scale"]
R = f"results/{SCALE}"            # every output of this scale
RUNS = f"{R}/runs"                # checkpoints (gitignored) + metrics.json per run
METRICS = f"{R}/metrics"          # tagged metrics: <table>/<det>/<setting>/seed<S>.json
BENCH = f"{R}/benchmarks"
LOGS = f"logs/{SCALE}"
PY = sys.executable               # the environment snakemake runs in
PYQ = shlex.quote(PY)
# The committed reference of this scale (read-only for the DAG; `pgd publish-reference` writes
# it). Relative to the repository, not to --directory, so every working directory compares
# with the same committed tree.
REFERENCE_LABEL = f"{config['reference_dir'].rstrip('/')}/{SCALE}"
REFERENCE = str(REPO / REFERENCE_LABEL)
# Software environment of every job, used with `--sdm conda` (ignored otherwise). CPU at the
# mini/smoke scales, CUDA at the paper scale; the path is relative to workflow/rules/.
CONDA_ENV = ("../../envs/environment-cuda.yaml" if config["config_dir"] == "paper"
             else "../../envs/environment-cpu.yaml")

if workflow.is_main_process:
    # What a (dry) run is about to do, before Snakemake's own job table.
    _c = PLAN.counts()
    print(f"[pgd] scale {SCALE}: outputs -> {R}/ (job logs -> {LOGS}/); training jobs: "
          f"{_c['teacher']} teacher, {_c['student']} student, {_c['distill']} distill, "
          f"{_c['teacher_free']} teacher-free; {_c['evaluate']} evaluations; reproduction "
          f"check against {REFERENCE_LABEL}/ "
          f"({'present' if os.path.isdir(os.path.join(REFERENCE, 'metrics')) else 'absent: the check will say so'})",
          file=sys.stderr)

RUN_KINDS = "|".join(wp.RUN_KINDS)
LABEL = "[A-Za-z0-9][A-Za-z0-9_.=+-]*"


def _alternatives(names):
    """Regex matching exactly ``names`` (never matches when empty)."""
    names = list(names)
    return "|".join(map(re.escape, names)) if names else "(?!x)x"


wildcard_constraints:
    seed="[0-9]+",
    detector="|".join(wp.DETECTORS),
    setting=LABEL,
    table=_alternatives(PLAN.tables),


# ----------------------------------------------------------------------------- resources

def res(kind, key):
    """Resource ``key`` of job type ``kind`` (config `resources.<kind>`, defaults in the
    schema)."""
    return config["resources"][kind][key]


def launcher(gpus):
    """``python -m pgd`` for 0/1 GPU, ``torchrun --nproc_per_node=N -m pgd`` for N > 1."""
    return wp.launcher(gpus, PY)


def device_args():
    d = config["device"]
    return "" if d == "auto" else f"--device {d}"


def cfg_options(kind):
    """``--cfg-options ...`` for `train` (train + distill) or `test` jobs, or ''."""
    opts = config["cfg_options"][kind]
    return ("--cfg-options " + " ".join(shlex.quote(o) for o in opts)) if opts else ""


# ----------------------------------------------------------------------------- plan lookups

def run_of(kind, wildcards):
    return PLAN.run(f"{kind}/{wildcards.run}")


def ckpt(rel):
    return f"{RUNS}/{rel}/final.pth"


def data_input(dataset):
    return PLAN.data_marker(dataset)


def tagged(rows):
    return [f"{METRICS}/{r.tag}" for r in rows]


def run_info_args(info):
    return " ".join(shlex.quote(f"{k}={v}") for k, v in info.items())


# ----------------------------------------------------------------------------- rule params

def train_params(kind):
    """params of a `pgd train` rule for run kind ``kind`` (teacher | student)."""
    def fp(w):
        r = run_of(kind, w)
        return wp.fingerprint(r.config, wp.config_digest(r.config, PLAN.config_root),
                              PLAN.data_root(r.dataset), r.seed, config["cfg_options"]["train"])
    return dict(
        py=PYQ,
        launcher=launcher(res(kind, "gpu")),
        config=lambda w: run_of(kind, w).config,
        work_dir=lambda w, output: os.path.dirname(output[0]),
        data_root=lambda w: shlex.quote(PLAN.data_root(run_of(kind, w).dataset)),
        seed=lambda w: run_of(kind, w).seed,
        extra=" ".join(a for a in (cfg_options("train"), device_args()) if a),
        fingerprint=fp,
    )


TRAIN_SHELL = (
    "{params.py} -m pgd.workflow_plan guard-workdir {params.work_dir} {params.fingerprint}"
    " > {log} 2>&1 && "
    "{params.launcher} train {params.config} --work-dir {params.work_dir}"
    " --data-root {params.data_root} --seed {params.seed} {params.extra} >> {log} 2>&1 && "
    "{params.py} -m pgd training-log {params.work_dir} --out {output.training_log} >> {log} 2>&1"
)


def distill_params(kind):
    """params of a `pgd distill` rule for run kind ``kind`` (distill | teacher_free)."""
    def fp(w):
        r = run_of(kind, w)
        return wp.fingerprint(r.config, r.teacher_config, r.teacher_run, r.method,
                              r.loss_options(), PLAN.data_root(r.dataset), r.seed,
                              config["cfg_options"]["train"],
                              wp.config_digest(r.config, PLAN.config_root),
                              wp.config_digest(r.teacher_config, PLAN.config_root))

    def loss(w):
        opts = run_of(kind, w).loss_options()
        return ("--loss-options " + " ".join(shlex.quote(o) for o in opts)) if opts else ""

    return dict(
        py=PYQ,
        launcher=launcher(res("distill", "gpu")),
        student=lambda w: run_of(kind, w).config,
        teacher=lambda w: run_of(kind, w).teacher_config or "",
        method=lambda w: run_of(kind, w).method,
        loss_options=loss,
        work_dir=lambda w, output: os.path.dirname(output[0]),
        data_root=lambda w: shlex.quote(PLAN.data_root(run_of(kind, w).dataset)),
        seed=lambda w: run_of(kind, w).seed,
        extra=" ".join(a for a in (cfg_options("train"), device_args()) if a),
        fingerprint=fp,
    )


def eval_run(w):
    """The run an `evaluate` job scores."""
    return PLAN.run(f"{w.kind}/{w.run}")


def analysis_of(name, w):
    """The teacher analysis (mask_out | quality_maps) of a job's `stem` wildcard."""
    return PLAN.analysis(name, w.stem)


def reference_metrics():
    """The reference's tagged metrics files (inputs of the reproduction check, so a newly
    published reference re-runs it); [] when this scale has no reference."""
    root = Path(REFERENCE) / "metrics"
    return sorted(str(p) for p in root.rglob("*.json")) if root.is_dir() else []


# ----------------------------------------------------------------------------- pretraining
PRETRAIN_SIZES = sorted(p.stem for p in (REPO / "config/detectors/_base_/sizes").glob("*.py"))


def _pretrain_setting(key):
    """A `pretrain` setting, read when a job needs it (scales without pretraining parse)."""
    return lambda w: config["pretrain"][key]


def _pretrain_dataset(key):
    """``key`` of the dataset entry the pretraining images share image size/difficulty with."""
    return config["datasets"][config["pretrain"]["dataset"]].get(key)


def _pretrain_difficulty(w):
    knobs = _pretrain_dataset("difficulty") or {}
    return ("--difficulty " + " ".join(shlex.quote(f"{k}={v}") for k, v in knobs.items())
            if knobs else "")
