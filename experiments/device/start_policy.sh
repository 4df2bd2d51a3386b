#!/usr/bin/env bash
# The V2 start policy on the lent 16-core machine (issue 9): a pretraining ladder from scratch (PPO on the dense
# reward, success not terminal), grown in resumable chunks until it passes 50% deterministic success (or the
# time is up); then `select --roles start` (deterministic 40-50% on 256 episodes, log-std chosen so that the
# stochastic success is within 5 points of it); then the IQL and SARSA Q/V on 20k transitions of the new start.
# Usage: start_policy.sh [MAX_CHUNKS]   (2-minute chunks; outputs in $OUT)
set -uo pipefail
CHUNKS=${1:-4}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
L=runs/pretrain/v2-ladder
for i in $(seq "$CHUNKS"); do
  python3 -m orchestrator pretrain --terminate-on-success false --num-envs 16 --num-steps 128 --update-epochs 8 \
    --num-minibatches 4 --eval-every 5 --eval-episodes 100 --seed 7 --device cuda --backend cpu --out-dir "$L" \
    --max-minutes 2 --no-progress 2>&1 | grep -E "^iter|stopping|rror"
  python3 -c "import pandas as pd,sys; l=pd.read_csv('$L/ladder.csv'); print(l.tail(3).to_string()); sys.exit(0 if (l.success_det >= 0.5).any() else 1)" && break
done
cp "$L/ladder.csv" "$L/provenance.json" "$OUT/"
python3 -m orchestrator select --ladder-dir "$L" --out-dir runs/select-v2 --roles start --num-envs 16 --backend cpu || exit 1
cp runs/select-v2/start.pt runs/select-v2/provenance.json "$OUT/"
cp runs/select-v2/provenance.json "$OUT/select-provenance.json"
python3 -m orchestrator collect --policy runs/select-v2/start.pt --out runs/data/start_v2_20k.pt --num-transitions 20000 --num-envs 16 --seed 1 --no-progress
for tau in 0.7 0.5; do
  name=$([ "$tau" = 0.5 ] && echo sarsa || echo iql)
  python3 -m orchestrator pretrain-iql --dataset runs/data/start_v2_20k.pt --expectile $tau --steps 10000 --out "$OUT/$name.pt" --seed 1 --device cuda --no-progress
done
ls -l "$OUT"
