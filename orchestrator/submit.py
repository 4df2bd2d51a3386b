"""Running a grid on a Ray cluster: Ray Job submission to a running cluster, or a SLURM batch script.

**Job submission** (``submit SPEC --address http://HEAD:8265``).  The cluster must be running with its
dashboard reachable (``ray start --head --dashboard-host 0.0.0.0`` on the head, ``ray start --address
HEAD:6379`` on the others).  The working directory is shipped as the job's ``runtime_env`` working dir
(without ``.venv``, ``.git``, ``runs``, ... see :data:`EXCLUDES`), so the spec and the checkpoints it names
must lie inside it; ``--pip`` adds packages to the job's environment (otherwise the nodes' Python must
already have the project's dependencies).  The job runs ``python -m orchestrator grid SPEC --storage DIR
--resume`` on the head node: submitting again after an interruption continues the same grid.  ``DIR``
must be a path every node can reach (NFS; Ray stopped syncing results to the head node in 2.7): a relative
storage would end up in the job's temporary working directory, so it is refused.  ``python`` in the
entrypoint is the head node's: start Ray from the project's environment (or pass ``--pip``).

Ray 2.59+ enables token authentication on clusters started where a token exists (and on ``ray.init``
clusters); the dashboard then refuses requests without it.  The token is read from ``--token-file``,
else ``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (what
``ray get-auth-token`` prints on the head), and sent as ``Authorization: Bearer``.  On the cluster side
the job's driver inherits the head node's authentication settings.

**SLURM** (``submit SPEC --slurm grid.sbatch [--nodes N --cpus-per-node C --gpus-per-node G --mem M ...]``)
writes a batch script and submits nothing; run it with ``sbatch grid.sbatch`` from the project directory.  The
script

1. runs in ``$SLURM_SUBMIT_DIR`` (and says so when the spec is not there),
2. generates a fresh authentication token for the job (mode 600, under the shared storage directory; removed
   when the job ends, however it ends) and exports ``RAY_AUTH_MODE=token`` / ``RAY_AUTH_TOKEN_PATH``,
3. starts the Ray head on the first node of the allocation and one Ray worker on each other node, each a
   ``srun --nodes=1 --ntasks=1 -w NODE ray start ... --block`` step in the background, sized by what SLURM
   granted on that node (``$SLURM_CPUS_PER_TASK``, ``$SLURM_GPUS_ON_NODE``, ``$SLURM_MEM_PER_NODE``),
4. waits, at most ``--wait-timeout`` seconds each, for the head and then for all nodes (a clear error and exit
   status 3 otherwise), then runs the grid on the head node with ``--address`` and ``--resume`` (the script is
   ``--requeue``-able, and a cancelled job submitted again continues the grid: SIGTERM makes the driver stop
   Tune gracefully, see ``tune_runner._sigterm_stops_tune``),
5. ends its own Ray steps when the grid ends (``ray stop`` would also stop other jobs' Ray on a shared node).
"""
from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from orchestrator.spec import expand_trials, load_spec, read_yaml
from orchestrator.storage import is_local, local_path

