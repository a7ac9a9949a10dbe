# Aggregation (local rules): paper tables from tagged metrics files only, figures, claim check
# and results/<scale>/report.md. `snakemake --report` collects the report() outputs.


rule table:
    # One job per table id, so a changed ablation rebuilds only its table. Tables 5-7 without
    # their own student row also get Table 1's student rows (their deltas' baseline).
    input:
        lambda w: tagged(PLAN.table_input_rows(w.table)),
    output:
        md=f"{R}/tables/{{table}}.md",
        tex=f"{R}/tables/{{table}}.tex",
        csv=report(f"{R}/tables/{{table}}.csv", caption="../report/table.rst",
                   category="Tables", labels={"table": "{table}"}),
    params:
        py=PYQ,
        out_dir=lambda w, output: os.path.dirname(output.md),
    log:
        f"{LOGS}/tables/{{table}}.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        # metrics before --tables: that option takes a list and would swallow them
        "{params.py} -m pgd tables --out-dir {params.out_dir} {input}"
        " --tables {wildcards.table} > {log} 2>&1"


if PLAN.figure_stems():

    localrules: figures

    rule figures:
        # K curve (Table 6a), alpha curves (Table 6b), Fig. 3 mask-out curves and the Table 1
        # gain bars; mean +- std over seeds, PNG + PDF.
        input:
            metrics=tagged(PLAN.figure_input_rows()),
            mask_out=[f"{R}/analysis/mask_out/{a.stem}.json"
                      for a in PLAN.analyses_of("mask_out")],
        output:
            png=[report(f"{R}/figures/{stem}.png", caption=f"../report/{stem}.rst",
                        category="Figures", labels={"figure": stem})
                 for stem in PLAN.figure_stems()],
            pdf=[f"{R}/figures/{stem}.pdf" for stem in PLAN.figure_stems()],
        params:
            py=PYQ,
            out_dir=lambda w, output: os.path.dirname(output.png[0]),
            mask_out=lambda w, input: ("--mask-out " + " ".join(input.mask_out)
                                       if input.mask_out else ""),
        log:
            f"{LOGS}/figures.log",
        resources:
            mem_mb=res("local", "mem_mb"),
            runtime=res("local", "runtime"),
        conda:
            CONDA_ENV
        shell:
            "{params.py} -m pgd figures --metrics {input.metrics} {params.mask_out}"
            " --out-dir {params.out_dir} > {log} 2>&1"


if PLAN.tuning_tables():

    localrules: tuning_summary

    rule tuning_summary:
        # The loss-scale search (config/tuning.yaml) as one CSV with the chosen scale per method.
        input:
            tagged([r for t in PLAN.tuning_tables() for r in PLAN.rows_of(t)]),
        output:
            report(f"{R}/loss_scales.csv", caption="../report/table.rst", category="Tables",
                   labels={"table": "loss scales"}),
        params:
            py=PYQ,
        log:
            f"{LOGS}/tuning_summary.log",
        resources:
            mem_mb=res("local", "mem_mb"),
            runtime=res("local", "runtime"),
        conda:
            CONDA_ENV
        shell:
            "{params.py} -m pgd tuning-summary --metrics {input} --out {output} > {log} 2>&1"


rule claims:
    # Each quantitative claim of the paper: holds or not, the numbers, the seed spread.
    input:
        metrics=tagged(PLAN.rows),
        mask_out=[f"{R}/analysis/mask_out/{a.stem}.json" for a in PLAN.analyses_of("mask_out")],
    output:
        report(f"{R}/claims.md", caption="../report/claims.rst", category="Claim check"),
    params:
        py=PYQ,
        mask_out=lambda w, input: ("--mask-out " + " ".join(input.mask_out)
                                   if input.mask_out else ""),
    log:
        f"{LOGS}/claims.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd claims --metrics {input.metrics} {params.mask_out} --out {output}"
        " > {log} 2>&1"


rule summary:
    input:
        tables=expand(f"{R}/tables/{{table}}.md", table=PLAN.tables),
        claims=f"{R}/claims.md",
        figures=expand(f"{R}/figures/{{stem}}.png", stem=PLAN.figure_stems()),
    output:
        f"{R}/report.md",
    params:
        py=PYQ,
        scale=SCALE,
        synthetic="--synthetic" if PLAN.synthetic_datasets() else "",
    log:
        f"{LOGS}/summary.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd.workflow_plan summary --out {output} --scale {params.scale}"
        " {params.synthetic} --tables {input.tables} --claims {input.claims}"
        " --figures {input.figures} > {log} 2>&1"


rule reproduction:
    # The run against the committed reference (results/reference/<scale>/, never written by the
    # DAG): every shared table cell, reference vs reproduced, agrees/differs under a seed-noise
    # criterion; says so when this scale has no reference (pgd/reproduce/check.py).
    input:
        metrics=tagged(PLAN.rows),
        reference=reference_metrics(),
    output:
        md=report(f"{R}/reproduction.md", caption="../report/reproduction.rst",
                  category="Reproduction check"),
        json=f"{R}/reproduction.json",
    params:
        py=PYQ,
        results=lambda w, output: os.path.dirname(output.md),
        reference=lambda w: shlex.quote(REFERENCE),
        reference_label=REFERENCE_LABEL,
        scale=SCALE,
        synthetic="--synthetic" if PLAN.synthetic_datasets() else "",
    log:
        f"{LOGS}/reproduction.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd check-reproduction --results {params.results}"
        " --reference {params.reference} --reference-label {params.reference_label}"
        " --scale {params.scale} {params.synthetic} --out {output.md} --json {output.json}"
        " > {log} 2>&1"
