#!/usr/bin/env bash
# Issue 9: one-change ablations of the seed-v2 mc16-expert+awr cell (reference: 43.8 -> 81.0% after its first update;
# ours 47.7 -> 50.8%). Every arm is the cell's protocol (experiments/seed-v2.yaml) plus the flags given for it, same
# seed, same CPU share; the arms run at once, each on its own slice of the CPUs (taskset) and GPU, no quality probe.
# The run outlives a call (setsid), so a call at least every 30 s of idle keeps the machine and the arms running.
#   bash experiments/device/mc16_ablation.sh start ITERS SEED 'FLAGS A' 'FLAGS B' ...   e.g.
#        bash experiments/device/mc16_ablation.sh start 2 1 '--start-logstd=-1.5' '--start-logstd=-1.75'
#   bash experiments/device/mc16_ablation.sh watch SECONDS      # until every arm has finished, or SECONDS
#   bash experiments/device/mc16_ablation.sh next SECONDS       # until arm0 saves its next checkpoint (an update
#                                                                  done), or SECONDS; prints which
#   bash experiments/device/mc16_ablation.sh snap NAME          # pack the arms as they are (the runs go on) into
#                                                                  $OUT/NAME/arms.tgz.part*: insurance mid-session
#   bash experiments/device/mc16_ablation.sh report             # each arm's flags and success curve -> $OUT/mc16_ablation.txt
#   bash experiments/device/mc16_ablation.sh stop               # stop the arms, pack them (resume state included)
#                                                                  into $OUT/mc16-ablation/arms.tgz.part* (15 MiB parts)
# Arms longer than a device session: commit the parts (e.g. under experiments/results/seed-v2/device-state/ABL/),
# and in the next session `PARTS=that/folder bash ... start ITERS SEED 'FLAGS A' ...` with the same ITERS, SEED and
# flags: it unpacks the arms and each continues from its last finished iteration (finetune --resume; the trial's
# config must match, so ITERS is the whole run's, not the session's).
# Start and first wait in one call (`start ... ; ... next 560`): in session 25 an arm started by one call lost its env
# workers (ModuleNotFoundError: envs.shared_batch) as the next call copied the working tree in, while they imported.
# Keep the gap between calls under 30 s: after that the call gets a bare machine (watch/next/stop say so, exit 3).
# Packages staged in /tmp/site first, as for seed_v2_grid.sh. About 2.6 M re-rollout steps in the first iteration:
# about 7 minutes on 28 CPUs (session 7); about 15 on 16 vCPUs of the x2 machine, two arms at once (session 8).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning" OMP_NUM_THREADS=1
D=runs/mc16-ablation
# the arms, resume state included, into $OUT/NAME/arms.tgz.part* (15 MiB parts: each fits what a call brings back)
pack() { mkdir -p "${OUT:?}/$1" && tar czf "$OUT/$1/arms.tgz" -C runs "$(basename "$D")" &&
  (cd "$OUT/$1" && split -b 15M arms.tgz arms.tgz.part && rm arms.tgz) && ls -l "$OUT/$1"; }