# Not shipped with a job: environments, VCS data, results, caches, local pretraining runs, device bundles.
EXCLUDES = [".venv", "venv", ".git", "runs", "ray_results", ".run", ".device", ".ci", ".pytest_cache",
            "__pycache__", "*.egg-info", "build", ".whl", ".gl", "*.pyc"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(ValueError):
    """The submission cannot be made (unreachable cluster, refused token, a spec outside the working dir)."""


def find_token(token_file: Optional[str] = None) -> tuple[Optional[str], str]:
    """(token or None, where it came from)."""
    if token_file is not None:
        p = Path(token_file).expanduser()
        if not p.is_file():
            raise SubmitError(f"--token-file {token_file} does not exist")
        return p.read_text().strip(), str(p)
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
        if p and Path(p).expanduser().is_file():
            return Path(p).expanduser().read_text().strip(), str(p)
    return None, "no token"


def job_client(address: str, token_file: Optional[str] = None):
    """A JobSubmissionClient for the dashboard at ``address``, authenticated when a token is known."""
    from ray.job_submission import JobSubmissionClient

    from ray.exceptions import AuthenticationError

    token, source = find_token(token_file)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as e:
        raise SubmitError(_refused(address, e, source)) from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    lines = [l for l in str(e).strip().splitlines() if l.strip()]
    return lines[0] if lines else type(e).__name__


def _refused(address: str, e: BaseException, source: str) -> str:
    return (f"the Ray cluster at {address} refused the request ({_first_line(e)}); token used: {source}. "
            "Pass --token-file with the head node's token (`ray get-auth-token` on the head)")


def _relative_inside(path: Path, root: Path, what: str) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        raise SubmitError(f"{what} {path} is outside the working directory {root}, so the job would not have it") from None


def cluster_storage(spec_path: str | os.PathLike, storage: Optional[str]) -> str:
    """The storage the job will use: ``--storage`` or the spec's, which must be absolute (shared by all nodes) or
    a remote URI (orchestrator.storage)."""
    chosen = storage if storage is not None else read_yaml(spec_path).get("storage", "runs/grid")
    if isinstance(chosen, str) and not is_local(chosen):
        return chosen  # object storage (s3://, gs://, ...): every node writes there itself
    if isinstance(chosen, str):
        chosen = local_path(chosen)
    if not isinstance(chosen, str) or not os.path.isabs(os.path.expanduser(chosen)):
        raise SubmitError(f"storage {chosen!r} is relative: on the cluster it would land in the job's temporary working directory; pass --storage with an absolute path every node can reach (e.g. an NFS mount)")
    return os.path.expanduser(chosen)


def grid_command(spec_rel: str, storage: str, name: Optional[str], address: Optional[str] = None) -> list[str]:
    cmd = ["python", "-m", "orchestrator", "grid", spec_rel, "--storage", storage, "--resume"]
    if name:
        cmd += ["--name", name]
    if address:
        cmd += ["--address", address]
    return cmd


@dataclass
class Submission:
    job_id: str
    address: str
    entrypoint: str
    run_dir: Path


def submit(
    spec_path: str | os.PathLike,
    address: str,
    *,
    storage: Optional[str] = None,
    name: Optional[str] = None,
    working_dir: str | os.PathLike = ".",
    pip: Optional[Sequence[str]] = None,
    token_file: Optional[str] = None,
) -> Submission:
    """Validate the spec here, then submit ``grid SPEC --resume`` as a Ray job shipping ``working_dir``."""
    root = Path(working_dir).resolve()
    spec_rel = _relative_inside(Path(spec_path), root, "spec")
    storage = cluster_storage(spec_path, storage)
    # validated as the job will see it: paths relative to the shipped working directory
    spec = load_spec(root / spec_rel, base_dir=root)
    for field_name in ("start", "expert", "iql", "sarsa", "critic"):
        p = getattr(spec.checkpoints, field_name)
        if p is not None:
            _relative_inside(Path(p), root, f"checkpoints.{field_name}")
    expand_trials(spec)
    run_dir = Path(storage) / (name or spec.name)

    runtime_env: dict = {"working_dir": str(root), "excludes": list(EXCLUDES), "env_vars": {"PYTHONUNBUFFERED": "1"}}
    if pip:
        runtime_env["pip"] = list(pip)
    from ray.exceptions import AuthenticationError

    client = job_client(address, token_file)
    entrypoint = shlex.join(grid_command(spec_rel, storage, name))
    try:
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                   metadata={"grid": spec.name, "spec": spec_rel})
    except AuthenticationError as e:
        raise SubmitError(_refused(address, e, find_token(token_file)[1])) from None
    except (ConnectionError, RuntimeError) as e:
        raise SubmitError(f"submitting to {address} failed: {_first_line(e)}") from None
    return Submission(job_id, address, entrypoint, run_dir)


def wait_for_job(address: str, job_id: str, token_file: Optional[str] = None, timeout_s: Optional[float] = None,
                 echo: bool = True, poll_s: float = 2.0) -> str:
    """Poll until the job ends; prints its new log lines when ``echo``.  Returns the final status name."""
    client = job_client(address, token_file)
    shown = 0
    t0 = time.monotonic()
    while True:
        status = str(client.get_job_status(job_id).value)
        if echo:
            logs = client.get_job_logs(job_id)
            if len(logs) > shown:
                sys.stdout.write(logs[shown:])
                sys.stdout.flush()
                shown = len(logs)
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            return status
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------------------- SLURM

_MEM = re.compile(r"^\d+[KMGT]?$")


