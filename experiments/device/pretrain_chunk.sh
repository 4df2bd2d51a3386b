#!/usr/bin/env bash
# One time-limited chunk of the pretraining ladder on the lent 16-core GPU machine (see README "Shipped policies").
# The run directory travels in .run/pretrain (carried); what is worth keeping comes back as $OUT/ladder.tgz:
# state.pt (to resume), ladder.csv, provenance, TensorBoard logs, and the checkpoints that could be selected.
set -euo pipefail
MIN=${1:-8}
RUN=.run/pretrain
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p "$RUN"
nproc; python3 -c "import torch; print(torch.cuda.get_device_name(0))"
python3 -m orchestrator pretrain --num-envs 16 --num-steps 64 --update-epochs 8 --num-minibatches 4 \
  --total-timesteps 3000000 --eval-every 64 --eval-episodes 100 --device cuda --seed 1 \
  --out-dir "$RUN" --max-minutes "$MIN" --no-progress || echo "pretrain exited $?"
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
ls -la "$OUT"
