# PGD (ECCV'22) reproduction: one DAG from data to the paper's Tables 1-7, figures, claim check.
#
#   snakemake --cores all                          # mini scale (config/config.yaml), CPU
#   snakemake --cores all --config scale=smoke     # every rule once, minutes
#   snakemake --profile slurm --config scale=paper # COCO / CrowdHuman (./slurm links to
#                                                  # workflow/profiles/slurm)
#   snakemake --report results/<scale>/report.html # HTML report (tables, figures, captions)
#
# --config scale=<name> loads config/<name>.yaml (mini: config/config.yaml); --configfile F
# replaces it (several files are deep-merged, e.g. an ablation overlay on top of a scale).
# Job order: make data -> train teachers -> train students -> distill (method x detector x
# seed) and ablations -> evaluate (once per run) -> one row manifest per table -> tables ->
# figures -> claim check -> results/<scale>/report.md -> reproduction check against the
# committed reference results/reference/<scale>/ (results/<scale>/reproduction.md).
# Rules: workflow/rules/*.smk; planning (which runs each table needs, shared runs):
# pgd/workflow/ (plan.py). The DAG never writes results/reference/ (`python -m pgd
# publish-reference --scale <scale>` does); `python -m pgd estimate` prints the cost first.
import os

SCALE_FILES = {"mini": "config/config.yaml", "smoke": "config/smoke.yaml",
               "paper": "config/paper.yaml"}

if not workflow.config_settings.configfiles:
    _scale = str(config.get("scale", "mini"))
    _file = os.path.join(workflow.basedir, SCALE_FILES.get(_scale, f"config/{_scale}.yaml"))
    if not os.path.isfile(_file):
        raise ValueError(f"config error: scale: no config file {os.path.relpath(_file, workflow.basedir)} "
                         f"for scale {_scale!r} (known: {', '.join(SCALE_FILES)})")
    configfile: _file


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/regime.smk"
include: "workflow/rules/tables.smk"


localrules: all, check_data, split_holdout, row_manifest, table, claims, summary, reproduction,
    geometry, regime, sanity_check


rule all:
    default_target: True
    input:
        f"{R}/report.md",
        f"{R}/claims.md",
        f"{R}/regime.json",
        f"{R}/reproduction.md",
        [f"{RUNS}/{rel}/training_log.json" for rel in PLAN.runs],
        expand(f"{R}/tables/{{table}}.{{ext}}", table=PLAN.tables, ext=["md", "tex", "csv"]),
        expand(f"{R}/figures/{{stem}}.{{ext}}", stem=PLAN.figure_stems(), ext=["png", "pdf"]),
        [f"{R}/figures/fig2_quality/{a.stem}" for a in PLAN.analyses_of("quality_maps")],
        [f"{R}/loss_scales.csv"] if PLAN.tuning_tables() else [],
