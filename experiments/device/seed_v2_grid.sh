#!/usr/bin/env bash
# One time-limited piece of the seed-v2 grid on the lent 16-core machine, resumed across calls.
# Usage: seed_v2_grid.sh SECONDS.  Bring a previous piece's run directory along (carry run.tgz.part* under
# .device/run/); it comes back in $OUT as run.tgz.part* (15 MiB parts), with the analysis.
set -uo pipefail
T0=$SECONDS; BUDGET=${1:-480}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning"
mkdir -p runs/grid
ls .device/run/run.tgz.part* >/dev/null 2>&1 && cat .device/run/run.tgz.part* | tar xzf - -C runs/grid
timeout -s INT -k 30 $((BUDGET - 40)) python3 -m orchestrator grid experiments/seed-v2.yaml --resume --no-analysis 2>&1 | tail -4
python3 -m orchestrator analyze runs/grid/seed-v2 2>&1 | tail -30
cp runs/grid/seed-v2/analysis/report.md runs/grid/seed-v2/analysis/summary.csv "$OUT/" 2>/dev/null
tar czf "$OUT/run.tgz" -C runs/grid seed-v2 && (cd "$OUT" && split -b 15M run.tgz run.tgz.part && rm run.tgz)
echo "total: $((SECONDS - T0)) s"; ls -l "$OUT"
