"""Memory of a group of processes, as the kernel accounts it (Linux ``/proc/<pid>/smaps_rollup``).

PSS (proportional set size) splits each shared page among the processes that map it, so the PSS of a group adds
up to what the group really costs the machine; RSS counts shared libraries once per process and overstates a
group of many processes.  Both in MiB.
"""
from __future__ import annotations

import os
from typing import Iterable, NamedTuple


class Memory(NamedTuple):
    pss_mib: float
    rss_mib: float

    def __add__(self, other: "Memory") -> "Memory":
        return Memory(self.pss_mib + other.pss_mib, self.rss_mib + other.rss_mib)


def process_memory(pid: int) -> Memory:
    """PSS and RSS of one process (zero if it is gone)."""
    kib = {"Pss": 0, "Rss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in kib:
                    kib[key] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return Memory(kib["Pss"] / 1024, kib["Rss"] / 1024)


def group_memory(pids: Iterable[int]) -> Memory:
    total = Memory(0.0, 0.0)
    for pid in set(pids):
        total = total + process_memory(pid)
    return total


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (children's children included), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out
