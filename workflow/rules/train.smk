# Teachers (once per dataset x detector x model, seed `teacher_seed`) and student baselines
# (once per dataset x detector x model x seed). Output: results/<scale>/runs/<kind>/.../final.pth
# `pgd train` resumes from the work dir's last checkpoint; `guard-workdir` first drops
# checkpoints left by a run with different parameters (see pgd/workflow/rules.py).


rule train_teacher:
    input:
        data=lambda w: data_input(run_of("teacher", w).dataset),
        pretrained=pretrained_input("teacher"),
    output:
        ckpt=f"{RUNS}/teacher/{{run}}/final.pth",
        training_log=f"{RUNS}/teacher/{{run}}/training_log.json",
    wildcard_constraints:
        run="[^/]+/[^/]+/seed[0-9]+",
    params:
        **train_params("teacher"),
    log:
        f"{LOGS}/teacher/{{run}}.log",
    benchmark:
        f"{BENCH}/teacher/{{run}}.tsv"
    threads: res("teacher", "threads")
    resources:
        gpu=res("teacher", "gpu"),
        cpus_per_gpu=res("teacher", "cpus_per_gpu"),
        mem_mb=res("teacher", "mem_mb"),
        runtime=res("teacher", "runtime"),
    conda:
        CONDA_ENV
    shell:
        TRAIN_SHELL


rule train_student:
    input:
        data=lambda w: data_input(run_of("student", w).dataset),
        pretrained=pretrained_input("student"),
    output:
        ckpt=f"{RUNS}/student/{{run}}/final.pth",
        training_log=f"{RUNS}/student/{{run}}/training_log.json",
    wildcard_constraints:
        run="[^/]+/[^/]+/seed[0-9]+",
    params:
        **train_params("student"),
    log:
        f"{LOGS}/student/{{run}}.log",
    benchmark:
        f"{BENCH}/student/{{run}}.tsv"
    threads: res("student", "threads")
    resources:
        gpu=res("student", "gpu"),
        cpus_per_gpu=res("student", "cpus_per_gpu"),
        mem_mb=res("student", "mem_mb"),
        runtime=res("student", "runtime"),
    conda:
        CONDA_ENV
    shell:
        TRAIN_SHELL
