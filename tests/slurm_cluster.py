"""A single-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd from Debian's packages
(`apt-get install -y slurm-wlm munge`), each started in the foreground as a child of this process with its
own configuration, key, socket, state and logs under one directory, so nothing of the system's own SLURM or
munge setup is touched or needed.  Root is required (slurmd launches jobs as their users).

    with local_slurm(Path("/tmp/slurm"), cpus=2, memory_mb=8000) as env:
        subprocess.run(["sbatch", "job.sbatch"], env=env)     # env: os.environ + SLURM_CONF

Run directly (``python tests/slurm_cluster.py DIR``) it keeps a cluster up until Ctrl-C.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
INSTALL = "apt-get install -y slurm-wlm munge"


def missing() -> Optional[str]:
    """Why a local SLURM cannot start here (None when it can)."""
    if os.geteuid() != 0:
        return "a local SLURM needs root (slurmd runs jobs as their users)"
    absent = [d for d in (*DAEMONS, "sbatch", "squeue", "scancel", "mungekey") if shutil.which(d) is None
              and not Path(f"/usr/sbin/{d}").exists()]
    if absent:
        return f"{', '.join(absent)} not installed ({INSTALL})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _config(root: Path, host: str, cpus: int, memory_mb: int, munge_socket: Path) -> str:
    ctl_port, d_port = _free_port(), _free_port()
    return f"""ClusterName=o2otest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _wait(what: str, ok, procs: list, logs: list[Path], timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while not ok():
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead or time.time() > deadline:
            tail = "\n".join(f"--- {l}\n{l.read_text()[-1500:]}" for l in logs if l.exists())
            raise RuntimeError(f"local SLURM: {what} did not come up ({'exited: ' + ', '.join(dead) if dead else f'{timeout_s:g} s'})\n{tail}")
        time.sleep(0.5)


@contextlib.contextmanager
def local_slurm(root: Path, cpus: int = 2, memory_mb: int = 8000) -> Iterator[dict]:
    """Start munged + slurmctld + slurmd under ``root``; yields the environment for SLURM's client commands."""
    root = Path(root)
    for d in ("state", "spool", "munge"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    host = socket.gethostname().split(".")[0]
    key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    subprocess.run([_binary("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True, capture_output=True)
    conf = root / "slurm.conf"
    conf.write_text(_config(root, host, cpus, memory_mb, sock))
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs: list[subprocess.Popen] = []
    logs = [root / "munged.log", root / "slurmctld.log", root / "slurmd.log"]

    def start(cmd: list[str], log: Path) -> None:
        procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log.open("a"),
                                      stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start([_binary("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
               f"--pid-file={root / 'munge' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'seed'}",
               f"--log-file={root / 'munged.log'}"], root / "munged.out")
        _wait("munged", sock.exists, procs, logs)
        start([_binary("slurmctld"), "-D", "-c", "-f", str(conf)], root / "slurmctld.out")
        start([_binary("slurmd"), "-D", "-f", str(conf)], root / "slurmd.out")

        def node_idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

        _wait("slurmctld/slurmd (node idle)", node_idle, procs, logs)
        yield env
    finally:
        for p in reversed(procs):  # slurmd, slurmctld, munged: only the daemons started here
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    reason = missing()
    if reason:
        sys.exit(f"error: {reason}")
    # SIGTERM too (a background `&` job ignores Ctrl-C): leave through the context manager, which stops the daemons
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with local_slurm(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/o2o-slurm")) as e:
        print(f"local SLURM up: export SLURM_CONF={e['SLURM_CONF']}; Ctrl-C or SIGTERM stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