# a call after more than 30 s idle gets a fresh, bare machine: say so at once rather than wait on arms that are not there
here() { [ -d "$D" ] || { echo "no $D on this machine: a fresh one (the last went back after 30 s idle?); stage and start again"; exit 3; }; }
case "${1:?start|watch|next|snap|report|stop}" in
  watch|next|snap|report|stop) here ;;&
  start)
    ITERS=${2:?iterations}; SEED=${3:?seed}; shift 3
    # (nproc would obey OMP_NUM_THREADS)
    n=$#; cpus=$(getconf _NPROCESSORS_ONLN); per=$((cpus / n > 0 ? cpus / n : 1)); gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
    if [ -n "${PARTS:-}" ]; then
      [ -d "$D" ] && { echo "$D exists: refusing to unpack $PARTS over it"; exit 2; }
      mkdir -p runs && cat "$PARTS"/arms.tgz.part* | tar xzf - -C runs || exit 2
    fi
    mkdir -p "$D"; i=0
    for flags in "$@"; do
      lo=$((i * per)); hi=$((lo + per - 1))
      # an unpacked arm continues (its flags must be the ones it started with), a new one starts
      if [ -f "$D/arm$i/checkpoint/trial_state.pt" ]; then
        [ "$(cat "$D/arm$i.flags")" = "$flags" ] || { echo "arm$i ran with '$(cat "$D/arm$i.flags")', not '$flags'"; exit 2; }
        how=--resume
      else
        how=--overwrite
      fi
      echo "$flags" >"$D/arm$i.flags"
      # shellcheck disable=SC2086  # the flags are words
      CUDA_VISIBLE_DEVICES=$((gpus > 0 ? i % gpus : 0)) setsid nohup taskset -c "$lo-$hi" python3 -m orchestrator finetune \
        --spec experiments/seed-v2.yaml --cell mc16-expert+awr --seed "$SEED" --num-iterations "$ITERS" --quality-every 0 \
        $flags --out-dir "$D/arm$i" $how --no-progress >>"$D/arm$i.log" 2>&1 </dev/null &
      i=$((i + 1))
    done
    sleep 5; tail -n 2 "$D"/arm*.log ;;
  watch)
    end=$((SECONDS + ${2:-560}))
    while [ $SECONDS -lt $end ] && pgrep -f "out-dir $D/arm" >/dev/null; do sleep 10; done
    tail -n 1 "$D"/arm*.log ;;
  next)
    # the checkpoint seen last is remembered across calls (a call ends at the device's per-call limit)
    f="$D/arm0/checkpoint/trial_state.pt" seen=/tmp/mc16-ablation.seen  # per machine: a fresh one starts from now
    mtime() { stat -c %Y "$f" 2>/dev/null || echo none; }  # none: a new arm has saved no checkpoint yet
    [ -f "$seen" ] || mtime >"$seen"
    end=$((SECONDS + ${2:-560}))
    while [ $SECONDS -lt $end ] && [ "$(mtime)" = "$(cat "$seen")" ]; do
      pgrep -f "out-dir $D/arm0" >/dev/null || { echo "next: arm0 is not running"; tail -n 5 "$D/arm0.log"; exit 4; }
      sleep 10
    done
    if [ "$(mtime)" != "$(cat "$seen")" ]; then
      sleep 20  # the trial writes its checkpoint files one after the other
      mtime >"$seen"; echo "next: arm0 saved a checkpoint at $(date -u +%H:%M:%S)"
    else
      echo "next: no new checkpoint after ${2:-560} s"
    fi
    tail -n 1 "$D"/arm*.log ;;
  snap)
    pack "${2:?name}" ;;
  report)
    python3 - "$D" <<'PY' | tee -a "${OUT:-.}/mc16_ablation.txt"
import glob, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for d in sorted(glob.glob(sys.argv[1] + "/arm*/")):
    flags = open(d.rstrip("/") + ".flags").read().strip()
    if not glob.glob(d + "tb/*"):
        print(f"{flags:30s} no results"); continue
    ea = EventAccumulator(d + "tb"); ea.Reload()  # the folder: a resumed arm has one event file per session
    tags = ea.Tags()["scalars"]
    curve = lambda k: [round(100 * e.value, 1) for e in ea.Scalars(k)] if k in tags else []
    print(f"{flags:30s} success {curve('eval/success_rate')}  train {curve('charts/train_success')}")
PY
    # the arms' configs, logs and TensorBoard files come back too (a few hundred KB), to commit beside the README
    [ -n "${OUT:-}" ] && tar czf "$OUT/mc16_ablation_arms.tgz" "$D"/arm*.flags "$D"/arm*.log "$D"/arm*/config.json "$D"/arm*/tb 2>/dev/null
    ;;
  stop)
    # an arm keeps what its last finished iteration saved; the iteration under way is lost (and redone on resume).
    # SIGTERM to each arm's process group (setsid: the arm and its env workers): a background job ignores SIGINT
    groups() { for pid in $(pgrep -f "out-dir $D/arm"); do ps -o pgid= -p "$pid"; done | sort -u; }
    for g in $(groups); do kill -TERM -- "-$g"; done
    for _ in $(seq 60); do pgrep -f "out-dir $D/arm" >/dev/null || break; sleep 1; done
    for g in $(groups); do kill -KILL -- "-$g"; done
    for f in "$D"/arm*.log; do tail -n 1 "$f"; done
    pack mc16-ablation ;;
esac
