#!/usr/bin/env bash
# run_route.sh - what a big batch's routing costs the other clients: one
# client's single queries (siftsmall's 100 queries, one per request, over and
# over) while another client searches 100,000 queries in one request, with
# the batch routed on the coordinator's routing thread (the default) and with
# it routed on the loop (--route-inline-macs 1e18 written out: every batch inline,
# as before the routing thread). Used by `make bench-route`.
#
#   bash bench/run_route.sh [BIN]    BIN holds shoal, shoal-shard,
#                                    shoal-coordinator (default build/bin)
#
# Data: siftsmall (10,000 x 128) on 2 shards with nlist $BENCH_ROUTE_NLIST
# (default 4,096), so routing the batch is 100,000 x 4,096 x 128 = 52 G
# multiply-adds; the batch's queries are siftsmall's base rows, ten times
# over, searched with nprobe 4. Loopback ports 7960-7962.
#
# Prints per mode the single queries' p50/p99/max latency while the batch
# ran, the batch's own time and the coordinator's loop lag (stats
# loop_busy_max_ms: its longest turn between two polls), then
#   RESULT route single_p99_ms_loop=<a> single_p99_ms_thread=<b> ratio=<a/b>
#          single_max_ms_loop=<c> single_max_ms_thread=<d>
#          loop_busy_max_ms_loop=<e> loop_busy_max_ms_thread=<f>
# The single queries also share the 2 shards' CPUs with the batch's search, so
# their tail measures the whole machine; the loop lag is the coordinator's part.
set -euo pipefail

cd "$(dirname "$0")/.."

bin=$(realpath "${1:-build/bin}")
datasets=${SHOAL_DATASETS:-../shared/datasets}
sift=$datasets/siftsmall
py=${PYTHON:-/usr/bin/python3}
nlist=${BENCH_ROUTE_NLIST:-4096}
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
    "$bin/shoal" create sift --dim 128 --metric l2 --nlist "$nlist" > /dev/null
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
    "$bin/shoal" status > "$dir/status-before.txt"
    local t0 t1
    t0=$(date +%s.%N)
    "$bin/shoal" -t 600000 search sift "$work/batch.fvecs" -k 10 --batch 100000 --deadline-ms 600000 \
        --nprobe 4 > "$dir/batch.txt"
    t1=$(date +%s.%N)
    "$bin/shoal" status > "$dir/status-after.txt"
    touch "$dir/stop"
    wait "$probe"
    cleanup
    pids=()
    "$py" - "$dir/single.txt" "$name" "$t0" "$t1" "$dir" <<'PY' | tee "$dir/summary.txt"
import json, sys
import numpy as np
lat = np.loadtxt(sys.argv[1])
st = [json.loads(open("%s/status-%s.txt" % (sys.argv[5], w)).readline()) for w in ("before", "after")]
print("%s: batch of 100000 answered in %.2f s; %d single queries meanwhile: p50 %.2f ms, "
      "p99 %.2f ms, max %.2f ms; the loop's longest turn %.1f ms before the batch, %.1f ms "
      "after; turns of 100 ms or more during it: %d" % (
          sys.argv[2], float(sys.argv[4]) - float(sys.argv[3]), len(lat),
          np.percentile(lat, 50), np.percentile(lat, 99), lat.max(),
          st[0]["loop_busy_max_ms"], st[1]["loop_busy_max_ms"],
          st[1]["loop_slow_turns"] - st[0]["loop_slow_turns"]))
with open("%s/loop.txt" % sys.argv[5], "w") as f:
    f.write("%.1f\n" % st[1]["loop_busy_max_ms"])
PY
}

run_mode loop 1000000000000000000
run_mode thread 8388608
"$py" - "$work/loop" "$work/thread" <<'PY'
import sys
import numpy as np
a, b = (np.loadtxt(d + "/single.txt") for d in sys.argv[1:3])
la, lb = (float(open(d + "/loop.txt").read()) for d in sys.argv[1:3])
pa, pb = np.percentile(a, 99), np.percentile(b, 99)
print("RESULT route single_p99_ms_loop=%.2f single_p99_ms_thread=%.2f ratio=%.1f "
      "single_max_ms_loop=%.1f single_max_ms_thread=%.1f loop_busy_max_ms_loop=%.1f "
      "loop_busy_max_ms_thread=%.1f" % (pa, pb, pa / pb, a.max(), b.max(), la, lb))
PY
