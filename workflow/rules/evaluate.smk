# Evaluation (once per run, `pgd test` -> <run dir>/metrics.json) and the teacher analyses
# behind Fig. 2 and Fig. 3. Which run is which table row is not copied here: the planner lists
# it in one row manifest per table (rule row_manifest, tables.smk).


rule evaluate:
    input:
        ckpt=f"{RUNS}/{{kind}}/{{run}}/final.pth",
        data=lambda w: data_input(eval_run(w).dataset),
    output:
        f"{RUNS}/{{kind}}/{{run}}/metrics.json",
    wildcard_constraints:
        kind=RUN_KINDS,
        run="[^/]+(/[^/]+)*/seed[0-9]+",
    params:
        launcher=launcher(min(1, res("evaluate", "gpu"))),  # pgd test is single-process
        config=lambda w: eval_run(w).config,
        data_root=lambda w: shlex.quote(PLAN.data_root(eval_run(w).dataset)),
        crowd=lambda w: "--crowd" if PLAN.crowd(eval_run(w).dataset) else "",
        seed=lambda w: eval_run(w).seed,
        # identifies the run (and its options), not a table row (the manifests list the rows)
        run_info=lambda w: run_info_args(eval_run(w).run_info()),
        # recorded, so `pgd estimate` can tell a benchmark of these settings from an older one
        fingerprint=lambda w: PLAN.fingerprint(eval_run(w)),
        extra=lambda w: joined(cfg_options("test"), device_args(),
                               image_size_args(eval_run(w).config, eval_run(w).dataset)),
    log:
        f"{LOGS}/evaluate/{{kind}}/{{run}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{kind}}/{{run}}.tsv"
    threads: res("evaluate", "threads")
    resources:
        gpu=res("evaluate", "gpu"),
        cpus_per_gpu=res("evaluate", "cpus_per_gpu"),
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.launcher} test {params.config} {input.ckpt} --out {output}"
        " --data-root {params.data_root} --seed {params.seed} {params.crowd}"
        " --run-info {params.run_info} --fingerprint {params.fingerprint} {params.extra}"
        " > {log} 2>&1"


rule mask_out:
    # Fig. 3 pilot: AP of a trained teacher when the top-X% quality locations are masked out.
    input:
        ckpt=lambda w: ckpt(analysis_of("mask_out", w).run),
        data=lambda w: data_input(analysis_of("mask_out", w).dataset),
    output:
        f"{R}/analysis/mask_out/{{stem}}.json",
    wildcard_constraints:
        stem="[^/]+/[^/]+",
    params:
        launcher=launcher(min(1, res("analysis", "gpu"))),
        config=lambda w: analysis_of("mask_out", w).config,
        size=lambda w: image_size_args(analysis_of("mask_out", w).config,
                                       analysis_of("mask_out", w).dataset),
        data_root=lambda w: shlex.quote(PLAN.data_root(analysis_of("mask_out", w).dataset)),
        ratios=lambda w: ",".join(f"{float(x):g}"
                                  for x in analysis_of("mask_out", w).ratios),
    log:
        f"{LOGS}/analysis/mask_out/{{stem}}.log",
    benchmark:
        f"{BENCH}/analysis/mask_out/{{stem}}.tsv"
    threads: res("analysis", "threads")
    resources:
        gpu=res("analysis", "gpu"),
        cpus_per_gpu=res("analysis", "cpus_per_gpu"),
        mem_mb=res("analysis", "mem_mb"),
        runtime=res("analysis", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.launcher} mask-out --config {params.config} --checkpoint {input.ckpt}"
        " --data-root {params.data_root} --ratios {params.ratios} --out {output} {params.size}"
        " > {log} 2>&1"


rule quality_maps:
    # Fig. 2: prediction-quality heat-maps of a trained teacher (PNG + PDF per image).
    input:
        ckpt=lambda w: ckpt(analysis_of("quality_maps", w).run),
        data=lambda w: data_input(analysis_of("quality_maps", w).dataset),
    output:
        report(directory(f"{R}/figures/fig2_quality/{{stem}}"), patterns=["{name}.png"],
               caption="../report/fig2_quality.rst", category="Figures",
               subcategory="Fig. 2 quality maps", labels={"teacher": "{stem}"}),
    wildcard_constraints:
        stem="[^/]+/[^/]+",
    params:
        launcher=launcher(min(1, res("analysis", "gpu"))),
        config=lambda w: analysis_of("quality_maps", w).config,
        size=lambda w: image_size_args(analysis_of("quality_maps", w).config,
                                       analysis_of("quality_maps", w).dataset),
        data_root=lambda w: shlex.quote(
            PLAN.data_root(analysis_of("quality_maps", w).dataset)),
    log:
        f"{LOGS}/analysis/quality_maps/{{stem}}.log",
    benchmark:
        f"{BENCH}/analysis/quality_maps/{{stem}}.tsv"
    threads: res("analysis", "threads")
    resources:
        gpu=res("analysis", "gpu"),
        cpus_per_gpu=res("analysis", "cpus_per_gpu"),
        mem_mb=res("analysis", "mem_mb"),
        runtime=res("analysis", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.launcher} analyse-quality --config {params.config} --checkpoint {input.ckpt}"
        " --data-root {params.data_root} --out-dir {output} {params.size} > {log} 2>&1"
