# Premise gates (`pgd regime`, pgd/analysis/regime.py): can this scale test the paper at all?
# Fig. 3 (masking each Table 1 teacher's top-1 % predictions must cut its AP by >= 40 %), trained
# students (student/teacher AP ratio in [0.70, 0.92], gap >= 3 AP, a plateaued learning curve)
# and a geometry that gives PGW's top-K something to select (locations per GT box on the train
# set), and the zero-weight sanity check (`pgd sanity-check`: the distiller with every loss
# weight 0 trains the plain student bit for bit). Output results/<scale>/regime.json (+ regime.md); the claim check and report.md print
# it first, and a claim whose table fails a gate is "regime invalid".


rule geometry:
    input:
        data=lambda w: data_input(w.dataset),
    output:
        f"{R}/analysis/geometry/{{dataset}}.json",
    wildcard_constraints:
        dataset=_alternatives(_geometry_subjects()),
    params:
        py=PYQ,
        config=lambda w: _geometry_subjects()[w.dataset],
        ann=lambda w: shlex.quote(_geometry_ann(w.dataset)),
        size=lambda w: image_size_args(_geometry_subjects()[w.dataset], w.dataset),
    log:
        f"{LOGS}/analysis/geometry/{{dataset}}.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd geometry {params.config} --ann {params.ann} --json {output}"
        " {params.size} > {log} 2>&1"


rule sanity_check:
    input:
        student=lambda w: ckpt(analysis_of("sanity", w).baseline),
        zero=lambda w: ckpt(analysis_of("sanity", w).run),
    output:
        f"{R}/analysis/sanity/{{stem}}.json",
    params:
        py=PYQ,
    log:
        f"{LOGS}/analysis/sanity/{{stem}}.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd sanity-check --student {input.student} --zero {input.zero}"
        " --out {output} > {log} 2>&1"


rule regime:
    input:
        rows=manifests([t for t in PLAN.tables if t == "table1"]),
        metrics=manifest_metrics([t for t in PLAN.tables if t == "table1"]),
        mask_out=[f"{R}/analysis/mask_out/{a.stem}.json" for a in PLAN.analyses_of("mask_out")],
        geometry=[f"{R}/analysis/geometry/{d}.json" for d in _geometry_subjects()],
        curves=[f"{RUNS}/{run.rel}/training_log.json" for run in _table1_students()],
        sanity=[f"{R}/analysis/sanity/{a.stem}.json" for a in PLAN.analyses_of("sanity")],
    output:
        json=f"{R}/regime.json",
        md=f"{R}/regime.md",
    params:
        py=PYQ,
    log:
        f"{LOGS}/regime.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd regime --rows {input.rows} --mask-out {input.mask_out}"
        " --geometry {input.geometry} --training-log {input.curves} --sanity {input.sanity}"
        " --out {output.json} --md {output.md} > {log} 2>&1"
