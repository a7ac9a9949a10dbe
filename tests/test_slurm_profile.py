"""The `sbatch` call snakemake-executor-plugin-slurm makes for a paper-scale training job.

A dry run with workflow/profiles/slurm (``--config scale=paper``) gives each rule's real
resources; the plugin's own functions build the submission from them (no cluster needed):
``submit_string.get_submit_command`` + ``utils.set_gres_string`` (the order ``Executor.run_job``
uses), the partition/account arguments of ``Executor``, and the ``srun`` flags of the
jobstep plugin that runs the rule inside the allocation. The paper trains on 8 GPUs of one
node, batch 4 per GPU: ``--gpus=8 --nodes=1``, one task that ``torchrun`` splits into 8.
The plugin silently ignores resource names it does not know, so every resource the rules set
must be one the plugin (or Snakemake itself) reads.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from humanfriendly import parse_timespan  # what Snakemake parses `runtime` units with

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
TRAIN_RULES = {"train_teacher": "teacher", "train_student": "student", "distill": "distill"}
# resources Snakemake itself defines for every job (standard resources and their aliases)
SNAKEMAKE_STANDARD = {"tmpdir", "mem", "mem_mb", "mem_mib", "disk", "disk_mb", "disk_mib",
                      "runtime", "_cores", "_nodes"}

slurm_plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
jobstep_plugin = pytest.importorskip("snakemake_executor_plugin_slurm_jobstep")


class _Resources(dict):
    """Attribute + ``get`` access, as snakemake's ``Resources`` offers to the plugin."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class FakeJob(SimpleNamespace):
    """The part of snakemake's job interface the submit functions read."""

    def is_group(self):
        return False


def _value(text: str):
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def parse_dry_run(text: str) -> dict:
    """rule name -> list of (resources dict, shell command) of its jobs in a dry run."""
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if not (m and res):
            continue
        resources = {}
        for item in res.group(1).split(", "):
            key, _, value = item.partition("=")
            if value and "<TBD>" not in value:
                resources[key.strip()] = _value(value)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs.setdefault(m.group(1), []).append((resources, shell.group(1) if shell else ""))
    return jobs


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    """Resources of every job of the paper scale, dry-run with the SLURM profile (+ a GPU
    partition and an account set the way a user would set them)."""
    work = tmp_path_factory.mktemp("slurm_dry_run")
    set_res = [f"{rule}:{key}={value}" for rule in (*TRAIN_RULES, "evaluate")
               for key, value in (("slurm_partition", "gpu"), ("slurm_account", "proj42"))]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(work), "-n", "--profile", str(PROFILE), "--config", "scale=paper",
           "--set-resources", *set_res]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = parse_dry_run(res.stdout + res.stderr)
    assert set(TRAIN_RULES) <= set(jobs), sorted(jobs)
    return jobs


def plugin_resource_names() -> set:
    """Every ``job.resources`` key the two plugins read, from their source code."""
    names = set()
    for mod in (slurm_plugin, jobstep_plugin):
        for path in Path(mod.__file__).parent.glob("*.py"):
            src = path.read_text()
            names |= set(re.findall(r"resources\.get\(\s*[\"'](\w+)[\"']", src))
            names |= set(re.findall(r"resources\.(?!get\b|keys\b|items\b|values\b)(\w+)", src))
            # e.g. `for key in ("gpus", "gpu", "nvidia_gpu"): job.resources.get(key)`
            for tup in re.findall(r"for \w+ in \(([^)]*)\):\s*\n\s*value = job\.resources",
                                  src):
                names |= set(re.findall(r"[\"'](\w+)[\"']", tup))
    return names


def sbatch_call(job) -> str:
    """The sbatch command line ``Executor.run_job`` builds, minus ``--wrap``."""
    from snakemake_executor_plugin_slurm import Executor, ExecutorSettings
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    settings = ExecutorSettings(status_command="squeue")
    executor = SimpleNamespace(_partitions=None, _fallback_partition=None,
                               _fallback_account_arg=None, logger=None)
    params = {
        "run_uuid": "run-uuid",
        "slurm_logfile": "/logs/%j.log",
        "comment_str": f"rule_{job.name}",
        "account": next(Executor.get_account_arg(executor, job)),
        "partition": Executor.get_partition_arg(executor, job),
        "workdir": "/work",
    }
    return get_submit_command(job, params, settings=settings) + set_gres_string(job)


def flags(call: str) -> list:
    return shlex.split(call)


