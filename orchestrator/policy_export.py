"""Export the final policy of every finished trial of chosen cells from a grid's run directory, with an index.

Each trial's last reported checkpoint (Tune's ``ExperimentAnalysis.get_last_checkpoint``) holds ``policy.pt``, a
hash-checked policy checkpoint (``algorithms.checkpoint``).  It is copied as ``<cell>_s<seed>.pt`` into the output
folder, and ``index.csv`` lists ``cell,seed,file,final_success`` (the deterministic success of the trial's last
report, a fraction; rows already there for other policies are kept), so anyone can re-evaluate the policies (``python -m orchestrator eval``) without the run
directory.  Nothing is overwritten unless asked.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd

from orchestrator.rundir import FINISHED, NotAnExperimentError, open_experiment

INDEX = "index.csv"
POLICY_FILE = "policy.pt"
COLUMNS = ["cell", "seed", "file", "final_success"]


@dataclass
class ExportResult:
    index: pd.DataFrame  # COLUMNS, one row per policy exported by this call (index.csv may hold more)
    skipped: list[str]  # one line per trial of a chosen cell that was not exported, and why


def _read_index(path: Path) -> pd.DataFrame:
    try:
        old = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a policy index ({type(e).__name__}); move it away to export here") from None
    if list(old.columns) != COLUMNS:
        raise ValueError(f"{path} is not a policy index (columns {list(old.columns)}, expected {COLUMNS}); move it away to export here")
    return old


def _cell(config: dict) -> str:
    return config.get("cell") or f"{config.get('estimator')}+{config.get('update')}"


def export_policies(run_dirs: Union[str, Path, Sequence], out_dir, cells: Optional[Sequence[str]] = None,
                    overwrite: bool = False) -> ExportResult:
    """Copies the final policies of the finished trials of ``cells`` (all cells when None) from ``run_dirs`` (one
    run directory, or several: a grid run in pieces, ``grid --cells``) into ``out_dir`` and writes
    ``out_dir/index.csv``.  Raises ValueError (one line) before writing anything when a directory is not a Tune
    experiment, a named cell is in none of them, a cell and seed finished in two of them, or a file to write exists
    and not ``overwrite``."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    out_dir = Path(out_dir).expanduser()
    trials = []  # (run directory, its ExperimentAnalysis, trial)
    for run_dir in (Path(d).expanduser().resolve() for d in run_dirs):
        if not list(run_dir.glob("experiment_state-*.json")):
            raise NotAnExperimentError(f"{run_dir} is not a Tune experiment directory (no experiment_state-*.json)")
        ea = open_experiment(run_dir)
        trials += [(run_dir, ea, t) for t in ea.trials]
    present = sorted({_cell(t.config or {}) for _, _, t in trials})
    wanted = list(present if cells is None else cells)
    unknown = [c for c in wanted if c not in present]
    if unknown:
        where = " or ".join(Path(d).name for d in run_dirs)
        raise ValueError(f"{where} has no cell {', '.join(map(repr, unknown))}; cells: {', '.join(present)}")
    rows, skipped, copies, seen = [], [], [], {}
    for run_dir, ea, t in sorted(trials, key=lambda x: (_cell(x[2].config or {}), int((x[2].config or {}).get("seed", 0)))):
        cfg = t.config or {}
        cell = _cell(cfg)
        if cell not in wanted:
            continue
        seed = int(cfg.get("seed", 0))
        label = f"{cell} seed {seed} ({t.trial_id})"
        if t.status != FINISHED:
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
        if (cell, seed) in seen:
            raise ValueError(f"{cell} seed {seed} finished in both {seen[cell, seed].name} and {run_dir.name}: export them apart")
        seen[cell, seed] = run_dir
        name = f"{cell}_s{seed}.pt"
        copies.append((Path(ckpt.path) / POLICY_FILE, out_dir / name))
        rows.append({"cell": cell, "seed": seed, "file": name, "final_success": float(success)})
    index = pd.DataFrame(rows, columns=COLUMNS)
    clashes = [str(dst) for _, dst in copies if dst.exists()]
    if clashes and not overwrite:
        raise ValueError(f"{clashes[0]} exists (and {len(clashes) - 1} more): pass --overwrite to replace")
    if (out_dir / INDEX).exists():  # the folder's other policies keep their rows (exports add up)
        old = _read_index(out_dir / INDEX)
        new_keys = set(zip(index["cell"], index["seed"]))
        kept = old[[(c, s) not in new_keys for c, s in zip(old["cell"], old["seed"])]]
        whole = pd.concat([kept, index] if len(kept) else [index], ignore_index=True).sort_values(["cell", "seed"], ignore_index=True)
    else:
        whole = index
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, dst in copies:
        tmp = dst.with_suffix(".pt.part")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    whole.to_csv(out_dir / INDEX, index=False)
    return ExportResult(index, skipped)
