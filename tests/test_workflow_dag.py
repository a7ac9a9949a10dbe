"""The Snakemake workflow: dry runs of every scale, config validation, the run planner, the
SLURM profile, and the example ablation of workflow/ADDING_AN_ABLATION.md.

Dry runs use ``--directory <tmp>`` so nothing (not even .snakemake/) is written in the repo.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pgd import workflow as wp

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
FIXTURE = REPO / "tests" / "fixtures" / "ablation_k45.yaml"
SCALES = {"mini": REPO / "config" / "config.yaml", "smoke": REPO / "config" / "smoke.yaml",
          "paper": REPO / "config" / "paper.yaml"}
#: the mini rows cut from the timed reproduction, as an overlay on config/config.yaml
MINI_ABLATIONS = REPO / "config" / "mini_ablations.yaml"
ALL_RULES = {"make_data", "check_data", "train_teacher", "train_student", "distill",
             "distill_teacher_free", "evaluate", "row_manifest", "mask_out", "quality_maps",
             "table", "figures", "claims", "summary", "reproduction", "pretrain_backbone",
             "geometry", "regime", "sanity_check", "all"}
K45_RUN = "distill/shapes/atss_r18_student/r34_teacher/pgd/k=45/seed0"


def snakemake(workdir, *args, timeout=180):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
           str(workdir), *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def job_stats(text: str) -> Counter:
    """Parse the first 'Job stats:' table of snakemake's output."""
    lines = text.splitlines()
    start = lines.index("Job stats:")
    stats = Counter()
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


