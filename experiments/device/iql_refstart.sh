#!/usr/bin/env bash
# Issue 9, seed-v2-refstart's missing cell: an IQL fitted to start-refrecipe.pt's own data, then iql+awr from that
# start (3 seeds), in one device call (a later call may copy the working tree in under running workers: see
# mc16_ablation.sh). The same recipe as seed-v2's iql.pt (experiments/checkpoints/pickcube/provenance.json,
# value_functions: 20,000 stochastic transitions of the start policy on 16 envs, seed 1; expectile 0.7, 10,000 steps).
# The three trials run at once, each on its own 5 CPUs (taskset; rollouts and AWR do not depend on the CPU count).
#   bash experiments/device/iql_refstart.sh [BUDGET_S, default 520]
# Everything comes back in $OUT/iql-refstart/: iql-refrecipe.pt, the logs, and trials.tgz (each trial's folder,
# checkpoint included, so a trial cut by the budget resumes with `finetune ... --out-dir DIR --resume`).
# Packages staged in /tmp/site first (../shared/device/make-bundles.sh, split_bundles.sh).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning" OMP_NUM_THREADS=1
budget=${1:-520}
t0=$(date +%s)
O=${OUT:?}/iql-refstart
R=runs/iql-refstart
mkdir -p "$O" "$R"
START=experiments/checkpoints/pickcube/start-refrecipe.pt
python -m orchestrator collect --policy $START --out $R/start_refrecipe_20k.pt --num-transitions 20000 --num-envs 16 \
  --seed 1 --backend cpu --no-progress > "$O/collect.log" 2>&1 || { tail -5 "$O/collect.log"; exit 1; }
python -m orchestrator pretrain-iql --dataset $R/start_refrecipe_20k.pt --expectile 0.7 --steps 10000 \
  --out "$O/iql-refrecipe.pt" --seed 1 --device cuda --no-progress > "$O/pretrain-iql.log" 2>&1 || { tail -5 "$O/pretrain-iql.log"; exit 1; }
echo "iql fitted after $(( $(date +%s) - t0 )) s"
left=$(( budget - ($(date +%s) - t0) - 20 ))
for s in 1 2 3; do
  c=$(( (s - 1) * 5 ))
  timeout "$left" taskset -c $c-$((c + 4)) python -m orchestrator finetune --spec experiments/seed-v2.yaml --cell iql+awr \
    --seed $s --quality-every 0 --start-checkpoint=$START --iql-checkpoint="$O/iql-refrecipe.pt" \
    --out-dir $R/iqlawr-s$s --no-progress > $R/iqlawr-s$s.log 2>&1 &
done
wait
for s in 1 2 3; do
  echo "seed $s: $(python -c "import json,sys; print(' '.join(f\"{json.loads(l).get('eval/success_rate', float('nan')) * 100:.1f}\" for l in open(sys.argv[1])))" $R/iqlawr-s$s/metrics.jsonl 2>/dev/null)"
done
tar czf "$O/trials.tgz" --exclude='*.pt' -C runs iql-refstart
tar czf "$O/trials-resume.tgz" -C runs $(cd runs && ls -d iql-refstart/iqlawr-s*/checkpoint)
ls -l "$O"
