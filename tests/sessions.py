"""The processes of one session, for tests that kill a CLI driver and the local Ray it started, as a machine that
dies would: Ray gives each of its workers a process group of its own, so ``os.killpg`` on the driver's group leaves
the trial workers running."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid`` (the CLI driver's, started with ``start_new_session``); zombies, which
    a container's init may never reap, do not count."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path("/proc", name, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state != "Z":
            pids.append(int(name))
    return pids


def kill_session(sid: int) -> None:
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
