#!/usr/bin/env bash
# run_scale.sh - how the cluster scales with its shard count: one generated
# set loaded into clusters of 1, 2, 4 and 8 shard processes (the same
# coordinator, the same nlist), each swept over nprobe x ef by
# `shoal-bench cluster`, which also builds one in-process HNSW of the same
# data and compares them at recall@10 >= 0.95. Used by `make bench-scale`.
#
#   bash bench/run_scale.sh [BIN]    BIN holds shoal-bench, shoal-shard and
#                                    shoal-coordinator (default build/bin)
#
# Environment: BENCH_SCALE_N (base size, default 1,000,000; generated once
# into build/bench-data/gen-N-iR-q1000-k10 and reused), BENCH_SCALE_SHARDS
# (default "1 2 4 8"), BENCH_SCALE_NLIST (default 1024), BENCH_SCALE_INTRINSIC
# (the generator's intrinsic dimension; default 64, issue 14's harder set;
# 0: the generator's default), BENCH_SCALE_NPROBE (default 1,2,4,8,16),
# BENCH_SCALE_REUSE (non-empty: a shard count whose log exists, from a run on
# the same network, is not run again), BENCH_SCALE_HOSTS (1: `shoal-bench
# cluster --hosts`, each shard and the coordinator on a network namespace host
# of its own, the client on the controller host; needs root; default: processes
# on loopback).
#
# Writes build/bench-scale/shards-S.log per shard count and prints per count
# the RESULT line of that run, then a table of shards touched per query
# against nprobe, and last
#   RESULT scale n=<N> nlist=<L> shards=<S> recall=<r> shards_per_query=<q>
#          batch_qps_ratio_vs_inprocess=<b> network=loopback|hosts
#                                                (one line per shard count)
# `make bench-scale-plot` draws docs/img/scale-*.png from the logs.
# The network is loopback by default and namespace hosts (veth pairs and a
# bridge) with BENCH_SCALE_HOSTS=1; either way every shard is a process of
# this machine and all of them share its cores (docs/scaling.md).
set -euo pipefail

cd "$(dirname "$0")/.."

bin=$(realpath "${1:-build/bin}")
n=${BENCH_SCALE_N:-1000000}
shard_counts=${BENCH_SCALE_SHARDS:-1 2 4 8}
nlist=${BENCH_SCALE_NLIST:-1024}
intrinsic=${BENCH_SCALE_INTRINSIC:-64}
nprobes=${BENCH_SCALE_NPROBE:-1,2,4,8,16}
case "${BENCH_SCALE_HOSTS:-0}" in
    0) network=loopback network_opt=() ;;
    1) network=hosts network_opt=(--hosts) ;;
    *) echo "run_scale: BENCH_SCALE_HOSTS=$BENCH_SCALE_HOSTS: expected 1 or 0" >&2; exit 2 ;;
esac
out=build/bench-scale
mkdir -p "$out" build/bench-data

if [[ "$intrinsic" == 0 ]]; then
    data=build/bench-data/gen-$n-q1000-k10
    gen_extra=()
else
    data=build/bench-data/gen-$n-i$intrinsic-q1000-k10
    gen_extra=(--intrinsic-dim "$intrinsic")
fi
if [[ ! -f "$data/groundtruth.ivecs" ]]; then
    echo "== generating $data"
    "$bin/shoal-bench" gen --n "$n" --dim 128 --queries 1000 --k 10 --seed 1 \
        "${gen_extra[@]}" --out "$data"
fi

# The network a log's run used: its RESULT line's network= (logs from before
# that key are loopback runs).
log_network() {
    awk '/^RESULT cluster/ { w = "loopback"
             for (i = 3; i <= NF; i++) if ($i ~ /^network=/) { sub(/^network=/, "", $i); w = $i } }
         END { print w }' "$1"
}

mkdir -p build/tmp
for s in $shard_counts; do
    if [[ -n "${BENCH_SCALE_REUSE:-}" && -f "$out/shards-$s.log" ]] &&
        grep -q '^RESULT cluster' "$out/shards-$s.log" &&
        [[ "$(log_network "$out/shards-$s.log")" == "$network" ]]; then
        echo "== $s shard(s): reusing $out/shards-$s.log"
        grep '^RESULT' "$out/shards-$s.log"
        continue
    fi
    echo "== $s shard(s), nlist $nlist, $data, network $network"
    SHOAL_TMP=$(realpath build/tmp) SHOAL_LOG_LEVEL=${SHOAL_LOG_LEVEL:-warn} \
        "$bin/shoal-bench" cluster --base "$data/base.fvecs" --queries "$data/query.fvecs" \
        --gt "$data/groundtruth.ivecs" --shards "$s" --nlist "$nlist" --reps 3 \
        --nprobe-list "$nprobes" --shard-bin "$bin/shoal-shard" \
        --coordinator-bin "$bin/shoal-coordinator" "${network_opt[@]}" \
        > "$out/shards-$s.log" 2>&1 || {
        echo "run_scale: $s shards failed; see $out/shards-$s.log" >&2
        tail -5 "$out/shards-$s.log" >&2
        exit 1
    }
    grep '^RESULT' "$out/shards-$s.log"
done

echo
echo "shards touched per query (mean over the queries) by nprobe:"
printf '%8s' "shards"
IFS=, read -r -a probes <<< "$nprobes"
for p in "${probes[@]}"; do printf '%10s' "nprobe=$p"; done
echo
for s in $shard_counts; do
    printf '%8s' "$s"
    for p in "${probes[@]}"; do
        v=$(awk -v p="$p" '$1 == "sweep" && $2 == "cluster" && $3 == "nprobe=" p {
                for (i = 4; i <= NF; i++) if ($i ~ /^shards_per_query=/) { sub(/.*=/, "", $i); v = $i }
            } END { print (v == "" ? "-" : v) }' "$out/shards-$s.log")
        printf '%10s' "$v"
    done
    echo
done
echo
for s in $shard_counts; do
    awk -v s="$s" -v n="$n" -v l="$nlist" '/^RESULT cluster/ {
        r = q = b = ""
        w = "loopback"
        for (i = 3; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "recall") r = kv[2]
            if (kv[1] == "shards_per_query") q = kv[2]
            if (kv[1] == "batch_qps_ratio_vs_inprocess") b = kv[2]
            if (kv[1] == "network") w = kv[2]
        }
        printf "RESULT scale n=%s nlist=%s shards=%s recall=%s shards_per_query=%s batch_qps_ratio_vs_inprocess=%s network=%s\n", n, l, s, r, q, b, w
    }' "$out/shards-$s.log"
done