@dataclass
class SlurmConfig:
    """What the batch script asks SLURM for; Ray itself is sized by the allocation SLURM grants (see sbatch_script)."""

    nodes: int = field(default=1, metadata={"help": "nodes of the allocation (one Ray node each)"})
    cpus_per_node: int = field(default=16, metadata={"help": "CPUs requested per node (Ray uses $SLURM_CPUS_PER_TASK, what SLURM grants)"})
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs requested per node (Ray uses $SLURM_GPUS_ON_NODE)"})
    mem: str = field(default="64G", metadata={"help": "memory per node, SLURM's --mem syntax (e.g. 64G; 0: all of the node's memory)"})
    time: str = field(default="24:00:00", metadata={"help": "wall-clock limit of the job"})
    partition: Optional[str] = field(default=None, metadata={"help": "SLURM partition"})
    account: Optional[str] = field(default=None, metadata={"help": "SLURM account"})
    port: int = field(default=6379, metadata={"help": "Ray head port"})
    wait_timeout: int = field(default=600, metadata={"help": "seconds to wait for the Ray head and for every node to join before the job fails"})
    ray_args: str = field(default="", metadata={"help": "extra arguments for every `ray start` (e.g. ports, --temp-dir)"})
    venv: Optional[str] = field(default=".venv", metadata={"help": "virtualenv activated on every node, relative to the submit directory ('' for none)"})

    def __post_init__(self):
        for k in ("nodes", "cpus_per_node", "wait_timeout"):
            if getattr(self, k) < 1:
                raise SubmitError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(self, k)}")
        if self.gpus_per_node < 0:
            raise SubmitError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if not 1 <= self.port <= 65535:
            raise SubmitError(f"--port must be a TCP port, got {self.port}")
        if not _MEM.match(self.mem):
            raise SubmitError(f"--mem must be a size such as 64G, 500M or 0 (the whole node), got {self.mem!r}")


