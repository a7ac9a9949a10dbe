"""`snakemake --profile <slurm profile>` against a real SLURM: munged + slurmctld + slurmd on
this machine (tests/slurm_cluster.py), one node with 2 CPUs in a `debug` partition.

* ``test_smoke_workflow_on_slurm``: a SMOKE-scale DAG with every cluster rule in it (the
  smoke config cut to Table 1's ATSS PGD row, the LGD table and the analyses) with a profile derived from
  workflow/profiles/slurm (same resources; partition ``debug``, status command ``squeue``
  because there is no accounting database, a short first status check, kept SLURM logs).
  Every training job must have gone through ``sbatch`` (a SLURM job id in the Snakemake log,
  its SLURM log file, and SLURM itself listing the job as COMPLETED) and the tables must exist.
* ``test_killed_training_resumes_from_checkpoint``: a smoke training (3 epochs here) is
  killed after its first epoch checkpoint, as a pre-emption would; the workflow is rerun
  with ``--rerun-incomplete`` and the job must resume from the checkpoint (not restart) and
  produce complete metrics. Runs through SLURM when the local cluster is available, else
  with Snakemake's local executor.

Everything runs in temporary directories (``--directory``), never in the repository.
Skipped with the reason when the cluster cannot be started (not root, no slurm-wlm/munge).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pgd import workflow as wp
from slurm_cluster import LocalSlurm, SlurmUnavailable, skip_reason

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
SMOKE = REPO / "config" / "smoke.yaml"
TRAIN_RULES = ("train_teacher", "train_student", "distill", "distill_teacher_free")
CLUSTER_RULES = TRAIN_RULES + ("make_data", "evaluate", "mask_out", "quality_maps", "pretrain_backbone")
SMOKE_TIMEOUT = 40 * 60  # hard stop; the run itself takes minutes

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- cluster

@pytest.fixture(scope="module")
def slurm_or_reason(tmp_path_factory):
    """(LocalSlurm, None) while the cluster runs, or (None, why it cannot)."""
    reason = skip_reason()
    if reason:
        yield None, reason
        return
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        cluster.stop()
        yield None, f"could not start a local SLURM cluster: {exc}"
        return
    try:
        yield cluster, None
    finally:
        procs = dict(cluster.procs)
        cluster.stop()
        alive = [n for n, p in procs.items() if p.poll() is None]
        assert not alive, f"SLURM daemons still running after stop: {alive}"


@pytest.fixture
def cluster(slurm_or_reason):
    cluster, reason = slurm_or_reason
    if cluster is None:
        pytest.skip(reason)
    return cluster


def derive_profile(dst: Path, cluster: LocalSlurm) -> Path:
    """workflow/profiles/slurm with what this cluster needs: partition, status command."""
    cfg = yaml.safe_load(PROFILE.read_text())
    assert cfg["executor"] == "slurm"
    cfg["default-resources"] = dict(cfg.get("default-resources") or {},
                                    slurm_partition=cluster.partition)
    cfg.update({
        "slurm-status-command": "squeue",          # no slurmdbd: sacct cannot answer
        "slurm-init-seconds-before-status-checks": 5,  # 3 x 5 s <= MinJobAge (3600 s)
        "slurm-keep-successful-logs": True,        # the test reads them
        "latency-wait": 5,                         # local disk
        "retries": 0,                              # a failure must fail the test, fast
        "jobs": 20,                                 # keep the node busy between status checks
    })
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def snakemake_cmd(workdir: Path, *args) -> list:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
            str(workdir), *map(str, args)]


def run_env(cluster: LocalSlurm | None) -> dict:
    env = cluster.env() if cluster is not None else dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # one thread per job: the node has 2 CPUs
    return env


def snakemake_log(workdir: Path) -> str:
    """The newest Snakemake log of ``workdir`` (one per invocation)."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"),
                  key=lambda p: p.stat().st_mtime)
    assert logs, f"no Snakemake log in {workdir}"
    return logs[-1].read_text()


