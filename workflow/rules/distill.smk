# Distillation runs (method x detector x student x teacher x option variant x seed) and
# teacher-free runs (LGD). A run trains with config/distill/<method>.py (its detector's
# defaults); --loss-options carries what differs from it (config `method_defaults` +
# `detector_method_defaults` + the table row's overrides); `<variant>` in the path names the
# options that differ from the scale's defaults. The fingerprint includes the method config,
# so editing config/distill/<method>.py re-runs that method's runs.
# Self-distillation (Table 4, teacher `self`): the teacher is the student baseline of seed
# `self_teacher_seed`, evaluated with the student config (same architecture and schedule).


rule distill:
    input:
        data=lambda w: data_input(run_of("distill", w).dataset),
        teacher=lambda w: ckpt(run_of("distill", w).teacher_run),
        pretrained=pretrained_input("distill"),
    output:
        ckpt=f"{RUNS}/distill/{{run}}/final.pth",
        training_log=f"{RUNS}/distill/{{run}}/training_log.json",
    wildcard_constraints:
        run="[^/]+/[^/]+/[^/]+/[^/]+/[^/]+/seed[0-9]+",
    params:
        **distill_params("distill"),
    log:
        f"{LOGS}/distill/{{run}}.log",
    benchmark:
        f"{BENCH}/distill/{{run}}.tsv"
    threads: res("distill", "threads")
    resources:
        gpu=res("distill", "gpu"),
        cpus_per_gpu=res("distill", "cpus_per_gpu"),
        mem_mb=res("distill", "mem_mb"),
        runtime=res("distill", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd guard-workdir {params.work_dir} {params.fingerprint}"
        " > {log} 2>&1 && "
        "{params.launcher} distill --student {params.student} --teacher {params.teacher}"
        " --teacher-ckpt {input.teacher} --method {params.method} --work-dir {params.work_dir}"
        " --data-root {params.data_root} --seed {params.seed} {params.loss_options}"
        " {params.extra} >> {log} 2>&1 && "
        "{params.py} -m pgd training-log {params.work_dir} --out {output.training_log} >> {log} 2>&1"


rule distill_teacher_free:
    input:
        data=lambda w: data_input(run_of("teacher_free", w).dataset),
        pretrained=pretrained_input("teacher_free"),
    output:
        ckpt=f"{RUNS}/teacher_free/{{run}}/final.pth",
        training_log=f"{RUNS}/teacher_free/{{run}}/training_log.json",
    wildcard_constraints:
        run="[^/]+/[^/]+/[^/]+/[^/]+/seed[0-9]+",
    params:
        **distill_params("teacher_free"),
    log:
        f"{LOGS}/teacher_free/{{run}}.log",
    benchmark:
        f"{BENCH}/teacher_free/{{run}}.tsv"
    threads: res("distill", "threads")
    resources:
        gpu=res("distill", "gpu"),
        cpus_per_gpu=res("distill", "cpus_per_gpu"),
        mem_mb=res("distill", "mem_mb"),
        runtime=res("distill", "runtime"),
    conda:
        CONDA_ENV
    shell:
        "{params.py} -m pgd guard-workdir {params.work_dir} {params.fingerprint}"
        " > {log} 2>&1 && "
        "{params.launcher} distill --student {params.student} --method {params.method}"
        " --work-dir {params.work_dir} --data-root {params.data_root} --seed {params.seed}"
        " {params.loss_options} {params.extra} >> {log} 2>&1 && "
        "{params.py} -m pgd training-log {params.work_dir} --out {output.training_log} >> {log} 2>&1"
