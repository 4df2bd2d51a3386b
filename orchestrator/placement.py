"""Where each trial ran: the trainable records it, the analysis reports it.

Ray's GPU shares are bookkeeping: Ray sets ``CUDA_VISIBLE_DEVICES`` for a trial's process, and fractional
trials are only kept apart by the memory cap each one sets itself.  So each trial writes what it actually
got to ``<trial dir>/trial/placement.json``::

    {"host": str, "pid": int, "device": "cuda" | "cpu", "cuda_visible_devices": str | null,
     "ray_gpu_ids": [str], "gpu_name": str | null, "gpu_fraction": float, "cpus": int | null,
     "memory_cap_mib": float | null, "peak_gpu_memory_mib": float | null}

``cpus``: the CPUs of the trial's placement group (its env worker processes follow them; null outside Ray).

``peak_gpu_memory_mib`` (torch's ``max_memory_allocated``) is filled in when the trial's process ends its
run; a crashed or interrupted attempt leaves it null.  A resumed trial rewrites the file.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd

from algorithms.checkpoint import atomic_write_text

PLACEMENT_FILE = "placement.json"
PREFIX = "placement/"
MIB = 2 ** 20


def record_start(path: Path, device, gpu_fraction: float, cpus: int | None = None) -> dict:
    """Write the trial's placement at start-up (``device``: the torch.device it computes on); returns the record."""
    import ray
    import torch

    on_gpu = device.type == "cuda"
    index = device.index if device.index is not None else 0
    total = torch.cuda.get_device_properties(index).total_memory if on_gpu else None
    rec = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device.type,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "gpu_name": torch.cuda.get_device_name(index) if on_gpu else None,
        "gpu_fraction": gpu_fraction,
        "cpus": cpus,
        # the cap grid_trial sets for a fractional share; a whole GPU is the trial's own
        "memory_cap_mib": round(total * gpu_fraction / MIB, 1) if on_gpu and 0 < gpu_fraction < 1 else None,
        "peak_gpu_memory_mib": None,
    }
    _write(path, rec)
    return rec


def record_end(path: Path, rec: dict, device) -> None:
    import torch

    if device.type == "cuda":
        rec = {**rec, "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated(device) / MIB, 1)}
    _write(path, rec)


def _write(path: Path, rec: dict) -> None:
    atomic_write_text(path, json.dumps(rec, indent=2))


def read(trial_dir: Path, trial_out: str) -> dict:
    """``placement/<key>`` columns for one trial (empty when the trial never started or predates the record)."""
    try:
        rec = json.loads((Path(trial_dir) / trial_out / PLACEMENT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {PREFIX + k: (json.dumps(v) if isinstance(v, list) else v) for k, v in rec.items()}


def max_concurrent(results: pd.DataFrame) -> int:
    """Most trials computing at the same moment, from each reported iteration's [end - duration, end] span."""
    need = {"trial_id", "timestamp", "time_this_iter_s"}
    if not len(results) or not need <= set(results.columns):
        return 0
    rows = results.dropna(subset=["timestamp", "time_this_iter_s"])
    events = []
    for _, r in rows.iterrows():
        end = float(r["timestamp"])
        events += [(end - float(r["time_this_iter_s"]), 1, r["trial_id"]), (end, -1, r["trial_id"])]
    spans: dict = {}  # trial -> its spans open now (a trial counts once even if two of its rows overlap)
    computing = best = 0
    for _, delta, tid in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts at the same second
        was = spans.get(tid, 0) > 0
        spans[tid] = spans.get(tid, 0) + delta
        computing += (spans[tid] > 0) - was
        best = max(best, computing)
    return best


def summary_rows(trials: pd.DataFrame) -> tuple[list[str], list[list]]:
    """One row per distinct (host, device, GPU, CUDA_VISIBLE_DEVICES, Ray GPU ids, memory cap): trial count and peak memory."""
    keys = ["host", "device", "gpu_name", "cuda_visible_devices", "ray_gpu_ids", "memory_cap_mib"]
    cols = [PREFIX + k for k in keys]
    header = ["host", "device", "GPU", "CUDA_VISIBLE_DEVICES", "Ray GPU ids", "memory cap MiB", "trials", "peak GPU memory MiB (max)"]
    if PREFIX + "device" not in trials.columns:
        return header, []
    placed = trials.dropna(subset=[PREFIX + "device"]).copy()
    for c in cols + [PREFIX + "peak_gpu_memory_mib"]:
        if c not in placed.columns:
            placed[c] = None
    placed[cols] = placed[cols].astype(object).where(placed[cols].notna(), "-")
    rows = []
    for key, group in placed.groupby(cols, sort=True, dropna=False):
        peak = pd.to_numeric(group[PREFIX + "peak_gpu_memory_mib"], errors="coerce").max()
        rows.append([*key, len(group), "-" if pd.isna(peak) else f"{peak:,.1f}"])
    return header, rows


def unplaced(trials: pd.DataFrame) -> int:
    """Trials without a placement record (never started, or run before records existed)."""
    if PREFIX + "device" not in trials.columns:
        return len(trials)
    return int(trials[PREFIX + "device"].isna().sum())
