# Aggregation (local rules): one row manifest per table (which run's metrics.json is which
# row), paper tables, figures, claim check and results/<scale>/report.md. The readers take the
# manifests (`--rows`); the run metrics they list are inputs too, so Snakemake evaluates every
# run first. `snakemake --report` collects the report() outputs.


rule row_manifest:
    # results/<scale>/manifests/<table>.json (format: pgd/workflow/manifest.py). A `run:` block
    # calling the planner, not a `python -m pgd manifest` shell line: the rows come from the
    # config exactly as Snakemake merged it (several --configfile, --config overrides), which a
    # subprocess could not rebuild from files alone. The params are the manifest itself, so a
    # changed row (other runs, other options) rewrites it (rerun trigger `params`); the run
    # metrics it lists are inputs too, so a new or re-evaluated run rewrites it even where
    # Snakemake has no params record (`--touch`, a copied results tree). Tables 5-7 without
    # their own student row also list Table 1's student rows (their deltas' baseline), with
    # table "table1".
    input:
        lambda w: manifest_metrics([w.table]),
    output:
        f"{MANIFESTS}/{{table}}.json",
    params:
        manifest=lambda w: wm.manifest_json(PLAN, w.table),
    log:
        f"{LOGS}/manifests/{{table}}.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    run:
        wm.write_manifest(output[0], params.manifest, log=log[0])


rule table:
    # One job per table id, so a changed ablation rebuilds only its table.
    input:
        rows=lambda w: manifests([w.table]),
        metrics=lambda w: manifest_metrics([w.table]),
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
        "{params.py} -m pgd tables --rows {input.rows} --out-dir {params.out_dir}"
        " --tables {wildcards.table} > {log} 2>&1"


if PLAN.figure_stems():

    localrules: figures

    rule figures:
        # K curve (Table 6a), alpha curves (Table 6b), Fig. 3 mask-out curves and the Table 1
        # gain bars; mean +- std over seeds, PNG + PDF.
        input:
            rows=manifests(PLAN.figure_tables()),
            metrics=manifest_metrics(PLAN.figure_tables()),
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
            "{params.py} -m pgd figures --rows {input.rows} {params.mask_out}"
            " --out-dir {params.out_dir} > {log} 2>&1"


if PLAN.tuning_tables():

    localrules: tuning_summary

    rule tuning_summary:
        # The loss-scale search (config/tuning.yaml) as one CSV with the chosen scale per method.
        input:
            rows=manifests(PLAN.tuning_tables()),
            metrics=manifest_metrics(PLAN.tuning_tables()),
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
            "{params.py} -m pgd tuning-summary --rows {input.rows} --out {output} > {log} 2>&1"


rule claims:
    # Each quantitative claim of the paper: holds or not, the numbers, the seed spread.
    input:
        rows=manifests(PLAN.tables),
        metrics=manifest_metrics(PLAN.tables),
        mask_out=[f"{R}/analysis/mask_out/{a.stem}.json" for a in PLAN.analyses_of("mask_out")],
        regime=f"{R}/regime.json",
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
        "{params.py} -m pgd claims --rows {input.rows} {params.mask_out}"
        " --regime {input.regime} --out {output} > {log} 2>&1"


rule summary:
    input:
        tables=expand(f"{R}/tables/{{table}}.md", table=PLAN.tables),
        claims=f"{R}/claims.md",
        regime=f"{R}/regime.md",
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
        "{params.py} -m pgd summary --out {output} --scale {params.scale}"
        " {params.synthetic} --regime {input.regime} --tables {input.tables}"
        " --claims {input.claims}"
        " --figures {input.figures} > {log} 2>&1"


rule reproduction:
    # The run against the committed reference (results/reference/<scale>/, never written by the
    # DAG): every shared table cell, reference vs reproduced, agrees/differs under a seed-noise
    # criterion; says so when this scale has no reference (pgd/reproduce/check.py).
    # It reads both sides' manifests (<results>/manifests/, <reference>/manifests/).
    input:
        rows=manifests(PLAN.tables),
        metrics=manifest_metrics(PLAN.tables),
        reference=reference_inputs(),
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
