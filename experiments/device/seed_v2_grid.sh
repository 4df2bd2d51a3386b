#!/usr/bin/env bash
# The seed-v2 grid on the lent 16-core machine, in pieces that survive the 10-minute call limit: the grid runs in
# its own process session (setsid), so it keeps running between calls while the machine stays warm (a call at
# least every 30 s of idle), and one Tune run covers the whole device session.
#   call 1:  bash experiments/device/seed_v2_grid.sh start 540   # unpack .device/run/run.tgz.part* if carried and resume it
#            (its MC trials then take every CPU but 4: MC_CPUS overrides), else launch; watch 540 s
#   call k:  bash experiments/device/seed_v2_grid.sh watch 560   # watch the live status for up to 560 s
#   last:    bash experiments/device/seed_v2_grid.sh stop        # SIGINT (Tune saves its state), prune, pack into $OUT/$NAME
# What comes back ($OUT/$NAME/run.tgz.part*, 15 MiB parts; grid.log) is committed on main under
# experiments/results/seed-v2/device-state/$NAME/ while the run is unfinished (a local branch or .device/ does not
# survive a new checkout: session 10 lost MC16's state so) and is carried into the next session's `start`, which
# also takes parts from .device/run/. A piece of the grid (NAME=seed-v2-rest CELLS=a,b SEEDS=3 MC_CPUS=12 ... start) runs in its own run
# directory runs/grid/$NAME (`grid --cells/--seeds`); `analyze` pools it with the rest. Pruning keeps what a resume needs: the newest checkpoint of every unfinished trial, none of
# finished ones except the final policy.pt of the cells whose policies the study commits.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
NAME=${NAME:-seed-v2}; RUN=runs/grid/$NAME; PIDF=runs/grid.pid; LOG=runs/grid.log
status() { grep -v -e Warning -e warn "$LOG" 2>/dev/null | grep "^\[grid" | tail -${1:-3}; }
running() { [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }
# until the grid ends or $1 seconds pass (a call that outlasts the grid wastes device time)
wait_grid() { local end=$((SECONDS + $1)); while [ $SECONDS -lt $end ] && running; do sleep 10; done; status 8; }
case "${1:?start|watch|stop}" in
  start)
    mkdir -p runs/grid
    for src in experiments/results/seed-v2/device-state/"$NAME" .device/run; do
      if ls "$src"/run.tgz.part* >/dev/null 2>&1 && [ ! -d "$RUN" ]; then cat "$src"/run.tgz.part* | tar xzf - -C runs/grid; fi
    done
    # a carried run resumes with this machine's CPUs for its MC trials (the spec's 8 re-rollout CPUs were sized for
    # four trials at once on 16 cores; the MC cells that remain run best with the whole machine each)
    # (the spec's CPUs and GPU share for the rest: a run last resumed elsewhere may carry other resources)
    if [ -d "$RUN" ]; then cmd=(resume "$RUN" --cpus-per-trial 4 --gpus-per-trial 0.125 --mc-worker-cpus "${MC_CPUS:-$(( $(nproc) - 4 ))}"); else cmd=(grid experiments/seed-v2.yaml --resume --name "$NAME" ${CELLS:+--cells "$CELLS"} ${SEEDS:+--seeds "$SEEDS"} ${MC_CPUS:+--mc-worker-cpus "$MC_CPUS"}); fi
    # the process writes its own PID: where setsid has to fork (a shell with job control), $! is not the grid's
    running || { setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDF" python3 -m orchestrator "${cmd[@]}" --no-analysis >>"$LOG" 2>&1 </dev/null & }
    sleep 5; wait_grid "${2:-540}" ;;
  watch)
    wait_grid "${2:-560}" ;;
  stop)
    if running; then kill -INT "$(cat "$PIDF")"; for _ in $(seq 90); do running || break; sleep 1; done; fi
    running && { echo "grid still running after 90 s: killing"; kill -KILL -- -"$(cat "$PIDF")" 2>/dev/null; }
    status 4
    python3 - "$RUN" <<'PY'
import json, shutil, sys
from pathlib import Path
keep_policy = {"mc16-expert+awr", "mc1-expert+awr", "gae+ppo"}
for trial in Path(sys.argv[1]).iterdir():
    shutil.rmtree(trial / "trial" / "checkpoint", ignore_errors=True)  # run_trial's copy of the newest Tune checkpoint
    cks = sorted(trial.glob("checkpoint_*"))
    if not cks:
        continue
    rows = [json.loads(l) for l in (trial / "result.json").read_text().splitlines() if l.strip()] if (trial / "result.json").exists() else []
    finished = bool(rows) and rows[-1]["iteration"] >= json.loads((trial / "params.json").read_text())["num_iterations"]
    # an unfinished trial keeps the checkpoint Tune registered (its last result's) and any newer: a stop between a
    # report reaching storage and the driver recording it leaves a newer one Tune does not know, and resumes from
    # the registered one (session 15 emptied that one, keeping only the newest, and the resume failed)
    registered = rows[-1].get("checkpoint_dir_name") if rows else None
    older = [ck for ck in cks if ck.name < registered] if registered else cks[:-1]
    for ck in (cks if finished else older):
        if finished and ck == cks[-1] and trial.name.split("_s")[0] in keep_policy:
            (ck / "trial_state.pt").unlink(missing_ok=True)  # the policy stays for policies/, the resume state goes
            continue
        # an unfinished trial's older checkpoints are emptied, not removed: Tune still lists them and deletes them
        # itself (num_to_keep) when the resumed trial checkpoints, and a missing one fails that checkpoint's handling
        if finished:
            shutil.rmtree(ck)
        else:
            for p in ck.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
PY
    # a folder per piece: one call can stop (pack) a finished piece and the next one it started
    mkdir -p "$OUT/$NAME"; cp "$LOG" "$OUT/$NAME/grid.log"; du -sh "$RUN"
    tar czf "$OUT/$NAME/run.tgz" -C runs/grid "$NAME" && (cd "$OUT/$NAME" && split -b 15M run.tgz run.tgz.part && rm run.tgz); ls -l "$OUT/$NAME" ;;
esac
