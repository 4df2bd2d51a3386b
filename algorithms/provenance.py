"""Where a result came from: command, code version, machine."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path


def git_commit(repo: Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not sha:
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> dict:
    import torch

    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def machine_line() -> str:
    """:func:`machine` in one line, for benchmark tables: ``host: 16 CPUs (x86_64), NVIDIA H200, Python 3.12.3, torch 2.11``."""
    m = machine()
    return f"{m['host']}: {m['cpus']} CPUs ({m['processor']}), {m['gpu'] or 'no GPU'}, Python {m['python']}, torch {m['torch']}"


def command_line() -> str:
    argv = list(sys.argv)
    head = "python -m orchestrator" if argv and argv[0].endswith("__main__.py") else os.path.basename(argv[0]) if argv else "python"
    return " ".join([head] + [shlex.quote(a) for a in argv[1:]])


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
