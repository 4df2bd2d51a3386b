"""Checkpoint files: policies, value functions and datasets share one validated format.

A file is ``torch.save`` of a dict::

    {"format": "o2o/1", "kind": "policy" | "value" | "dataset",
     "model": {name: tensor},            # for a policy: ManiSkill PPO baseline Agent state_dict names
     "obs_dim", "act_dim", "env_id", "control_mode",
     "config": {...}, "metrics": {...}, "sha256": hex digest of the model tensors}

A bare policy ``state_dict`` (what ManiSkill's baseline saves) also loads; its dims are read from shapes.
Writes are atomic: a temp file in the same directory, then ``os.replace``.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Optional

import torch

from envs.task_spaces import task_spaces

FORMAT = "o2o/1"
POLICY_KEYS = ("actor_mean.0.weight", "actor_mean.6.weight", "actor_logstd", "critic.0.weight", "critic.6.weight")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit what the caller needs."""


def tensor_hash(tensors: dict) -> str:
    """sha256 over names, dtypes, shapes and bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"model entry {name!r} is not a tensor")
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """``write(f)`` into a temp file beside ``path``, then rename it over ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable_dir(path: str | Path, what: str) -> None:
    """ValueError (one line) unless ``path`` is a directory this process can write, or one it can create."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {p}: {probe} is a file, not a directory; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {p}: cannot write in {probe} (read-only or immutable); choose a writable path")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(
    path,
    model: dict,
    *,
    kind: str = "policy",
    obs_dim: int,
    act_dim: int,
    env_id: str,
    control_mode: str,
    config: Optional[dict] = None,
    metrics: Optional[dict] = None,
    extra: Optional[dict] = None,
) -> str:
    """Write a checkpoint atomically; returns its sha256."""
    model = {k: v.detach().cpu().clone() for k, v in model.items()}
    digest = tensor_hash(model)
    payload = {
        "format": FORMAT,
        "kind": kind,
        "model": model,
        "obs_dim": int(obs_dim),
        "act_dim": int(act_dim),
        "env_id": env_id,
        "control_mode": control_mode,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "sha256": digest,
    }
    if extra:
        payload.update(extra)
    atomic_torch_save(payload, path)
    return digest


def _is_bare_policy_state_dict(obj) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in POLICY_KEYS) and "model" not in obj


def load_checkpoint(
    path,
    *,
    kind: str = "policy",
    env_id: Optional[str] = None,
    control_mode: Optional[str] = None,
    obs_dim: Optional[int] = None,
    act_dim: Optional[int] = None,
) -> dict:
    """Load and validate; returns the checkpoint dict (a bare state_dict is wrapped into one).

    Every ``expect`` argument left None is not checked.  Raises :class:`CheckpointError` naming the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, pickle garbage
        raise CheckpointError(f"checkpoint {path} is truncated or not a torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None

    if _is_bare_policy_state_dict(obj):
        if kind != "policy":
            raise CheckpointError(f"checkpoint {path} is a bare policy state_dict, expected a {kind} checkpoint")
        obj = {
            "format": "bare-state-dict",
            "kind": "policy",
            "model": obj,
            "obs_dim": int(obj["actor_mean.0.weight"].shape[1]),
            "act_dim": int(obj["actor_mean.6.weight"].shape[0]),
            "env_id": None,
            "control_mode": None,
            "config": {},
            "metrics": {},
            "sha256": None,
        }
    elif not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"checkpoint {path} is neither an o2o checkpoint nor a policy state_dict")
    else:
        missing = [k for k in ("kind", "obs_dim", "act_dim", "env_id", "control_mode", "sha256") if k not in obj]
        if missing:
            raise CheckpointError(f"checkpoint {path} lacks the fields {', '.join(missing)}")
        if obj["kind"] != kind:
            raise CheckpointError(f"checkpoint {path} is a {obj['kind']} checkpoint, expected a {kind} checkpoint")
        actual = tensor_hash(obj["model"])
        if actual != obj["sha256"]:
            raise CheckpointError(f"checkpoint {path} fails its hash check (stored {obj['sha256'][:12]}..., contents {actual[:12]}...): the file was modified or corrupted")

    if kind == "policy":
        missing = [k for k in POLICY_KEYS if k not in obj["model"]]
        if missing:
            raise CheckpointError(f"checkpoint {path} lacks policy tensors {', '.join(missing)}")
    for name, want in (("obs_dim", obs_dim), ("act_dim", act_dim)):
        if want is not None and obj[name] != want:
            raise CheckpointError(f"checkpoint {path} has {name}={obj[name]}, but the env has {name}={want}")
    for name, want in (("env_id", env_id), ("control_mode", control_mode)):
        if want is not None and obj[name] is not None and obj[name] != want:
            raise CheckpointError(f"checkpoint {path} was made for {name}={obj[name]!r}, not {want!r}")
    return obj


