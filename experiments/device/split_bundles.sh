#!/usr/bin/env bash
# Split the device bundles (../shared/device/make-bundles.sh: .device/p1.tgz, p2.tgz, p3.tgz) into parts that fit
# one device call beside the working tree: a call carries the tracked tree plus its `carry` paths, 64 MiB in all, and
# the tracked tree alone is over 40 MiB (the committed seed-v2 results). Prints one line per call to make (any order)
# on one warm machine (it goes back after 30 s idle, so make them in one batch):
#   carry [PARTS...]   command: mkdir -p /tmp/parts && cp PARTS /tmp/parts/
# and, in the last call, after its copy:
#   cd /tmp/parts && for p in p1 p2 p3; do cat $p.* | tar xzf - -C /tmp/site; done; cd - && export PYTHONPATH=/tmp/site:$PWD
# Usage, from the project's root:  bash experiments/device/split_bundles.sh   [HEADROOM_MIB, default 2]
set -euo pipefail
[ -f .device/p1.tgz ] && [ -f .device/p2.tgz ] && [ -f .device/p3.tgz ] ||
  { echo "no .device/p{1,2,3}.tgz: run bash ../shared/device/make-bundles.sh first" >&2; exit 2; }
tree=$(git ls-files -z | du -cb --files0-from=- | tail -n 1 | cut -f1)
room=$(( (64 - ${1:-2}) * 1024 * 1024 - tree ))
[ "$room" -gt $((4 * 1024 * 1024)) ] || { echo "the tracked tree ($((tree >> 20)) MiB) leaves under 4 MiB per call" >&2; exit 2; }
rm -rf .device/s && mkdir -p .device/s
for p in p1 p2 p3; do split -b "$room" ".device/$p.tgz" ".device/s/$p."; done
# first fit, largest parts first: small parts share a call
sizes=() parts=()
while read -r s f; do
  for i in "${!sizes[@]}"; do
    if [ $((sizes[i] + s)) -le "$room" ]; then sizes[i]=$((sizes[i] + s)); parts[i]="${parts[i]} $f"; continue 2; fi
  done
  sizes+=("$s"); parts+=("$f")
done < <(stat -c '%s %n' .device/s/* | sort -rn)
for i in "${!parts[@]}"; do echo "carry: ${parts[i]}"; done
echo "(tracked tree $((tree >> 20)) MiB; parts of at most $((room >> 20)) MiB)" >&2