def submitted_jobs(log: str) -> dict:
    """Snakemake job id -> {rule, slurm_id, slurm_log} of every job in a Snakemake log."""
    jobs = {}
    for m in re.finditer(r"^(local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)$", log, re.M):
        jobs[int(m.group(3))] = {"rule": m.group(2), "local": bool(m.group(1)),
                                 "slurm_id": None, "slurm_log": None}
    for m in re.finditer(r"^Job (\d+) has been submitted with SLURM jobid (\d+) "
                         r"\(log: (.*?)\)\.$", log, re.M):
        job = jobs.setdefault(int(m.group(1)), {"rule": None, "local": False})
        job.update(slurm_id=m.group(2), slurm_log=Path(m.group(3)))
    return jobs


def slurm_states(cluster: LocalSlurm) -> dict:
    """SLURM job id -> state of every job SLURM still knows (MinJobAge keeps finished ones)."""
    res = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%T"],
                         env=cluster.env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return dict(line.split("|", 1) for line in res.stdout.split())


# ----------------------------------------------------------------------------- smoke run

def cluster_subset_config(dst: Path) -> Path:
    """The smoke config cut to a DAG that still has every cluster rule once (data, teacher,
    student, distill, teacher-free distill, evaluate, mask-out, quality maps): 22 jobs instead
    of the full smoke DAG's 92 -- the full DAG is covered locally by test_workflow_smoke."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["tables"] = {"table1": dict(cfg["tables"]["table1"], methods={"atss": ["pgd"]}),
                     "lgd": cfg["tables"]["lgd"]}
    cfg["datasets"] = {"shapes": cfg["datasets"]["shapes"]}
    cfg["analyses"].pop("sanity", None)  # a second distill run; sanity_check is a local rule
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


@pytest.mark.slurm
def test_smoke_workflow_on_slurm(cluster, tmp_path):
    profile = derive_profile(tmp_path / "profile", cluster)
    work = tmp_path / "work"
    work.mkdir()
    config = cluster_subset_config(tmp_path / "cluster_subset.yaml")
    plan = wp.load_plan(config)
    assert all(plan.counts()[k] == 1 for k in ("teacher", "student", "distill",
                                               "teacher_free", "mask_out", "quality_maps"))
    started = time.monotonic()
    with open(tmp_path / "snakemake.out", "w") as out:
        res = subprocess.run(snakemake_cmd(work, "--profile", profile, "--configfile",
                                           config),
                             cwd=work, env=run_env(cluster), stdout=out,
                             stderr=subprocess.STDOUT, timeout=SMOKE_TIMEOUT)
    elapsed = time.monotonic() - started
    output = (tmp_path / "snakemake.out").read_text()
    assert res.returncode == 0, (f"snakemake failed after {elapsed:.0f}s:\n{output[-6000:]}"
                                 f"\n{cluster.log_tail()}")

    log = snakemake_log(work)
    jobs = submitted_jobs(log)
    states = slurm_states(cluster)
    counts = plan.counts()
    n_train = counts["teacher"] + counts["student"] + counts["distill"] + \
        counts["teacher_free"]
    training = [j for j in jobs.values() if j["rule"] in TRAIN_RULES]
    assert len(training) == n_train, (len(training), n_train)
    for job in jobs.values():
        if job["rule"] in CLUSTER_RULES:
            # submitted with sbatch, run and finished by SLURM, its SLURM log kept
            assert job["slurm_id"], f"{job['rule']} job did not go through sbatch"
            assert states.get(job["slurm_id"]) == "COMPLETED", (job, states)
            assert job["slurm_log"].is_file(), job
            assert job["slurm_log"].read_text().strip()
        elif job["rule"] is not None:
            assert job["local"] and not job["slurm_id"], job  # tables etc. stay local
    assert len({j["slurm_id"] for j in training}) == n_train

    results = work / "results" / "smoke"
    for table in plan.tables:
        for ext in ("md", "tex", "csv"):
            path = results / "tables" / f"{table}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
    assert (results / "report.md").is_file() and (results / "claims.md").is_file()
    print(f"smoke workflow on SLURM: {len(jobs)} jobs, "
          f"{sum(bool(j['slurm_id']) for j in jobs.values())} via sbatch, {elapsed:.0f}s")


# ----------------------------------------------------------------------------- resilience

STUDENT = "results/smoke/runs/student/shapes/atss_r18_student/seed0"
RESUME_EPOCHS = 3


def training_pids(workdir: Path, work_dir_rel: str) -> list:
    """pids of `python -m pgd train ... --work-dir <work_dir_rel>` running in ``workdir``
    (checked by cwd: other runs of the same target elsewhere are left alone)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if argv[1:4] == ["-m", "pgd", "train"] and work_dir_rel in argv and \
                Path(cwd).resolve() == workdir.resolve():
            pids.append(int(proc.name))
    return pids


