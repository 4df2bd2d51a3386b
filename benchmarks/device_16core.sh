#!/usr/bin/env bash
# Issue 10's 16-core measurements on the lent machine, in two calls of at most 10 minutes each
# (packages staged in /tmp/site with ../shared/device/make-bundles.sh). Each part appends its tables to
# benchmarks/RESULTS.md there and copies that file to $OUT.
#   bash benchmarks/device_16core.sh A   # env throughput 16 and 100 envs (packed: driver-stepped, packed-rollout: rollouts inside the workers, AsyncVectorEnv); 4 reference trials at once, 1 iteration
#   bash benchmarks/device_16core.sh B   # one whole reference-scale trial; MC16 re-rollout rate on 100 envs x 5 steps
#     (500 transitions, about 0.36 M simulator steps: a 5,000-transition MC16 estimate is 3.6 M, 17 minutes)
#   bash benchmarks/device_16core.sh C   # MC16 with the re-rollouts inside the workers vs the driver's lockstep (300 transitions)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
T0=$SECONDS
case "${1:?A or B}" in
  A) python3 benchmarks/env_throughput.py --envs 16 100 --workers 16 --layouts packed packed-rollout gym-async --steps 100 --warmup 10 --markdown
     echo "--- A1 done at $((SECONDS - T0)) s"
     python3 benchmarks/reference_trial.py --trials 4 --num-iterations 1 --markdown
     ;;
  B) python3 benchmarks/reference_trial.py --trials 1 --markdown
     echo "--- B1 done at $((SECONDS - T0)) s"
     python3 benchmarks/mc_rerollout.py --num-envs 100 --num-steps ${MC_STEPS:-5} --samples 16 --workers 128 --markdown
     ;;
  C) python3 benchmarks/mc_rerollout.py --num-envs 100 --num-steps ${MC_STEPS:-3} --samples 16 --workers 128 --layouts packed packed-lockstep --markdown
     ;;
esac
echo "--- total $((SECONDS - T0)) s"
cp benchmarks/RESULTS.md "$OUT/"
