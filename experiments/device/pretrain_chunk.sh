#!/usr/bin/env bash
# One time-limited chunk of the pretraining ladder on the lent 16-core GPU machine (see README "Shipped policies").
# Usage: pretrain_chunk.sh MINUTES RUN_DIR [extra pretrain flags]
# The run directory travels in .run/ (carried); what is worth keeping comes back as $OUT/ladder.tgz:
# state.pt (to resume), ladder.csv, provenance, TensorBoard logs, and the checkpoints that could be selected.
set -euo pipefail
MIN=${1:-8}; RUN=${2:-.run/pretrain}; shift 2 || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
mkdir -p "$RUN"
python3 -m orchestrator pretrain --num-envs 16 --device cuda --out-dir "$RUN" --max-minutes "$MIN" --no-progress "$@" || echo "pretrain exited $?"
cat "$RUN/ladder.csv"
python3 - "$RUN" <<'PY'
import csv, sys, tarfile, os
run = sys.argv[1]
keep = {"state.pt", "ladder.csv", "config.json", "provenance.json"}
for row in csv.DictReader(open(os.path.join(run, "ladder.csv"))):
    d = float(row["success_det"])
    if 0.25 <= d <= 0.8 or d >= 0.9:
        keep.add(row["checkpoint"])
with tarfile.open(os.path.join(os.environ["OUT"], "ladder.tgz"), "w:gz") as t:
    for name in sorted(os.listdir(run)):
        if name in keep or name == "tb":
            t.add(os.path.join(run, name), arcname=name)
PY
