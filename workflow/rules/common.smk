# Shared state and helpers: config validation, the run plan, paths, resources, launcher.
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

REPO = Path(workflow.basedir)
if str(REPO) not in sys.path:  # pgd importable even without `pip install -e .`
    sys.path.insert(0, str(REPO))
from pgd import workflow as wf  # noqa: E402
from pgd.workflow import manifest as wm  # noqa: E402

# 1) the schema with the catalog's method/detector names filled in (pgd.workflow.config):
# defaults + one-line errors naming the key. It is the only schema validation: Snakemake's
# `validate` reads the schema file, which carries no names of its own (pgd/catalog.py has
# them), and would check nothing more. 2) cross-field checks while building the plan
# (unknown dataset, ld without GFL, ...).
try:
    # what Snakemake read (--configfile and the scale's file), re-read strictly: a key given
    # twice in one file is an error (Snakemake's loader keeps the last copy silently)
    for _file in dict.fromkeys(map(str, [*workflow.config_settings.configfiles,
                                         *workflow.configfiles])):
        wf.load_yaml(_file)
    wf.validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    # method configs: pgd.method_options.METHOD_ROOT, the folder `pgd distill` reads
    PLAN = wf.Plan(config, config_root=REPO / "config" / "detectors", validated=True)
except wf.ConfigError as _exc:
    raise ValueError(f"config error: {_exc}") from None

SCALE = config["scale"]
R = f"results/{SCALE}"            # every output of this scale
RUNS = f"{R}/runs"                # checkpoints (gitignored) + metrics.json per run
MANIFESTS = f"{R}/{wm.MANIFEST_DIR}"  # one row manifest per table: <table>.json
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
          f"({'present' if os.path.isdir(os.path.join(REFERENCE, wm.MANIFEST_DIR)) else 'absent: the check will say so'})",
          file=sys.stderr)

RUN_KINDS = "|".join(wf.RUN_KINDS)
LABEL = "[A-Za-z0-9][A-Za-z0-9_.=+-]*"


def _alternatives(names):
    """Regex matching exactly ``names`` (never matches when empty)."""
    names = list(names)
    return "|".join(map(re.escape, names)) if names else "(?!x)x"


wildcard_constraints:
    seed="[0-9]+",
    detector="|".join(wf.DETECTORS),
    setting=LABEL,
    table=_alternatives(PLAN.tables),


# ----------------------------------------------------------------------------- resources

def res(kind, key):
    """Resource ``key`` of job type ``kind`` (config `resources.<kind>`, defaults in the
    schema)."""
    return config["resources"][kind][key]


def launcher(gpus):
    """``python -m pgd`` for 0/1 GPU, ``torchrun --nproc_per_node=N -m pgd`` for N > 1."""
    return wf.launcher(gpus, PY)


def device_args():
    d = config["device"]
    return "" if d == "auto" else f"--device {d}"


def cfg_options(kind):
    """``--cfg-options ...`` for `train` (train + distill) or `test` jobs, or ''."""
    opts = config["cfg_options"][kind]
    return ("--cfg-options " + " ".join(shlex.quote(o) for o in opts)) if opts else ""


def image_size_args(config_name, dataset):
    """``--cfg-options image_size=N`` when the dataset's SYNTHETIC images are drawn at another
    size than the detector config resizes to (its ``image_size``), else ''."""
    size = PLAN.image_size_override(config_name, dataset)
    return f"--cfg-options image_size={size}" if size is not None else ""


def joined(*args):
    return " ".join(a for a in args if a)


# ----------------------------------------------------------------------------- plan lookups

def run_of(kind, wildcards):
    return PLAN.run(f"{kind}/{wildcards.run}")


def ckpt(rel):
    return f"{RUNS}/{rel}/final.pth"


def data_input(dataset):
    return PLAN.data_marker(dataset)


def manifests(tables):
    """The row manifests of ``tables``."""
    return [wm.manifest_path(R, t) for t in tables]


def manifest_metrics(tables):
    """The run metrics the manifests of ``tables`` point at (inputs of the readers, so
    Snakemake evaluates every run a table row reads before the table is built)."""
    return [f"{RUNS}/{r.rel}/metrics.json" for r in PLAN.input_runs(tables)]


def run_info_args(info):
    """``--run-info`` items; a mapping (the run's options) as dotted keys, ``options.k=9``
    (mmengine's DictAction parses lists but not mappings)."""
    items = []
    for k, v in info.items():
        if isinstance(v, dict):
            items += [(f"{k}.{sk}", wf.cli_value(sv)) for sk, sv in v.items()]
        else:
            items.append((k, v))
    return " ".join(shlex.quote(f"{k}={v}") for k, v in items)


