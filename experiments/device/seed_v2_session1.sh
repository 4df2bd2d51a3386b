#!/usr/bin/env bash
# Session 1 of issue 9 on the lent 16-core machine, one call (about 9.5 minutes):
#  1. the start policy: the shipped start's weights (ladder checkpoint 32; its ladder is gone, and regrowing one
#     from scratch did not pass 1% in 370k env steps here) with the log-std that `select` picks so that the
#     stochastic success is within 5 points of the deterministic one;
#  2. IQL and SARSA Q/V on 20k transitions of that policy;
#  3. the self-cloning diagnostic on the seed-v2 protocol (gae+awr cell, 10 iterations);
#  4. the seed-v2 grid until the deadline (Tune state saved on SIGINT), analysed, and its run directory packed
#     for the next session (run.tgz.part*).
set -uo pipefail
T0=$SECONDS; BUDGET=${1:-560}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
CK=experiments/checkpoints/pickcube
L=runs/ladder-v1; mkdir -p $L
cp $CK/start.pt $L/ckpt_00032.pt
printf 'iteration,env_steps,wall_time,success_det,success_stoch,eval_episodes,checkpoint\n32,819200,0,0.5234375,0.29296875,256,ckpt_00032.pt\n' > $L/ladder.csv
python3 -m orchestrator select --ladder-dir $L --out-dir runs/select-v2 --roles start --start-min 0.40 --start-max 0.55 \
  --num-envs 16 --backend cpu 2>&1 | grep -v Warn | tee "$OUT/select.log" || exit 1
cp runs/select-v2/start.pt $CK/start.pt && cp runs/select-v2/start.pt runs/select-v2/provenance.json "$OUT/"
python3 -m orchestrator collect --policy $CK/start.pt --out runs/data/start_v2_20k.pt --num-transitions 20000 --num-envs 16 --seed 1 --no-progress
for tau in 0.7 0.5; do
  name=$([ "$tau" = 0.5 ] && echo sarsa || echo iql)
  python3 -m orchestrator pretrain-iql --dataset runs/data/start_v2_20k.pt --expectile $tau --steps 10000 --out $CK/$name.pt --seed 1 --device cuda --no-progress
  cp $CK/$name.pt "$OUT/"
done
echo "start policy + Q/V: $((SECONDS - T0)) s"
python3 -m orchestrator selfclone --spec experiments/seed-v2.yaml --cell gae+awr --device cuda --out-dir runs/selfclone-v2 --no-progress 2>&1 \
  | grep -v Warn | tee "$OUT/selfclone.log"
echo "self-cloning: $((SECONDS - T0)) s"
LEFT=$((BUDGET - (SECONDS - T0) - 45))
timeout -s INT -k 30 "$LEFT" python3 -m orchestrator grid experiments/seed-v2.yaml --resume --no-analysis 2>&1 | tail -5
python3 -m orchestrator analyze runs/grid/seed-v2 2>&1 | tail -25
tar czf "$OUT/run.tgz" -C runs/grid seed-v2 && (cd "$OUT" && split -b 15M run.tgz run.tgz.part && rm run.tgz)
echo "total: $((SECONDS - T0)) s"; ls -l "$OUT"
