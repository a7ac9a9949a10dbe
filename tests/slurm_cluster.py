"""A throw-away single-node SLURM cluster on loopback, for integration tests.

``LocalSlurm(tmpdir)`` writes ``slurm.conf`` / ``cgroup.conf`` and a fresh munge key under
``tmpdir``, starts ``munged``, ``slurmctld`` and ``slurmd`` in the foreground as children of
the test (root), waits until ``sinfo`` shows the node idle, and stops the three daemons again
(SIGTERM, then SIGKILL, by pid). Nothing is written outside ``tmpdir``: the daemons get every
path (state, spool, pid and log files, munge socket and key) from the generated files.

* one node, named after this host, ``CPUs`` = min(2, what ``slurmd -C`` reports), in a
  ``debug`` partition that is the default;
* no cgroups (``proctrack/linuxproc``, ``task/none``), no accounting database: ``sacct``
  cannot answer, so clients must use ``squeue`` for job states; ``MinJobAge=3600`` keeps
  finished jobs visible to ``squeue`` for an hour (longer than a smoke run, so the test can
  still see every job's final state at the end);
* ``ReturnToService=2``: the node comes back by itself after a restart.

Client commands find the cluster through ``env()`` (``SLURM_CONF`` + ``PATH``). ``bin/`` in
front of ``PATH`` holds an ``srun`` wrapper that re-exports ``SLURM_CONF``: inside a job,
snakemake-executor-plugin-slurm-jobstep strips every ``SLURM_*`` variable (``SLURM_CONF``
included) before calling ``srun``, which would then look for /etc/slurm/slurm.conf.

``skip_reason()`` says why no cluster can be started here (not root, binaries missing), and
``LocalSlurm.start`` raises ``SlurmUnavailable`` with the daemon logs' tail when a daemon
dies or the node never becomes idle; tests turn both into ``pytest.skip``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'squeue', 'sinfo', 'srun', 'scontrol', 'scancel')
SBIN_DIRS = ('/usr/sbin', '/usr/local/sbin', '/sbin')


class SlurmUnavailable(RuntimeError):
    """The local cluster could not be started (message: why, with log excerpts)."""


def _which(name: str) -> Optional[str]:
    path = os.environ.get('PATH', '') + os.pathsep + os.pathsep.join(SBIN_DIRS)
    return shutil.which(name, path=path)


def skip_reason() -> Optional[str]:
    """Why a local SLURM cluster cannot be started on this machine, or None."""
    if not hasattr(os, 'geteuid') or os.geteuid() != 0:
        return ('local SLURM test cluster needs root (munged, slurmctld and slurmd run as '
                'root on loopback); run the suite as root, e.g. via .ci/run')
    missing = [n for n in DAEMONS + CLIENTS if _which(n) is None]
    if missing:
        return (f"SLURM/munge binaries not found: {', '.join(missing)} "
                "(install the Debian packages: apt-get install slurm-wlm munge)")
    return None


def _free_ports(n: int) -> List[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(('127.0.0.1', 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def detected_hardware() -> Dict[str, int]:
    """``slurmd -C``'s CPUs and RealMemory (MB) of this machine."""
    out = subprocess.run([_which('slurmd') or 'slurmd', '-C'], capture_output=True,
                         text=True, timeout=60).stdout
    hw = {}
    for token in out.split():
        key, _, value = token.partition('=')
        if key in ('CPUs', 'RealMemory') and value.isdigit():
            hw[key] = int(value)
    return hw