def has(tokens: list, *seq) -> bool:
    n = len(seq)
    return any(tuple(tokens[i:i + n]) == seq for i in range(len(tokens) - n + 1))


@pytest.fixture
def accounts_ok(monkeypatch):
    # the plugin checks the account with `sacctmgr`/`sshare` on the submit host
    monkeypatch.setattr(slurm_plugin, "validate_account", lambda account, logger: account)


@pytest.mark.parametrize("rule", sorted(TRAIN_RULES))
def test_paper_training_job_asks_for_8_gpus_on_one_node(paper_jobs, rule, accounts_ok):
    kind = TRAIN_RULES[rule]
    cfg = PAPER["resources"][kind]
    resources, shell = paper_jobs[rule][0]
    job = FakeJob(name=rule, threads=cfg["threads"], resources=_Resources(resources))
    tokens = flags(sbatch_call(job))
    assert tokens[0] == "sbatch"
    expected_runtime = round(parse_timespan(cfg["runtime"]) / 60)  # "3d" -> 4320 minutes
    assert cfg["gpu"] == 8  # the paper: 8 GPUs x 4 images = batch 32
    assert "--gpus=8" in tokens
    assert "--nodes=1" in tokens, "without --nodes=1 SLURM may spread the 8 GPUs over nodes"
    assert f"--cpus-per-gpu={cfg['cpus_per_gpu']}" in tokens
    assert not any(t.startswith("--cpus-per-task") for t in tokens)
    assert has(tokens, "--mem", str(cfg["mem_mb"]))
    assert has(tokens, "-t", str(expected_runtime))
    assert has(tokens, "-p", "gpu")
    assert has(tokens, "-A", "proj42")
    # one task: torchrun inside it starts one process per GPU
    assert not any(t.startswith(("--ntasks", "--gres")) for t in tokens)
    assert f"--nproc_per_node={cfg['gpu']}" in shell and "torch.distributed.run" in shell


def test_jobstep_gives_the_single_task_all_gpus(paper_jobs):
    """Inside the allocation the jobstep plugin runs the rule with `srun`: one task holding
    every GPU and CPU of the job, so torchrun sees all 8 devices."""
    from snakemake_executor_plugin_slurm_jobstep import (get_cpu_setting, get_gpu_setting,
                                                         get_node_setting)
    resources, _ = paper_jobs["train_teacher"][0]
    job = FakeJob(name="train_teacher", threads=PAPER["resources"]["teacher"]["threads"],
                  resources=_Resources(resources))
    assert get_gpu_setting(job) == "--gpus=8"
    assert get_cpu_setting(job, True) == f"--cpus-per-gpu={resources['cpus_per_gpu']}"
    assert get_node_setting(job) == "--nodes=1"


def test_evaluation_job_asks_for_one_gpu(paper_jobs, accounts_ok):
    resources, shell = paper_jobs["evaluate"][0]
    cfg = PAPER["resources"]["evaluate"]
    job = FakeJob(name="evaluate", threads=cfg["threads"], resources=_Resources(resources))
    tokens = flags(sbatch_call(job))
    assert "--gpus=1" in tokens and "--nodes=1" in tokens and has(tokens, "-p", "gpu")
    assert f"--cpus-per-gpu={cfg['cpus_per_gpu']}" in tokens
    assert "torch.distributed.run" not in shell  # `pgd test` is single-process


def test_every_rule_resource_is_read_by_the_plugin(paper_jobs):
    known = plugin_resource_names() | SNAKEMAKE_STANDARD
    assert {"gpu", "gres", "runtime", "mem_mb", "cpus_per_gpu", "slurm_partition",
            "slurm_account", "nodes"} <= known, sorted(known)
    for rule, jobs in paper_jobs.items():
        for resources, _ in jobs:
            unknown = set(resources) - known
            assert not unknown, f"rule {rule}: resources {sorted(unknown)} are ignored by " \
                                "snakemake-executor-plugin-slurm"


def test_profile_uses_plugin_option_names():
    """Every `slurm-*` key of the profile is an option of the installed plugin."""
    from dataclasses import fields

    from snakemake_executor_plugin_slurm import ExecutorSettings
    options = {"slurm-" + f.name.replace("_", "-") for f in fields(ExecutorSettings)}
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    used = {k for k in profile if k.startswith("slurm-")}
    assert used <= options, sorted(used - options)
    assert profile["default-resources"]["nodes"] == 1
