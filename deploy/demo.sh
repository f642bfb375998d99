#!/usr/bin/env bash
# demo.sh - `make demo`. The cluster demo (coordinator + shards loading data and
# answering queries) arrives with the coordinator issue; until then this shows
# what runs today: clustered data with exact ground truth, and the distance
# kernels this CPU gets.
set -euo pipefail
bin=${1:-bin}
out=${TMPDIR:-/tmp}/shoal-demo
echo "shoal demo: the cluster demo arrives with the coordinator (see README.md)."
echo "shoal demo: generating 20,000 x 96 clustered vectors + exact top-10 into $out"
"$bin/shoal-bench" gen --n 20000 --dim 96 --queries 200 --k 10 --seed 42 --out "$out"
ls -l "$out"
echo "shoal demo: distance kernels on this CPU (dim 96):"
"$bin/shoal-bench" distances --dim 96 --reps 3
