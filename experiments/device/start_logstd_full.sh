#!/usr/bin/env bash
# Issue 9: does the gae+ppo cell of seed-v2 reach the reference's final (71.7%) from our start at the reference's
# log-std -1.5? The whole 10-iteration protocol on seeds 1-8, start.pt's network with log-std -1.5, no quality probe
# (it changes only the random stream), 2 CPUs each, 8 trials at once: about 9.5 minutes on the 16-core machine, so
# give it at most 7 seeds per 10-minute call.
#   bash experiments/device/start_logstd_full.sh [CELL] [LOGSTD] [SEEDS...]   (packages staged in /tmp/site)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning" OMP_NUM_THREADS=1
CELL=${1:-gae+ppo}; LS=${2:--1.5}; shift 2 || true
SEEDS=${*:-1 2 3 4 5 6 7 8}
mkdir -p runs/logstd
python3 - "$LS" <<'PY'
import sys, torch
from algorithms.checkpoint import load_policy, save_policy
a, ck = load_policy("experiments/checkpoints/pickcube/start.pt")
with torch.no_grad():
    a.actor_logstd.fill_(float(sys.argv[1]))
save_policy(f"runs/logstd/start-logstd{sys.argv[1]}.pt", a, env_id=ck["env_id"], control_mode=ck["control_mode"], config=ck.get("config"), metrics={})
PY
i=0
for s in $SEEDS; do
  taskset -c $((2 * (i % 8)))-$((2 * (i % 8) + 1)) python3 -m orchestrator finetune --spec experiments/seed-v2.yaml \
    --cell "$CELL" --seed "$s" --quality-every 0 --start-checkpoint "runs/logstd/start-logstd$LS.pt" \
    --out-dir "runs/logstd/$CELL-ls$LS-s$s" --overwrite --no-progress 2>&1 | grep -v -i warn | tail -1 &
  i=$((i + 1)); [ $((i % 8)) = 0 ] && wait
done
wait
python3 - <<'PY' | tee -a "$OUT/start_logstd_full.txt"
import glob
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for d in sorted(glob.glob("runs/logstd/*-s*")):
    ea = EventAccumulator(glob.glob(d + "/tb/*")[0]); ea.Reload()
    sr = [round(100 * e.value, 1) for e in ea.Scalars("eval/success_rate")] if "eval/success_rate" in ea.Tags()["scalars"] else []
    kl = [round(e.value, 2) for e in ea.Scalars("losses/approx_kl")] if "losses/approx_kl" in ea.Tags()["scalars"] else []
    print(f"{d.split('/')[-1]:22s} success {sr}  approx_kl {kl}")
PY