# ----------------------------------------------------------------------------- rule params

def pretrain_args():
    """``--cfg-options pretrain_scale=<scale>`` when this scale has a `pretrain` block: the mini
    configs then load results/<scale>/pretrain/<size>/backbone.pth (their default `none` trains
    from scratch); '' otherwise."""
    return f"--cfg-options pretrain_scale={SCALE}" if config.get("pretrain") else ""


def pretrained_input(kind):
    """The synthetic-pretrained backbone a training job loads (the `pretrain_backbone` output;
    for a distillation the student's, the teacher comes from its final.pth); none when this
    scale has no `pretrain` block or the config loads remote (ImageNet) weights."""
    def inputs(w):
        return PLAN.pretrained_checkpoints(run_of(kind, w)) if config.get("pretrain") else []
    return inputs


def curve_args(kind):
    """Student baselines validate every `student_val_interval` epochs: their learning curve
    feeds the student_plateau gate (distillations keep the config's end-only validation)."""
    every = config.get("student_val_interval", 0)
    return f"--cfg-options train_cfg.val_interval={every}" if kind == "student" and every else ""


def train_params(kind):
    """params of a `pgd train` rule for run kind ``kind`` (teacher | student)."""
    def fp(w):
        return PLAN.fingerprint(run_of(kind, w))  # detector config digest, data, seed, ...
    return dict(
        py=PYQ,
        launcher=launcher(res(kind, "gpu")),
        config=lambda w: run_of(kind, w).config,
        work_dir=lambda w, output: os.path.dirname(output[0]),
        data_root=lambda w: shlex.quote(PLAN.data_root(run_of(kind, w).dataset)),
        seed=lambda w: run_of(kind, w).seed,
        extra=lambda w: joined(cfg_options("train"), pretrain_args(), curve_args(kind),
                               device_args(), image_size_args(run_of(kind, w).config,
                                                              run_of(kind, w).dataset)),
        fingerprint=fp,
    )


TRAIN_SHELL = (
    "{params.py} -m pgd guard-workdir {params.work_dir} {params.fingerprint}"
    " > {log} 2>&1 && "
    "{params.launcher} train {params.config} --work-dir {params.work_dir}"
    " --data-root {params.data_root} --seed {params.seed} {params.extra} >> {log} 2>&1 && "
    "{params.py} -m pgd training-log {params.work_dir} --out {output.training_log} >> {log} 2>&1"
)


def distill_params(kind):
    """params of a `pgd distill` rule for run kind ``kind`` (distill | teacher_free)."""
    def fp(w):
        # + the method config (config/distill/<method>.py as this detector sees it), so an
        # edited method default re-runs that method's runs only
        return PLAN.fingerprint(run_of(kind, w))

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
        extra=lambda w: joined(cfg_options("train"), pretrain_args(), device_args(),
                               image_size_args(run_of(kind, w).config, run_of(kind, w).dataset)),
        fingerprint=fp,
    )


def eval_run(w):
    """The run an `evaluate` job scores."""
    return PLAN.run(f"{w.kind}/{w.run}")


def analysis_of(name, w):
    """The analysis (mask_out | quality_maps | sanity) of a job's `stem` wildcard."""
    return PLAN.analysis(name, w.stem)


def reference_inputs():
    """The reference's row manifests and the run metrics they list (inputs of the
    reproduction check, so a newly published reference re-runs it); [] when this scale has
    no reference."""
    root = Path(REFERENCE)
    found = sorted(str(p) for p in (root / wm.MANIFEST_DIR).glob("*.json"))
    if found and (root / "runs").is_dir():
        found += sorted(str(p) for p in (root / "runs").rglob("metrics.json"))
    return found


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


# ----------------------------------------------------------------------------- premise gates

def _table1_students():
    """Table 1's student baseline runs (their metrics and learning curves)."""
    if "table1" not in PLAN.tables:
        return []
    rels = dict.fromkeys(r.run for r in PLAN.rows_of("table1") if r.setting == "student")
    return [PLAN.run(rel) for rel in rels]


def _geometry_subjects():
    """dataset -> Table 1 student config, for the synthetic datasets whose train annotations
    the workflow writes (the strides PGW sees are the student's)."""
    out = {}
    for run in _table1_students():
        kind = PLAN.datasets[run.dataset]["kind"]
        if kind in ("shapes", "crowd"):
            out.setdefault(run.dataset, run.config)
    return out


def _geometry_ann(dataset):
    kind = PLAN.datasets[dataset]["kind"]
    return f"{PLAN.data_root(dataset)}/annotations/synthetic_{kind}_train.json"
