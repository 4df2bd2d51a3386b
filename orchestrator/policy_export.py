"""Export the final policy of every finished trial of chosen cells from a grid's run directory, with an index.

Each trial's last reported checkpoint (Tune's ``ExperimentAnalysis.get_last_checkpoint``) holds ``policy.pt``, a
hash-checked policy checkpoint (``algorithms.checkpoint``).  It is copied as ``<cell>_s<seed>.pt`` into the output
folder, and ``index.csv`` lists ``cell,seed,file,final_success`` (the deterministic success of the trial's last
report, a fraction), so anyone can re-evaluate the policies (``python -m orchestrator eval``) without the run
directory.  Nothing is overwritten unless asked.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from orchestrator.rundir import NotAnExperimentError, open_experiment

INDEX = "index.csv"
POLICY_FILE = "policy.pt"
COLUMNS = ["cell", "seed", "file", "final_success"]


@dataclass
class ExportResult:
    index: pd.DataFrame  # COLUMNS, one row per exported policy
    skipped: list[str]  # one line per trial of a chosen cell that was not exported, and why


def _cell(config: dict) -> str:
    return config.get("cell") or f"{config.get('estimator')}+{config.get('update')}"


def export_policies(run_dir, out_dir, cells: Optional[Sequence[str]] = None, overwrite: bool = False) -> ExportResult:
    """Copies the final policies of the finished trials of ``cells`` (all cells when None) from ``run_dir`` into
    ``out_dir`` and writes ``out_dir/index.csv``.  Raises ValueError (one line) before writing anything when the
    directory is not a Tune experiment, a named cell is not in it, or a file to write exists and not ``overwrite``."""
    run_dir, out_dir = Path(run_dir).expanduser().resolve(), Path(out_dir).expanduser()
    if not list(run_dir.glob("experiment_state-*.json")):
        raise NotAnExperimentError(f"{run_dir} is not a Tune experiment directory (no experiment_state-*.json)")
    ea = open_experiment(run_dir)
    present = sorted({_cell(t.config or {}) for t in ea.trials})
    wanted = list(present if cells is None else cells)
    unknown = [c for c in wanted if c not in present]
    if unknown:
        raise ValueError(f"{run_dir.name} has no cell {', '.join(map(repr, unknown))}; its cells: {', '.join(present)}")
    rows, skipped, copies = [], [], []
    for t in sorted(ea.trials, key=lambda t: (_cell(t.config or {}), int((t.config or {}).get("seed", 0)))):
        cfg = t.config or {}
        cell = _cell(cfg)
        if cell not in wanted:
            continue
        seed = int(cfg.get("seed", 0))
        label = f"{cell} seed {seed} ({t.trial_id})"
        if t.status != "TERMINATED":
            skipped.append(f"{label}: {t.status}, not finished")
            continue
        ckpt = ea.get_last_checkpoint(t)
        result = t.last_result or {}
        success = result.get("eval/success_rate")
        if ckpt is None or not (Path(ckpt.path) / POLICY_FILE).is_file():
            skipped.append(f"{label}: its last checkpoint has no {POLICY_FILE}")
            continue
        if success is None:
            skipped.append(f"{label}: its last report has no eval/success_rate")
            continue
        name = f"{cell}_s{seed}.pt"
        copies.append((Path(ckpt.path) / POLICY_FILE, out_dir / name))
        rows.append({"cell": cell, "seed": seed, "file": name, "final_success": float(success)})
    index = pd.DataFrame(rows, columns=COLUMNS)
    clashes = [str(dst) for _, dst in copies if dst.exists()] + ([str(out_dir / INDEX)] if (out_dir / INDEX).exists() else [])
    if clashes and not overwrite:
        raise ValueError(f"{clashes[0]} exists (and {len(clashes) - 1} more): pass --overwrite to replace")
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, dst in copies:
        tmp = dst.with_suffix(".pt.part")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    index.to_csv(out_dir / INDEX, index=False)
    return ExportResult(index, skipped)
