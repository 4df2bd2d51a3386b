"""Which command ran a run directory, when, from which code, on which machine.

A grid that is interrupted and resumed (time-limited calls, a crash, moving to another machine) has several
launches; its results alone do not say which.  Each launch of ``grid`` / ``resume`` appends one line to
``<run dir>/launches.jsonl`` before Tune starts, and one when Tune returns::

    {"event": "start" | "resume", "time": ISO-8601 UTC, "command": str, "commit": str, "host": str, "cpus": int,
     "gpu": str | null, "python": str, "torch": str, "ray": str, "mani_skill": str, "sapien": str}
    {"event": "end", "time": ..., "finished": int, "failed": int, "trials": int}

A launch killed outright (SIGKILL, machine lost) leaves no ``end`` line.  The report lists the launches.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from algorithms import provenance
from orchestrator.rundir import read_json_lines

LAUNCHES_FILE = "launches.jsonl"
PACKAGES = ("ray", "mani_skill", "sapien")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _append(run_dir: Path, entry: dict) -> None:
    with open(Path(run_dir) / LAUNCHES_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")


def record_launch(run_dir: Path, event: str) -> None:
    """Append a ``start`` or ``resume`` line: the command, commit and the driver's machine."""
    m = provenance.machine()
    entry = {"event": event, "time": provenance.now(), "command": provenance.command_line(),
             "commit": provenance.git_commit(), "host": m["host"], "cpus": m["cpus"], "gpu": m["gpu"],
             "python": m["python"], "torch": m["torch"], **{p: _version(p) for p in PACKAGES}}
    _append(run_dir, entry)


def record_end(run_dir: Path, trials: int, finished: int, failed: int) -> None:
    _append(run_dir, {"event": "end", "time": provenance.now(), "trials": trials, "finished": finished, "failed": failed})


def read(run_dir: Path) -> list[dict]:
    """Every line of ``launches.jsonl`` in order ([] if there is none); a half-written last line is skipped."""
    return read_json_lines(Path(run_dir) / LAUNCHES_FILE)[0]


def table(entries: list[dict]) -> tuple[list[str], list[list]]:
    """(header, rows) for the report: one row per launch, with the counts of the ``end`` line that follows it."""
    header = ["started (UTC)", "event", "ended (UTC)", "trials finished", "commit", "host", "CPUs", "GPU",
              "python / torch / ray / mani_skill / sapien"]
    rows = []
    for e in entries:
        if e.get("event") == "end":
            if rows and rows[-1][2] == "-":
                rows[-1][2] = e.get("time", "?")
                rows[-1][3] = f"{e.get('finished', '?')}/{e.get('trials', '?')}" + (f" ({e['failed']} failed)" if e.get("failed") else "")
            continue
        versions = " / ".join(str(e.get(k, "?")) for k in ("python", "torch", *PACKAGES))
        rows.append([e.get("time", "?"), e.get("event", "?"), "-", "-", e.get("commit", "?"), e.get("host", "?"),
                     e.get("cpus", "?"), e.get("gpu") or "none", versions])
    return header, rows