def sbatch_script(spec_path: str | os.PathLike, cfg: SlurmConfig, *, storage: Optional[str] = None,
                  name: Optional[str] = None, working_dir: str | os.PathLike = ".") -> str:
    """The text of a SLURM batch script that builds a Ray cluster on its nodes and runs the grid on it.

    The script runs in ``$SLURM_SUBMIT_DIR`` (submit it from ``working_dir``: the spec and checkpoints are
    found relative to it); each node's Ray gets the CPUs, GPUs and memory SLURM allocated on that node."""
    root = Path(working_dir).resolve()
    spec_rel = _relative_inside(Path(spec_path), root, "spec")
    storage = cluster_storage(spec_path, storage)
    spec = load_spec(root / spec_rel, base_dir=root)
    expand_trials(spec)
    job = name or spec.name
    r = spec.resources
    need = r.cpus_per_trial + (r.mc_worker_cpus if "mc" in spec.estimators else 0)
    if need > cfg.cpus_per_node:
        raise SubmitError(f"a trial needs {need:g} CPUs, but --cpus-per-node is {cfg.cpus_per_node}")
    if r.gpus_per_trial > cfg.gpus_per_node:
        raise SubmitError(f"resources.gpus_per_trial is {r.gpus_per_trial:g}, but --gpus-per-node is {cfg.gpus_per_node}")
    q = shlex.quote
    log_dir = local_path(storage) if is_local(storage) else "."
    sbatch = [
        f"#SBATCH --job-name=o2o-{job}",
        f"#SBATCH --nodes={cfg.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={cfg.cpus_per_node}",
        f"#SBATCH --mem={cfg.mem}",
        f"#SBATCH --time={cfg.time}",
        f"#SBATCH --output={log_dir}/{job}-slurm-%j.out",
        "#SBATCH --requeue",
    ]
    if cfg.gpus_per_node:
        sbatch.append(f"#SBATCH --gpus-per-task={cfg.gpus_per_node}")
    if cfg.partition:
        sbatch.append(f"#SBATCH --partition={cfg.partition}")
    if cfg.account:
        sbatch.append(f"#SBATCH --account={cfg.account}")
    activate = f'source {q(cfg.venv)}/bin/activate\n' if cfg.venv else ""
    grid = shlex.join(grid_command(spec_rel, storage, name)) + ' --address "$head_ip:$port"'
    # the token must be on storage every node reads: a URI storage is no directory, the (shared) home is
    token_root = q(local_path(storage)) + "/.ray-auth" if is_local(storage) else '"$HOME/.ray-auth"'
    # single quotes: expanded by the step's shell on its own node, so each node's Ray sees that node's allocation
    ray_res = ('--num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="${SLURM_GPUS_ON_NODE:-0}" '
               '${SLURM_MEM_PER_NODE:+--memory=$((SLURM_MEM_PER_NODE * 1048576))} --include-dashboard=false'
               + (f" {cfg.ray_args}" if cfg.ray_args else ""))
    return f"""#!/bin/bash
# Ray cluster on this SLURM allocation, then the grid {spec_rel} on it.
# Written by `python -m orchestrator submit {spec_rel} --slurm ...`.  Submit it from the project directory
# (the spec and checkpoints are read relative to it):  cd {q(str(root))} && sbatch THIS_FILE
# The SBATCH line for the log must name an existing directory: mkdir -p {log_dir} before sbatch.
{chr(10).join(sbatch)}
set -euo pipefail
cd "${{SLURM_SUBMIT_DIR:?not inside a SLURM job: submit this script with sbatch}}"
if [ ! -f {q(spec_rel)} ]; then
  echo "error: {spec_rel} is not in the submit directory $PWD: submit from the directory the script was written for ({root})" >&2
  exit 2
fi
{activate}wait_timeout={cfg.wait_timeout}
# wait_for WHAT COMMAND...: retry COMMAND every 5 s; after $wait_timeout s, fail the job naming WHAT
wait_for() {{
  local what=$1 deadline=$((SECONDS + wait_timeout))
  shift
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      echo "error: $what not ready after $wait_timeout s (raise --wait-timeout; the Ray logs are in /tmp/ray on the nodes)" >&2
      exit 3
    fi
    sleep 5
  done
}}

# Token authentication (Ray 2.59+): one fresh token per job, on storage every node reads, only for this user.
export RAY_AUTH_MODE=token
token_dir={token_root}
mkdir -p "$token_dir" && chmod 700 "$token_dir"
export RAY_AUTH_TOKEN_PATH="$token_dir/token-$SLURM_JOB_ID"
(umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH")
trap 'rm -f "$RAY_AUTH_TOKEN_PATH"' EXIT  # also when the job is cancelled or requeued

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${{nodes[0]}}
port={cfg.port}
head_ip=$(srun --nodes=1 --ntasks=1 --overlap -w "$head" hostname --ip-address | awk '{{print $1}}')
echo "Ray head: $head ($head_ip:$port), ${{#nodes[@]}} nodes, $SLURM_CPUS_PER_TASK CPUs and ${{SLURM_GPUS_ON_NODE:-0}} GPUs per node, ${{SLURM_MEM_PER_NODE:-?}} MB memory per node, restart ${{SLURM_RESTART_COUNT:-0}}"

ray_steps=()
srun --nodes=1 --ntasks=1 --overlap -w "$head" bash -c 'exec ray start --head --node-ip-address="$0" --port="$1" {ray_res} --block' "$head_ip" "$port" &
ray_steps+=($!)
wait_for "the Ray head on $head" ray status --address "$head_ip:$port"
for node in "${{nodes[@]:1}}"; do
  srun --nodes=1 --ntasks=1 --overlap -w "$node" bash -c 'exec ray start --address="$0" {ray_res} --block' "$head_ip:$port" &
  ray_steps+=($!)
done
# every node registered before the grid checks its resources against the cluster
nodes_alive() {{
  [ "$(python -c "import ray; ray.init(address='$head_ip:$port', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))")" = "${{#nodes[@]}}" ]
}}
wait_for "${{#nodes[@]}} Ray nodes" nodes_alive

set +e
{grid}
status=$?
# stop this job's Ray only (`ray stop` would also end other jobs' Ray on a shared node): end its srun steps
kill "${{ray_steps[@]}}" 2>/dev/null
wait "${{ray_steps[@]}}" 2>/dev/null
exit $status
"""


def write_sbatch(out: str | os.PathLike, spec_path: str | os.PathLike, cfg: SlurmConfig, **kw) -> Path:
    out = Path(out)
    if out.is_dir():
        raise SubmitError(f"--slurm {out} is a directory; give the batch script's file name (e.g. grid.sbatch)")
    from algorithms.checkpoint import check_writable_dir  # here, not at the top: it loads torch, which --help does not need

    try:
        check_writable_dir(out.parent, "--slurm")
    except ValueError as e:
        raise SubmitError(str(e)) from None
    text = sbatch_script(spec_path, cfg, **kw)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.chmod(0o755)
    return out
