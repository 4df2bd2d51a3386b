#!/usr/bin/env bash
# Is GAE+PPO's first-update collapse on the seed-v2 protocol (session 3: 2 of 3 device seeds, 0 of 8 CPU runs on the
# dev box) a property of the GPU runs? One iteration of the gae+ppo cell, seeds 1-2, networks on CUDA and on the
# CPU, with and without the quality probe, all at once on the 16-core machine (4 CPUs each). About 3-4 minutes.
#   bash experiments/device/first_update_ablation.sh        (packages staged in /tmp/site)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning" OMP_NUM_THREADS=1
run() {  # name seed device quality_every
  taskset -c "$5" python3 -m orchestrator finetune --spec experiments/seed-v2.yaml --cell gae+ppo --seed "$2" \
    --num-iterations 1 --device "$3" --quality-every "$4" --out-dir "runs/ablation/$1-s$2" --overwrite --no-progress \
    2>&1 | grep -v -i warn | tail -1 | sed "s/^/$1 s$2: /"
}
run cuda 1 cuda 0 0-3 & run cuda 2 cuda 0 4-7 & run cpu 1 cpu 0 8-11 & run cpu 2 cpu 0 12-15 & wait
run cuda-probe 1 cuda 10 0-7 & run cuda-probe 2 cuda 10 8-15 & wait
python3 - <<'PY' | tee "$OUT/first_update_ablation.txt"
import glob
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for d in sorted(glob.glob("runs/ablation/*")):
    ea = EventAccumulator(glob.glob(d + "/tb/*")[0]); ea.Reload()
    last = lambda t: ea.Scalars(t)[-1].value if t in ea.Tags()["scalars"] else float("nan")
    print(f"{d.split('/')[-1]:16s} success {last('eval/success_rate'):.3f}  approx_kl {last('losses/approx_kl'):.3f}  value_mean {last('charts/value_mean'):.3f}")
PY
