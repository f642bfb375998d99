#!/usr/bin/env bash
# demo.sh - `make demo`: shoal's main job on one machine, as far as it exists.
#
# Today: a real shard process (bin/shoal-shard) on a free loopback port loads a
# dataset through its socket (durable inserts, fsync on), answers the queries
# with measured recall, is stopped and restarted from its checkpoint, and
# answers again. The data is SIFT10K from ../shared/datasets when present,
# else a generated clustered set with exact ground truth.
# The full cluster demo (coordinator in front of several shards, the shoal CLI)
# arrives with the coordinator issue.
set -euo pipefail
bin=${1:-bin}
datasets=${SHOAL_DATASETS:-../shared/datasets}
work=${TMPDIR:-/tmp}/shoal-demo
mkdir -p "$work"

if [[ -f "$datasets/siftsmall/siftsmall_base.fvecs" ]]; then
    base=$datasets/siftsmall/siftsmall_base.fvecs
    queries=$datasets/siftsmall/siftsmall_query.fvecs
    gt=$datasets/siftsmall/siftsmall_groundtruth.ivecs
    echo "shoal demo: SIFT10K (10,000 x 128, 100 queries, exact ground truth)"
else
    echo "shoal demo: $datasets not found; generating 20,000 x 96 clustered vectors"
    "$bin/shoal-bench" gen --n 20000 --dim 96 --queries 200 --k 10 --seed 42 --out "$work/gen"
    base=$work/gen/base.fvecs queries=$work/gen/query.fvecs gt=$work/gen/groundtruth.ivecs
fi

echo "shoal demo: starting a shard, loading through its socket, searching, restarting"
SHOAL_TMP=$work SHOAL_LOG_LEVEL=${SHOAL_LOG_LEVEL:-warn} \
    "$bin/shoal-bench" shard --base "$base" --queries "$queries" --gt "$gt" \
    --batch 2000 --shard-bin "$bin/shoal-shard"
echo "shoal demo: done (the cluster demo arrives with the coordinator: see README.md)"