def checkpoint_epoch(work_dir: Path) -> int:
    last = (work_dir / "last_checkpoint").read_text().strip()
    return int(re.search(r"epoch_(\d+)\.pth$", last).group(1))


def test_killed_training_resumes_from_checkpoint(slurm_or_reason, tmp_path):
    cluster, why = slurm_or_reason
    work = tmp_path / "work"
    work.mkdir()
    if cluster is not None:
        executor = ["--profile", derive_profile(tmp_path / "profile", cluster)]
    else:  # still the same resume path, with Snakemake's local executor
        print(f"resilience test without SLURM ({why})")
        executor = ["--cores", "2"]
    overrides = ["scale=smoke", "cfg_options={train: [train_cfg.max_epochs=%d], test: []}"
                 % RESUME_EPOCHS]
    target = f"{STUDENT}/metrics.json"
    cmd = snakemake_cmd(work, *executor, "--config", *overrides, "--rerun-incomplete",
                        target)
    run_dir = work / STUDENT
    env = run_env(cluster)

    first_out = open(tmp_path / "first.out", "w")
    first = subprocess.Popen(cmd, cwd=work, env=env, stdout=first_out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    killed, deadline = [], time.monotonic() + 600
    try:
        while time.monotonic() < deadline and first.poll() is None:
            if (run_dir / "epoch_1.pth").is_file() and (run_dir / "last_checkpoint").is_file():
                killed = training_pids(work, STUDENT)
                for pid in killed:  # the training process dies, as on pre-emption
                    os.kill(pid, signal.SIGKILL)
                if killed:
                    break
            time.sleep(0.1)
        assert killed, "training never reached its first checkpoint:\n" + \
            (tmp_path / "first.out").read_text()[-4000:]
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        first_out.close()
    assert first.returncode != 0  # the job failed
    assert not (run_dir / "final.pth").exists(), "training finished before it was killed"
    resume_epoch = checkpoint_epoch(run_dir)
    assert 1 <= resume_epoch < RESUME_EPOCHS

    second = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-6000:]
    train_log = (work / "logs/smoke/student/shapes/atss_r18_student/seed0.log").read_text()
    assert "-- resuming" in train_log, train_log[-3000:]
    assert f"resumed epoch: {resume_epoch}" in train_log, train_log[-3000:]
    # continued after the checkpoint instead of training the finished epochs again
    assert f"Epoch(train) [{resume_epoch + 1}]" in train_log
    assert "Epoch(train) [1][" not in train_log
    import torch
    final = torch.load(run_dir / "final.pth", map_location="cpu", weights_only=True)
    assert final["meta"]["epoch"] == RESUME_EPOCHS
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APS", "APM", "APL"} <= set(metrics["metrics"])
    assert all(isinstance(v, float) for v in metrics["metrics"].values())
    assert metrics["run"]["seed"] == 0 and metrics["provenance"]["dataset"]["synthetic"]
    if cluster is not None:  # the rerun went through sbatch too
        jobs = submitted_jobs(snakemake_log(work))
        train = [j for j in jobs.values() if j["rule"] == "train_student"]
        assert len(train) == 1 and train[0]["slurm_id"], jobs
