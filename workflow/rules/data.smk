# Datasets: synthetic ones are generated (`pgd make-data`, output DIR/meta.json); held-out
# splits of their train images are cut by `pgd split-holdout` (same marker); external ones
# (COCO, CrowdHuman at paper scale) are only checked, writing a stamp file. Every split is
# checked by `pgd check-data` (pgd/data/check.py), the check `pgd train/test` repeat.


rule make_data:
    output:
        f"{config['data_dir']}/{SCALE}/{{dataset}}/meta.json",
    wildcard_constraints:
        dataset=_alternatives(PLAN.synthetic_datasets()),
    params:
        py=PYQ,
        out=lambda w, output: os.path.dirname(output[0]),
        kind=lambda w: config["datasets"][w.dataset]["kind"],
        num_train=lambda w: config["datasets"][w.dataset]["num_train"],
        num_val=lambda w: config["datasets"][w.dataset]["num_val"],
        image_size=lambda w: config["datasets"][w.dataset]["image_size"],
        seed=lambda w: config["datasets"][w.dataset]["seed"],
        difficulty=lambda w: (
            "--difficulty " + " ".join(shlex.quote(f"{k}={v}") for k, v in
                                       config["datasets"][w.dataset]["difficulty"].items())
            if config["datasets"][w.dataset]["difficulty"] else ""),
    log:
        f"{LOGS}/data/{{dataset}}.log",
    threads: res("data", "threads")
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=res("data", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd make-data --kind {params.kind} --out {params.out}"
        " --num-train {params.num_train} --num-val {params.num_val}"
        " --image-size {params.image_size} --seed {params.seed} {params.difficulty}"
        " > {log} 2>&1"
        " && {params.py} -m pgd check-data --dataset-dir {params.out} >> {log} 2>&1"


rule split_holdout:
    input:
        lambda w: PLAN.data_marker(config["datasets"][w.dataset]["of"]),
    output:
        f"{config['data_dir']}/{SCALE}/{{dataset}}/meta.json",
    wildcard_constraints:
        dataset=_alternatives(PLAN.holdout_datasets()),
    params:
        py=PYQ,
        src=lambda w, input: os.path.dirname(input[0]),
        out=lambda w, output: os.path.dirname(output[0]),
        fraction=lambda w: config["datasets"][w.dataset]["fraction"],
        seed=lambda w: config["datasets"][w.dataset]["seed"],
    log:
        f"{LOGS}/data/{{dataset}}.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd split-holdout --src {params.src} --out {params.out}"
        " --fraction {params.fraction} --seed {params.seed} > {log} 2>&1"
        " && {params.py} -m pgd check-data --dataset-dir {params.out} >> {log} 2>&1"


rule check_data:
    output:
        f"{R}/data/{{dataset}}.ok",
    wildcard_constraints:
        dataset=_alternatives(PLAN.external_datasets()),
    params:
        py=PYQ,
        root=lambda w: shlex.quote(PLAN.data_root(w.dataset)),
        require=lambda w: " ".join(shlex.quote(p) for p in
                                   config["datasets"][w.dataset]["require"]),
    log:
        f"{LOGS}/data/{{dataset}}.log",
    resources:
        mem_mb=res("local", "mem_mb"),
        runtime=res("local", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd check-external-data --root {params.root}"
        " --require {params.require} --out {output} > {log} 2>&1"
