#!/usr/bin/env bash
# One time-limited call of the reference grid on the lent 16-core + 1 GPU machine, resumed across calls.
# Usage: reference_grid.sh SECONDS [SPEC]   (default SPEC: experiments/reference-subset.yaml)
# The grid runs under `timeout -s INT` (Tune saves its state on Ctrl+C), is analysed as it stands, and comes
# back in $OUT: report.md, the PNGs and CSVs, and run.tgz.part*, the run directory without the checkpoints of
# finished trials, split in 15 MiB parts ($OUT's per-file limit), so a fresh machine can resume it:
#   cat run.tgz.part* | tar xzf - -C runs/grid
set -uo pipefail
SECS=${1:-480}; SPEC=${2:-experiments/reference-subset.yaml}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
NAME=$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$SPEC")
RUN=runs/grid/$NAME
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
timeout -s INT -k 90 "$SECS" python3 -m orchestrator grid "$SPEC" --resume --no-analysis
echo "grid exited $?"
python3 -m orchestrator analyze "$RUN" || echo "analyze exited $?"
cp "$RUN"/analysis/report.md "$RUN"/analysis/*.png "$RUN"/analysis/summary.csv "$OUT"/ 2>/dev/null
python3 - "$RUN" <<'PY'
import os, sys, tarfile
from orchestrator.analysis import load_experiment
run = sys.argv[1]
trials = load_experiment(run).trials
finished = set(trials.loc[trials["status"] == "TERMINATED", "trial_dir"])
print(trials["status"].value_counts().to_string())

def keep(info):
    # Unfinished trials keep every checkpoint Tune kept: its saved state may name an older one than the newest
    # on disk, and it deletes old ones by name as new ones come (keeping only the newest broke a resume).
    parts = info.name.split("/")
    if len(parts) > 2 and parts[1] in finished and (parts[2].startswith("checkpoint_") or parts[2:4] == ["trial", "checkpoint"]):
        return None
    return info

with tarfile.open(os.path.join(os.environ["OUT"], "run.tgz"), "w:gz") as t:
    t.add(run, arcname=os.path.basename(run), filter=keep)
print("run.tgz", os.path.getsize(os.path.join(os.environ["OUT"], "run.tgz")) // 2**20, "MiB")
PY
(cd "$OUT" && split -b 15M run.tgz run.tgz.part && rm run.tgz)
# at most 8 files come back: the figures go first (analyze on the fetched run directory redraws them)
[ "$(ls "$OUT" | wc -l)" -gt 8 ] && rm -f "$OUT"/*.png
ls -l "$OUT"