def load_policy(path, device="cpu", **expect):
    """Returns (Agent on ``device``, checkpoint dict)."""
    from algorithms.agent import Agent

    ckpt = load_checkpoint(path, kind="policy", **expect)
    agent = Agent(ckpt["obs_dim"], ckpt["act_dim"])
    try:
        agent.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the agent: {str(e).splitlines()[0]}") from None
    return agent.to(device), ckpt


def policy_task(ckpt: dict, label: str, hint: str, env_id: Optional[str] = None) -> tuple[str, str]:
    """(env_id, control_mode) of the task a loaded policy checkpoint acts on; ``env_id`` overrides the recorded one.
    A bare state_dict records neither: CheckpointError "<label> records no env id (a bare state_dict): <hint>"."""
    env_id = env_id or ckpt["env_id"]
    if env_id is None:
        raise CheckpointError(f"{label} records no env id (a bare state_dict): {hint}")
    return env_id, ckpt["control_mode"] or "pd_joint_delta_pos"


def _check_sizes(ckpt: dict, label: str, task: str, obs_dim: int, act_dim: int) -> None:
    if obs_dim != ckpt["obs_dim"] or act_dim != ckpt["act_dim"]:
        raise CheckpointError(f"{label} has obs/act dims {ckpt['obs_dim']}/{ckpt['act_dim']}, but {task} has {obs_dim}/{act_dim}: "
                              "use a checkpoint made for this task, or set the env id and control mode it was made for")


def check_policy_fits(ckpt: dict, label: str, env_id: str, venv) -> None:
    """CheckpointError unless the vector env's observation and action sizes are the policy's."""
    _check_sizes(ckpt, label, env_id, venv.obs_dim, venv.act_dim)


def check_fits_task(ckpt: dict, label: str, env_id: str, control_mode: str) -> None:
    """CheckpointError unless the sizes ``ckpt`` records are those of ``env_id`` under ``control_mode``, read
    without a simulator (:func:`envs.task_spaces.task_spaces`; UnknownTask for an unregistered id).  A task
    whose sizes are known only from its env passes here and is checked when its env starts."""
    spaces = task_spaces(env_id, control_mode)
    if spaces is not None:
        _check_sizes(ckpt, label, f"{env_id} ({control_mode})", spaces.obs_dim, spaces.act_dim)


def check_same_sizes(ckpt: dict, label: str, ref: dict, ref_label: str) -> None:
    """CheckpointError unless two checkpoints that act on the same task record the same obs/act sizes."""
    _check_sizes(ckpt, label, ref_label, ref["obs_dim"], ref["act_dim"])


def save_policy(path, agent, *, env_id: str, control_mode: str, config=None, metrics=None, extra=None) -> str:
    return save_checkpoint(
        path, agent.state_dict(), kind="policy", obs_dim=agent.obs_dim, act_dim=agent.act_dim,
        env_id=env_id, control_mode=control_mode, config=config, metrics=metrics, extra=extra,
    )