class LocalSlurm:
    """Context manager: a running one-node cluster (see the module docstring)."""

    def __init__(self, root, cpus: int = 2, partition: str = 'debug', min_job_age: int = 3600,
                 start_timeout: float = 90.0):
        self.root = Path(root).resolve()
        self.partition = partition
        self.min_job_age = min_job_age
        self.start_timeout = start_timeout
        self.node = socket.gethostname().split('.')[0]
        hw = detected_hardware()
        self.cpus = max(1, min(cpus, hw.get('CPUs', cpus)))
        # leave some memory to the OS; jobs must fit (--mem is checked against RealMemory)
        self.memory_mb = max(1000, int(hw.get('RealMemory', 4000) * 0.9))
        self.conf = self.root / 'etc' / 'slurm.conf'
        self.log_dir = self.root / 'log'
        self.bin_dir = self.root / 'bin'
        self.munge_socket = self.root / 'munge' / 'munge.socket.2'
        self.procs: Dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ configuration
    def write_config(self) -> None:
        for sub in ('etc', 'log', 'state', 'spool', 'munge', 'run', 'bin'):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / 'munge', 0o755)  # clients need to reach the socket
        key = self.root / 'munge' / 'munge.key'
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        ctld_port, slurmd_port = _free_ports(2)
        r = self.root
        self.conf.write_text(f"""\
# generated by tests/slurm_cluster.py -- single node on loopback, no cgroups, no accounting
ClusterName=pgdtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={self.log_dir}/slurmctld.log
SlurmdLogFile={self.log_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge={self.min_job_age}
KillWait=5
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=120
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        # Read only if a cgroup plugin were configured; written so no system file is consulted.
        (self.root / 'etc' / 'cgroup.conf').write_text(
            'ConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n')
        srun = self.bin_dir / 'srun'
        srun.write_text(f'#!/bin/sh\n# see tests/slurm_cluster.py\nSLURM_CONF={self.conf}\n'
                        f'export SLURM_CONF\nexec {_which("srun")} "$@"\n')
        srun.chmod(0o755)

    def env(self, base: Optional[dict] = None) -> dict:
        """Environment for client commands (sbatch, squeue, snakemake --executor slurm)."""
        env = dict(os.environ if base is None else base)
        env['SLURM_CONF'] = str(self.conf)
        env['PATH'] = os.pathsep.join([str(self.bin_dir), env.get('PATH', '')]
                                      + list(SBIN_DIRS))
        for var in list(env):  # never inherit a surrounding job's context
            if var.startswith(('SLURM_JOB', 'SLURM_STEP', 'SBATCH_', 'SRUN_')):
                env.pop(var)
        return env

    # ------------------------------------------------------------------ daemons
    def _spawn(self, name: str, argv: List[str]) -> None:
        log = open(self.log_dir / f'{name}.stdout', 'ab')
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env(),
                                            cwd=self.root, start_new_session=True)
        log.close()

    def start(self) -> 'LocalSlurm':
        self.write_config()
        r = self.root
        self._spawn('munged', [_which('munged'), '--foreground', '--force',
                               f'--socket={self.munge_socket}',
                               f'--key-file={r}/munge/munge.key',
                               f'--pid-file={r}/run/munged.pid',
                               f'--log-file={self.log_dir}/munged.log',
                               f'--seed-file={r}/munge/munged.seed'])
        self._wait(lambda: self.munge_socket.exists(), 'munged socket', 20)
        self._spawn('slurmctld', [_which('slurmctld'), '-D', '-c', '-i', '-f', str(self.conf)])
        self._wait(lambda: self._client_ok(['sinfo', '-h']), 'slurmctld answering', 40)
        self._spawn('slurmd', [_which('slurmd'), '-D', '-f', str(self.conf),
                               '-N', self.node])
        self._wait(self._node_idle, f'node {self.node} idle', self.start_timeout)
        return self

    def _client_ok(self, argv: List[str]) -> bool:
        try:
            return subprocess.run(argv, env=self.env(), capture_output=True,
                                  timeout=15).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def node_state(self) -> str:
        try:
            res = subprocess.run(['sinfo', '-h', '-N', '-o', '%T'], env=self.env(),
                                 capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return ''
        return res.stdout.strip()

    def active_jobs(self) -> List[str]:
        """Ids of jobs that are pending, running or completing."""
        res = subprocess.run(['squeue', '-h', '-o', '%i', '-t', 'PD,R,CG,CF,S'],
                             env=self.env(), capture_output=True, text=True, timeout=15)
        return res.stdout.split()

    def _node_idle(self) -> bool:
        return self.node_state().rstrip('*') == 'idle'

    def _wait(self, ok, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise SlurmUnavailable(f'{", ".join(dead)} exited while waiting for {what}'
                                       f'\n{self.log_tail()}')
            if ok():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f'timed out after {timeout:.0f}s waiting for {what} '
                               f'(node state: {self.node_state()!r})\n{self.log_tail()}')

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.log_dir.glob('*')):
            text = path.read_text(errors='replace').splitlines()[-lines:]
            if text:
                parts.append(f'--- {path.name}\n' + '\n'.join(text))
        return '\n'.join(parts)

    def stop(self) -> None:
        """Cancel what is left in the queue, then stop slurmd, slurmctld and munged."""
        if 'slurmctld' in self.procs and self.procs['slurmctld'].poll() is None:
            try:
                subprocess.run(['scancel', '--user', 'root'], env=self.env(),
                               capture_output=True, timeout=30)
                deadline = time.monotonic() + 30  # let slurmstepd end the job steps
                while time.monotonic() < deadline and self.active_jobs():
                    time.sleep(1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in ('slurmd', 'slurmctld', 'munged'):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> 'LocalSlurm':
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