def dry_run(workdir, *args) -> Counter:
    res = snakemake(workdir, "-n", "--quiet", "rules", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    return job_stats(res.stdout + res.stderr)


def dag_outputs(workdir, *args) -> dict:
    """output file -> rule for every job of the DAG (snakemake --summary)."""
    res = snakemake(workdir, "--summary", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    out = {}
    for line in res.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 3:
            out[cols[0]] = cols[2]
    return out


def expected_stats(plan: wp.Plan) -> Counter:
    c = plan.counts()
    exp = Counter({"make_data": len(plan.synthetic_datasets()),
                   "check_data": len(plan.external_datasets()),
                   "train_teacher": c["teacher"], "train_student": c["student"],
                   "distill": c["distill"], "distill_teacher_free": c["teacher_free"],
                   "evaluate": c["evaluate"], "row_manifest": c["manifests"],
                   "table": c["tables"],
                   "mask_out": c["mask_out"], "quality_maps": c["quality_maps"],
                   "sanity_check": c["sanity"],
                   "figures": 1 if plan.figure_stems() else 0,
                   "claims": 1, "summary": 1, "reproduction": 1, "all": 1,
                   "pretrain_backbone": len(pretrained_files(plan)),
                   "geometry": len(geometry_datasets(plan)), "regime": 1})
    return +exp  # drop zero counts


def geometry_datasets(plan: wp.Plan) -> set:
    """Synthetic datasets of Table 1's student rows (one `pgd geometry` job each)."""
    if "table1" not in plan.tables:
        return set()
    return {plan.run(r.run).dataset for r in plan.rows_of("table1") if r.setting == "student"
            and plan.datasets[plan.run(r.run).dataset]["kind"] in ("shapes", "crowd")}


def pretrained_files(plan: wp.Plan) -> set:
    """The synthetic-pretrained backbones the plan's training jobs load (scales with a
    `pretrain` block; one pretrain_backbone job each)."""
    if not plan.config.get("pretrain"):
        return set()
    return {ck for kind in wp.RUN_KINDS for run in plan.runs_of(kind)
            for ck in plan.pretrained_checkpoints(run)}


@pytest.fixture(scope="module")
def plans():
    out = {name: wp.load_plan(path) for name, path in SCALES.items()}
    out["mini+ablations"] = wp.load_plan(SCALES["mini"], [MINI_ABLATIONS])
    return out


# ----------------------------------------------------------------------------- dry runs

def test_dry_run_default_is_mini(tmp_path, plans):
    stats = dry_run(tmp_path)  # no --config: config/config.yaml
    assert stats == expected_stats(plans["mini"])
    # The timed reproduction: Table 1 on ATSS and FCOS with inherit, FGD, PGD and on GFL with
    # inherit, FGD, LD, PGD, 3 seeds each (30) + Table 5's box row (3 seeds; its pgw row is
    # Table 1's PGD run) + the zero-weight sanity run (1) = 34; one teacher per detector.
    assert stats["distill"] == 34
    assert stats["train_teacher"] == 3
    assert stats["train_student"] == 9
    assert stats["sanity_check"] == 1
    assert stats["table"] == 2 and "distill_teacher_free" not in stats


def test_dry_run_mini_with_ablations_overlay(tmp_path, plans):
    """config/mini_ablations.yaml adds the cut rows: Snakemake merges it like load_plan."""
    stats = dry_run(tmp_path, "--configfile", SCALES["mini"], MINI_ABLATIONS)
    assert stats == expected_stats(plans["mini+ablations"])
    # Table 1 with every competitor (ATSS, FCOS: 6 + inherit; GFL: 4, 3 seeds = 72) +
    # Table 2 (4) + Table 3 (2) + Table 4 (4) + the ablations' own rows (Table 5: 6 with the
    # box row's 3 seeds, 6a: 3, 6b: 6, 7: 3) + the sanity run = 95 (before LGD, teacher-free)
    assert stats["distill"] == 95
    assert stats["train_teacher"] == 4  # + DDOD on crowd
    assert stats["distill_teacher_free"] == 1
    assert stats["table"] == 9


def test_dry_run_smoke_exercises_every_rule(tmp_path, plans):
    stats = dry_run(tmp_path, "--config", "scale=smoke")
    assert stats == expected_stats(plans["smoke"])
    # check_data only exists for real (external) datasets, i.e. the paper scale
    assert set(stats) == ALL_RULES - {"check_data"}
    assert set(plans["smoke"].tables) >= set(wp.PAPER_TABLES)  # every table builder
    methods = {r.method for r in plans["smoke"].runs.values() if r.method}
    assert methods == set(wp.DISTILL_METHODS) | set(wp.TEACHER_FREE_METHODS)
    assert sum(stats.values()) < 120  # DAG stays small


def test_training_jobs_depend_on_their_scale_pretraining(tmp_path, plans):
    """Every mini/smoke training job loads results/<scale>/pretrain/<size>/backbone.pth (the
    pretrain rule's output) and tells `pgd` its scale; the paper scale (ImageNet) needs none."""
    assert pretrained_files(plans["smoke"]) == {
        f"results/smoke/pretrain/{size}/backbone.pth"
        for size in ("mini_r18", "mini_r34", "mini_mbv2")}
    assert not pretrained_files(plans["paper"])
    student = next(r for r in plans["smoke"].runs_of("distill") if r.detector == "atss")
    assert plans["smoke"].pretrained_checkpoints(student) == [
        "results/smoke/pretrain/mini_r18/backbone.pth"]  # the student's; the teacher: final.pth
    res = snakemake(tmp_path, "-n", "-p", f"results/smoke/runs/{student.rel}/final.pth",
                    "--config", "scale=smoke")
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "rule pretrain_backbone" in text
    assert "--cfg-options pretrain_scale=smoke" in text


def test_dataset_image_size_reaches_every_job_that_reads_the_data(tmp_path, plans):
    """`datasets.<name>.image_size` other than the configs' own (128 px at mini) is passed to
    every command that reads those images as `--cfg-options image_size=N` (the configs then
    resize to N, pgd.engine.config_utils.apply_image_size), and enters the run fingerprints;
    at the configs' own size nothing is passed and no fingerprint changes."""
    overlay = tmp_path / "size256.yaml"
    overlay.write_text("scale: size256\ndatasets:\n  shapes: {image_size: 256}\n")
    res = snakemake(tmp_path, "-n", "-p", "--configfile", SCALES["mini"], overlay)
    assert res.returncode == 0, res.stderr[-3000:]
    commands = [ln for ln in (res.stdout + res.stderr).splitlines()
                if re.search(r"-m pgd (train|distill|test|mask-out|analyse-quality|geometry) ",
                             ln)]
    assert len(commands) > 90
    assert all("--cfg-options image_size=256" in c for c in commands), [
        c for c in commands if "image_size=256" not in c][:2]
    big = wp.load_plan(SCALES["mini"], [overlay])
    run = next(iter(big.runs.values()))
    mini = plans["mini"]
    assert big.image_size_override(run.config, run.dataset) == 256
    assert mini.image_size_override(run.config, run.dataset) is None
    assert big.fingerprint(run) != mini.fingerprint(run)
    # the published mini reference recorded the fingerprints of the configs' own size
    ref = json.loads((REPO / "results" / "reference" / "mini" / "runs" / run.rel
                      / "metrics.json").read_text())
    assert mini.fingerprint(run) == ref["provenance"]["run_fingerprint"]
    default = snakemake(tmp_path, "-n", "-p")
    assert default.returncode == 0 and "image_size=" not in default.stdout + default.stderr


def test_dry_run_paper(tmp_path, plans):
    res = snakemake(tmp_path, "-n", "-p", "--configfile", SCALES["paper"])
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    stats = job_stats(text)
    assert stats == expected_stats(plans["paper"])
    assert stats["check_data"] == 2 and "make_data" not in stats
    # 8 GPUs per training job -> torchrun; evaluation stays single-process
    assert re.search(r"torch\.distributed\.run --standalone --nnodes=1 --nproc_per_node=8 "
                     r"-m pgd train paper/atss_r101_teacher", text)
    assert re.search(r"nproc_per_node=8 -m pgd distill --student paper/atss_r50_student", text)
    assert re.search(r"-m pgd test paper/ddod_r50_student_crowdhuman \S+ --out \S+ "
                     r"--data-root data/crowdhuman --seed 0 --crowd", text)


def test_slurm_profile_dry_run_shows_resources(tmp_path):
    res = snakemake(tmp_path, "-n", "--profile", REPO / "workflow" / "profiles" / "slurm",
                    "--config", "scale=paper")
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    teacher = re.search(r"rule train_teacher:.*?resources: ([^\n]*)", text, re.S)
    assert teacher, text[-2000:]
    for item in ("gpu=8", "cpus_per_gpu=6", "mem_mb=192000", "runtime=4320"):  # "3d" -> min
        assert item in teacher.group(1)
    evaluate = re.search(r"rule evaluate:.*?resources: ([^\n]*)", text, re.S)
    assert "gpu=1" in evaluate.group(1) and "runtime=120" in evaluate.group(1)
    # aggregation and plotting stay on the submit host (a dry run prints them as "rule")
    # (rules that exist only at some scales declare themselves local next to their definition)
    sources = [SNAKEFILE, *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    local = {r.strip() for src in sources
             for line in re.findall(r"^\s*localrules: (.*)$", src.read_text(), re.M)
             for r in line.split(",")}
    assert {"table", "figures", "claims", "row_manifest", "summary", "check_data",
            "tuning_summary"} <= local
    assert not {"train_teacher", "train_student", "distill", "evaluate"} & local


# ----------------------------------------------------------------------------- validation

BAD_VALUES = {
    "unknown method": (lambda c: c["tables"]["table1"]["methods"]["atss"].append("kdx"),
                       "tables.table1.methods.atss[7]"),
    "unknown detector": (lambda c: c["tables"]["table1"]["methods"].update(yolo=["pgd"]),
                         "tables.table1.methods: 'yolo'"),
    "K <= 0": (lambda c: c["tables"]["table6a"]["ablation"]["sweep"].update(k=[0, 30]),
               "tables.table6a.ablation.sweep.k[0]"),
    "negative alpha": (lambda c: c["tables"]["table6b"]["ablation"]["sweep"].update(
        alpha=[-0.05]), "tables.table6b.ablation.sweep.alpha[0]"),
    "negative default alpha": (lambda c: c.setdefault("method_defaults", {}).setdefault(
        "pgd", {}).update(alpha=-1),
                               "method_defaults.pgd.alpha"),
    "empty seeds": (lambda c: c["tables"]["table1"].update(seeds=[]), "tables.table1.seeds"),
    "ld without gfl": (lambda c: c["tables"]["table1"]["methods"]["atss"].append("ld"),
                       "tables.table1.methods.atss: method 'ld'"),
    "unknown dataset": (lambda c: c["tables"]["table3"].update(dataset="coco"),
                        "tables.table3.dataset"),
    "missing detector config": (lambda c: c["tables"]["table1"].update(student="r19_student"),
                                "tables.table1.student"),
    "runtime without unit": (lambda c: c["resources"]["teacher"].update(runtime="3"),
                             "resources.teacher.runtime"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_config_one_line_error_naming_key(case):
    mutate, key = BAD_VALUES[case]
    config = wp.load_yaml(SCALES["smoke"])
    mutate(config)
    with pytest.raises(wp.ConfigError) as exc:
        wp.Plan(config)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(key.split(":")[0]) and key in msg, msg


@pytest.mark.parametrize("case", ["unknown method", "unknown detector", "K <= 0",
                                  "negative alpha", "empty seeds"])
def test_bad_config_rejected_by_snakemake_validate(case, tmp_path):
    from snakemake.utils import validate
    config = wp.load_yaml(SCALES["smoke"])
    BAD_VALUES[case][0](config)
    with pytest.raises(Exception):  # the schema with the catalog's names filled in
        validate(config, str(wp.write_schema(tmp_path / "schema.json")))


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_scale_configs_pass_snakemake_validate_with_defaults(scale, tmp_path):
    from snakemake.utils import validate
    config = wp.load_yaml(SCALES[scale])
    config["resources"].pop("local")
    validate(config, str(wp.write_schema(tmp_path / "schema.json")))
    assert config["resources"]["local"]["runtime"] == "1h"  # default filled in


def test_bad_config_fails_the_dry_run_with_the_key(tmp_path):
    text = SCALES["smoke"].read_text().replace("sweep: {k: [15, 30]}", "sweep: {k: [-1, 30]}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    res = snakemake(tmp_path, "-n", "--configfile", bad)
    assert res.returncode != 0
    assert ("config error: tables.table6a.ablation.sweep.k[0]: -1 is less than or equal to "
            "the minimum of 0\n") in res.stdout + res.stderr
    res = snakemake(tmp_path, "-n", "--config", "scale=nosuchscale")
    assert res.returncode != 0 and "config error: scale:" in res.stdout + res.stderr


def test_key_given_twice_fails_the_dry_run_naming_file_and_line(tmp_path):
    """YAML keeps the last of two equal keys silently; a pasted second block must not change
    the runs without a word."""
    text = SCALES["smoke"].read_text()
    bad = tmp_path / "twice.yaml"
    bad.write_text(text + "\nteacher_seed: 1\n")
    line = len(bad.read_text().splitlines())
    res = snakemake(tmp_path, "-n", "--configfile", bad)
    assert res.returncode != 0
    assert (f"config error: twice.yaml: key 'teacher_seed' given twice (line {line}); "
            "keep one\n") in res.stdout + res.stderr
    with pytest.raises(wp.ConfigError, match="given twice"):
        wp.load_plan(bad)


# ----------------------------------------------------------------------------- the planner

def test_one_evaluation_feeds_several_tables(plans):
    # ATSS runs PGD with the official K = 9 (atss_r50_distill_head.py), so its k=9 column is
    # the default run
    plan = plans["mini+ablations"]
    shared = {plan.row("table1", "atss", "pgd", 0).run, plan.row("table5", "atss", "pgw", 0).run,
              plan.row("table6a", "atss", "k=9", 0).run,
              plan.row("table7", "atss", "cls+reg", 0).run}
    assert shared == {"distill/shapes/atss_r18_student/r34_teacher/pgd/default/seed0"}
    # Table 2's teacher row is Table 1's teacher run
    assert plan.row("table2", "atss", "teacher", 0).run == plan.row("table1", "atss",
                                                                    "teacher", 0).run
    assert len(plan.evaluated_runs()) == len(set(r.run for r in plan.rows)) < len(plan.rows)
    # the evaluation's run-info names the run, not a table (so new rows never re-evaluate)
    info = plan.run(next(iter(shared))).run_info()
    assert "table" not in info and info["variant"] == "default" and info["setting"] == "pgd"


def test_teachers_trained_once_with_teacher_seed(plans):
    for plan in plans.values():
        teachers = plan.runs_of("teacher")
        keys = [(t.dataset, t.detector, t.model) for t in teachers]
        assert len(keys) == len(set(keys))
        assert {t.seed for t in teachers} == {plan.config["teacher_seed"]}
    assert len(plans["mini"].runs_of("teacher")) == 3  # ATSS, FCOS, GFL
    assert len(plans["mini+ablations"].runs_of("teacher")) == 4  # + DDOD on crowd  # ATSS, FCOS, GFL + DDOD on crowd


def test_self_distillation_teacher_is_seed0_student(plans):
    plan = plans["mini+ablations"]
    run = plan.run(plan.row("table4", "atss", "pgd", 0).run)
    assert run.teacher == "self"
    assert run.teacher_run == "student/shapes/atss_r18_student/seed0"
    assert run.teacher_config == run.config == "mini/atss_r18_student"


def test_options_are_per_detector_and_only_what_differs_from_the_method_config(plans):
    """The defaults come from config/distill/<method>.py per detector; --loss-options carry
    only the YAML's deliberate overrides and the row's own."""
    plan = plans["mini+ablations"]
    # the paper's protocol: published weights, nothing overridden -> no options at all
    assert plan.run(plan.row("table1", "fcos", "pgd", 0).run).options == ()
    assert plan.method_defaults("pgd", "fcos") == plan.config_defaults("pgd", "fcos")
    tuned = wp.load_plan(SCALES["mini"], [{"method_defaults": {"pgd": {"loss_scale": 0.2}}}])
    fcos = dict(tuned.run(tuned.row("table1", "fcos", "pgd", 0).run).options)
    assert fcos == {"loss_scale": 0.2}
    assert tuned.method_defaults("pgd", "fcos") == {**plan.config_defaults("pgd", "fcos"),
                                                    "loss_scale": 0.2}
    assert plan.method_defaults("pgd", "fcos")["alpha"] == 0.04
    assert plan.method_defaults("pgd", "atss")["alpha"] == 0.08
    assert plan.method_defaults("pgd", "atss")["k"] == 9
    assert plan.method_defaults("pgd", "fcos")["k"] == 30
    sweep = plan.run(plan.row("table6b", "fcos", "alpha=0.005", 0).run)
    assert sweep.variant == "alpha=0.005" and dict(sweep.options)["alpha"] == 0.005
    # a sweep value equal to the detector's default is the Table 1 run, not a new one
    assert (plan.row("table6b", "atss", "alpha=0.08", 0).run
            == plan.row("table1", "atss", "pgd", 0).run)
    neck = plan.run(plan.row("table7", "atss", "neck", 0).run)
    assert neck.variant == "branches=neck" and "branches=[neck]" in neck.loss_options()
    assert plan.run(plan.row("table1", "atss", "fgd", 0).run).options == ()
    assert plan.run(plan.row("table1", "atss", "inherit", 0).run).options == ()


@pytest.mark.parametrize("scale", sorted(SCALES) + ["tuning"])
def test_scale_yamls_hold_only_deliberate_overrides(scale):
    """One home per hyper-parameter: an entry of method_defaults / detector_method_defaults
    equal to what config/distill/<method>.py gives (for every detector it reaches) is a
    second copy, and is refused here."""
    path = SCALES.get(scale, REPO / "config" / f"{scale}.yaml")
    plan = wp.load_plan(path)
    cfg = plan.config
    per_det = cfg.get("detector_method_defaults") or {}
    for det, methods in per_det.items():
        for method, opts in methods.items():
            for key, value in opts.items():
                default = plan.config_defaults(method, det)
                assert key not in default or not wp.same(default[key], value), (
                    f"{path.name}: detector_method_defaults.{det}.{method}.{key}")
    for method, opts in (cfg.get("method_defaults") or {}).items():
        for key, value in opts.items():
            reached = [d for d in wp.DETECTORS
                       if key not in ((per_det.get(d) or {}).get(method) or {})]
            assert any(key not in plan.config_defaults(method, d)
                       or not wp.same(plan.config_defaults(method, d)[key], value)
                       for d in reached), f"{path.name}: method_defaults.{method}.{key}"


def test_table_inputs_include_baseline_for_deltas(plans):
    plan = plans["mini+ablations"]
    rows = plan.table_input_rows("table6a")
    students = [r for r in rows if r.setting == "student"]
    assert {(r.table, r.detector, r.seed) for r in students} == {("table1", "atss", s)
                                                                 for s in (0, 1, 2)}
    assert not [r for r in plan.table_input_rows("table7") if r.table != "table7"]


def test_launcher():
    assert wp.launcher(0, "python") == "python -m pgd"
    assert wp.launcher(1, "python") == "python -m pgd"
    assert wp.launcher(8, "python") == ("python -m torch.distributed.run --standalone "
                                        "--nnodes=1 --nproc_per_node=8 -m pgd")


def test_changed_default_reruns_only_the_runs_it_affects():
    """A new alpha default for FCOS changes the parameters of FCOS PGD runs only."""
    base = wp.load_plan(SCALES["mini"])
    changed = wp.load_plan(SCALES["mini"],
                           [{"detector_method_defaults": {"fcos": {"pgd": {"alpha": 0.05}}}}])
    diff = {rel for rel in base.runs if base.runs[rel] != changed.runs.get(rel)}
    assert diff and all(rel.startswith("distill/shapes/fcos_") and "/pgd/" in rel
                        for rel in diff)
    # alpha=0.05 is now FCOS's default, so no FCOS sweep run has that name any more
    assert set(changed.runs) - set(base.runs) <= {
        "distill/shapes/fcos_r18_student/r34_teacher/pgd/alpha=0.04/seed0"}


def test_guard_workdir(tmp_path):
    wd = tmp_path / "wd"
    assert not wp.guard_workdir(wd, "aaa")
    (wd / "epoch_1.pth").write_text("x")
    (wd / "last_checkpoint").write_text("x")
    assert not wp.guard_workdir(wd, "aaa")  # same parameters: keep (resume)
    assert (wd / "epoch_1.pth").exists()
    assert wp.guard_workdir(wd, "bbb")      # changed parameters: stale checkpoints removed
    assert not (wd / "epoch_1.pth").exists() and not (wd / "last_checkpoint").exists()


def test_config_digest_follows_settings_not_comments(tmp_path):
    """An edited base schedule must change the run fingerprint (so Snakemake retrains);
    an edited comment must not."""
    root = tmp_path / "detectors"
    (root / "_base_").mkdir(parents=True)
    (root / "mini").mkdir()
    base = root / "_base_" / "schedule.py"
    (root / "mini" / "det.py").write_text("_base_ = ['../_base_/schedule.py']\nwidth = 32\n")

    def digest(schedule_text):
        base.write_text(schedule_text)
        wp.config_digest.cache_clear()
        return wp.config_digest("mini/det", root)

    d18 = digest("max_epochs = 18\n")
    assert d18 == digest("# a reworded comment\nmax_epochs = 18\n")
    assert d18 != digest("max_epochs = 48\n")
    assert wp.config_digest(None, root) is None
    # the real configs: teacher and student schedules differ
    wp.config_digest.cache_clear()
    assert (wp.config_digest("mini/fcos_r34_teacher")
            != wp.config_digest("mini/fcos_r18_student"))


# ----------------------------------------------------------------------------- ablation

def test_ablation_fixture_adds_exactly_its_run(plans):
    base = plans["smoke"]
    plan = wp.load_plan(SCALES["smoke"], [FIXTURE])
    assert set(plan.runs) - set(base.runs) == {K45_RUN}
    assert set(base.runs) <= set(plan.runs)
    assert all(plan.runs[r] == base.runs[r] for r in base.runs)  # nothing else re-runs
    assert dict(plan.run(K45_RUN).options)["k"] == 45
    assert plan.row("table6a", "atss", "k=45", 0).run == K45_RUN


def test_ablation_fixture_in_dry_run(tmp_path):
    outputs = dag_outputs(tmp_path, "--configfile", SCALES["smoke"], FIXTURE)
    assert outputs[f"results/smoke/runs/{K45_RUN}/final.pth"] == "distill"
    assert outputs[f"results/smoke/runs/{K45_RUN}/metrics.json"] == "evaluate"
    assert outputs["results/smoke/manifests/table6a.json"] == "row_manifest"
    assert outputs["results/smoke/tables/table6a.md"] == "table"
    # the table6a manifest lists the k=45 row, read from that run's metrics
    from pgd.workflow.manifest import manifest
    rows = manifest(wp.load_plan(SCALES["smoke"], [FIXTURE]), "table6a")["rows"]
    k45 = [r for r in rows if r["setting"] == "k=45"]
    assert k45 and k45[0]["run"] == K45_RUN
    assert k45[0]["metrics"] == f"runs/{K45_RUN}/metrics.json" and k45[0]["options"] == {"k": 45}


def test_ablation_fixture_row_appears_in_table(tmp_path):
    """Fake metrics for the rows the table6a job reads -> the k=45 row is in Table 6a."""
    from pgd.tables.build import build_all
    from pgd.workflow.manifest import manifest, write_manifest
    plan = wp.load_plan(SCALES["smoke"], [FIXTURE])
    for i, row in enumerate(plan.table_input_rows("table6a")):
        src = tmp_path / "runs" / row.run / "metrics.json"
        src.parent.mkdir(parents=True, exist_ok=True)
        ap = 20.0 if row.setting == "student" else 21.0 + i
        src.write_text(json.dumps({
            "metrics": {m: ap for m in ("AP", "AP50", "AP75", "APS", "APM", "APL")},
            "provenance": {"git_commit": "abc", "dataset": {"name": "s", "synthetic": True}},
            "run": {}}))
    paths = [write_manifest(tmp_path / "manifests" / "table6a.json", manifest(plan, "table6a"))]
    written = build_all(paths, tmp_path / "tables", table_ids=["table6a"])
    md = written["table6a"]["md"].read_text()
    k45 = [line for line in md.splitlines() if "| k=45 |" in line]
    assert k45 and "(+" in k45[0]  # measured, with a delta against Table 1's student


@pytest.mark.slow
def test_ablation_reruns_only_affected_jobs(tmp_path):
    """With every smoke output up to date, adding K=45 schedules only its own run and the
    aggregates downstream of it -- no teacher, student or other distillation job."""
    outputs = dag_outputs(tmp_path, "--config", "scale=smoke")
    for path, rule in outputs.items():
        p = tmp_path / path
        if rule == "quality_maps":
            p.mkdir(parents=True, exist_ok=True)
            (p / "x.png").write_bytes(b"")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
    # --touch records every job as done, in DAG order (mtimes and provenance metadata)
    res = snakemake(tmp_path, "--touch", "--cores", "1", "--config", "scale=smoke")
    assert res.returncode == 0, res.stderr[-3000:]
    stats = dry_run(tmp_path, "--configfile", SCALES["smoke"], FIXTURE)
    assert stats == Counter({"distill": 1, "evaluate": 1, "row_manifest": 1, "table": 1,
                             "figures": 1, "claims": 1, "summary": 1, "reproduction": 1,
                             "all": 1})
