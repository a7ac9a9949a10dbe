# Synthetic pretraining, the mini scale's ImageNet stand-in: one backbone per size
# (mini_r18 | mini_r34 | mini_mbv2, files of config/detectors/_base_/sizes/), trained by
# `pgd pretrain-backbone` on SYNTHETIC object crops -> shape class, from scenes that are never
# detection images (pgd/pretrain/data.py). Output: results/<scale>/pretrain/<size>/backbone.pth
# (the backbone's own parameter names; a detector loads it with
# backbone.init_cfg=dict(type='Pretrained', checkpoint=...)) and pretrain.json (val accuracy, time,
# provenance). Settings: config `pretrain` (num_train, num_val, epochs, seed, and `dataset`,
# whose image_size and difficulty the pretraining images share); resources: `resources.pretrain`.
# The command writes both outputs only after training succeeded and never resumes, so a failed
# job leaves nothing for Snakemake to trust.


rule pretrain_backbone:
    output:
        ckpt=f"{R}/pretrain/{{size}}/backbone.pth",
        report=f"{R}/pretrain/{{size}}/pretrain.json",
    wildcard_constraints:
        size=_alternatives(PRETRAIN_SIZES),
    params:
        py=PYQ,
        out=lambda w, output: os.path.dirname(output.ckpt),
        num_train=_pretrain_setting("num_train"),
        num_val=_pretrain_setting("num_val"),
        epochs=_pretrain_setting("epochs"),
        seed=_pretrain_setting("seed"),
        image_size=lambda w: _pretrain_dataset("image_size"),
        difficulty=_pretrain_difficulty,
        extra=device_args(),
    log:
        f"{LOGS}/pretrain/{{size}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{size}}.tsv"
    threads: res("pretrain", "threads")
    resources:
        gpu=res("pretrain", "gpu"),
        cpus_per_gpu=res("pretrain", "cpus_per_gpu"),
        mem_mb=res("pretrain", "mem_mb"),
        runtime=res("pretrain", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd pretrain-backbone --size {wildcards.size} --out {params.out}"
        " --num-train {params.num_train} --num-val {params.num_val} --epochs {params.epochs}"
        " --image-size {params.image_size} --seed {params.seed} {params.difficulty}"
        " {params.extra} > {log} 2>&1"
