#!/usr/bin/env bash
# run_route.sh - what a big batch's routing costs the other clients: one
# client's single queries (siftsmall's 100 queries, one per request, over and
# over) while another client searches 100,000 queries in one request, with
# the batch routed on the coordinator's routing thread (the default) and with
# it routed on the loop (--route-inline-macs 4294967295: every batch inline,
# as before the routing thread). Used by `make bench-route`.
#
#   bash bench/run_route.sh [BIN]    BIN holds shoal, shoal-shard,
#                                    shoal-coordinator (default build/bin)
#
# Data: siftsmall (10,000 x 128) on 2 shards with nlist 1,024, so routing the
# batch is 100,000 x 1,024 x 128 = 13 G multiply-adds; the batch's queries
# are siftsmall's base rows, ten times over. Loopback ports 7960-7962.
#
# Prints per mode the single queries' p50/p99/max latency while the batch
# ran and the batch's own time, then
#   RESULT route single_p99_ms_loop=<a> single_p99_ms_thread=<b> ratio=<a/b>
#          single_max_ms_loop=<c> single_max_ms_thread=<d>
set -euo pipefail

cd "$(dirname "$0")/.."

bin=$(realpath "${1:-build/bin}")
datasets=${SHOAL_DATASETS:-../shared/datasets}
sift=$datasets/siftsmall
py=${PYTHON:-/usr/bin/python3}
work=$(realpath -m build/bench-route)
rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

"$py" - "$sift/siftsmall_base.fvecs" "$work/batch.fvecs" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
with open(sys.argv[2], 'wb') as f:
    for _ in range(10):
        f.write(data)
PY

export SHOAL_COORDINATOR=tcp://127.0.0.1:7960
shards=tcp://127.0.0.1:7961,tcp://127.0.0.1:7962

# Runs one mode: $1 its name, $2 the coordinator's --route-inline-macs.
run_mode() {
    local name=$1 macs=$2 dir=$work/$1
    mkdir -p "$dir"
    pids=()
    for i in 1 2; do
        "$bin/shoal-shard" --listen "tcp://127.0.0.1:796$i" --data-dir "$dir/shard$i" \
            --threads 2 --log-level warn > "$dir/shard$i.log" 2>&1 &
        pids+=($!)
    done
    "$bin/shoal-coordinator" --listen "$SHOAL_COORDINATOR" --data-dir "$dir/coord" \
        --shards "$shards" --route-inline-macs "$macs" --recall-sample 0 \
        --log-level warn > "$dir/coord.log" 2>&1 &
    pids+=($!)
    local i
    for i in $(seq 100); do
        "$bin/shoal" -t 1000 ping > /dev/null 2>&1 && break
        sleep 0.1
    done
    "$bin/shoal" create sift --dim 128 --metric l2 --nlist 1024 > /dev/null
    "$bin/shoal" train sift "$sift/siftsmall_base.fvecs" > /dev/null
    "$bin/shoal" load sift "$sift/siftsmall_base.fvecs" > /dev/null
    # single queries from one client while another's batch is routed and searched
    PYTHONPATH=client/python "$py" - "$sift/siftsmall_query.fvecs" "$dir/single.txt" \
        "$dir/stop" <<'PY' &
import os, sys, time
import numpy as np
from shoal import Client
from shoal.vecs import read_fvecs
queries = read_fvecs(sys.argv[1])
c = Client(os.environ["SHOAL_COORDINATOR"], timeout=600)
lat = []
i = 0
while not os.path.exists(sys.argv[3]):
    t = time.perf_counter()
    c.search("sift", queries[i % len(queries)][None, :], 10, nprobe=4)
    lat.append((time.perf_counter() - t) * 1000)
    i += 1
with open(sys.argv[2], "w") as f:
    f.write("\n".join("%.3f" % x for x in lat) + "\n")
PY
    local probe=$!
    sleep 2 # the probe's warm-up: its first queries are not under the batch
    local t0 t1
    t0=$(date +%s.%N)
    "$bin/shoal" -t 600000 search sift "$work/batch.fvecs" -k 10 --batch 100000 --deadline-ms 600000 \
        --nprobe 4 > "$dir/batch.txt"
    t1=$(date +%s.%N)
    touch "$dir/stop"
    wait "$probe"
    cleanup
    pids=()
    "$py" - "$dir/single.txt" "$name" "$t0" "$t1" <<'PY' | tee "$dir/summary.txt"
import sys
import numpy as np
lat = np.loadtxt(sys.argv[1])
print("%s: batch of 100000 answered in %.2f s; %d single queries meanwhile: p50 %.2f ms, "
      "p99 %.2f ms, max %.2f ms" % (sys.argv[2], float(sys.argv[4]) - float(sys.argv[3]),
      len(lat), np.percentile(lat, 50), np.percentile(lat, 99), lat.max()))
PY
}

run_mode loop 4294967295
run_mode thread 8388608
"$py" - "$work/loop/single.txt" "$work/thread/single.txt" <<'PY'
import sys
import numpy as np
a, b = np.loadtxt(sys.argv[1]), np.loadtxt(sys.argv[2])
pa, pb = np.percentile(a, 99), np.percentile(b, 99)
print("RESULT route single_p99_ms_loop=%.2f single_p99_ms_thread=%.2f ratio=%.1f "
      "single_max_ms_loop=%.1f single_max_ms_thread=%.1f" % (pa, pb, pa / pb, a.max(), b.max()))
PY
