#!/usr/bin/env bash
# demo.sh - `make demo`: shoal's main job end to end on one machine.
#
#   bash deploy/demo.sh [BIN]     run the demo with the programs in BIN (default bin)
#   bash deploy/demo.sh stop      stop a cluster that DEMO_KEEP=1 left running
#
# Starts three bin/shoal-shard and one bin/shoal-coordinator on loopback, each
# with its data and log under DEMO_DIR, creates a collection with the shoal
# CLI, trains its IVF centroids, loads SIFT10K from SHOAL_DATASETS (or, when
# absent, a generated 100,000 x 128 clustered set with exact ground truth),
# runs the queries with --gt and prints recall@10 and throughput, shows the
# command that queries the collection again, then stops every process with
# SIGTERM. Exits non-zero when a step fails or recall@10 < RECALL_MIN.
#
# Environment:
#   SHOAL_DATASETS  where siftsmall/ is looked for (default ../shared/datasets)
#   DEMO_DIR        data and logs, wiped at start (default build/demo)
#   DEMO_PORT       the coordinator's port; shards use the next three
#                   (default 7700; when one is taken, free ports are picked)
#   DEMO_KEEP=1     leave the cluster running at the end (stop: demo.sh stop)
#
# Every process this script starts is stopped on any exit (trap), unless the
# demo succeeded with DEMO_KEEP=1. Their pids are in DEMO_DIR/pids.
set -euo pipefail

BIN=${1:-bin}
DATASETS=${SHOAL_DATASETS:-../shared/datasets}
DEMO_DIR=${DEMO_DIR:-build/demo}
DEMO_PORT=${DEMO_PORT:-7700}
DEMO_KEEP=${DEMO_KEEP:-0}
NSHARDS=3
COLL=demo
K=10
RECALL_MIN=0.9
READY_WAIT_S=60   # for each process to bind and recover
STOP_WAIT_S=60    # for each process to checkpoint and exit after SIGTERM
MARKER=.shoal-demo

PIDS=()           # processes started by this run, coordinator last
NAMES=()          # their names, for messages
STOPPED=0         # set once stop_cluster has run
INTERRUPTED=0     # Ctrl-C: the processes got SIGINT too, so ours is their second signal

say() { printf 'shoal demo: %s\n' "$*"; }
die() { printf 'shoal demo: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# True when something accepts connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME LOG PROGRAM ARGS...: runs PROGRAM in the background, output to LOG.
start() {
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    echo "$! $name" >>"$DEMO_DIR/pids"
}

# wait_ready NAME PID READY_FILE LOG: waits for the ready file; prints the endpoint.
wait_ready() {
    local name=$1 pid=$2 ready=$3 log=$4 i
    for ((i = 0; i < READY_WAIT_S * 10; i++)); do
        if [[ -s $ready ]]; then
            head -n 1 "$ready"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 5 "$log" >&2 || true
            die "$name exited before it was ready (log: $log)"
        fi
        sleep 0.1
    done
    die "$name was not ready after ${READY_WAIT_S}s (log: $log)"
}

# stop_pid NAME PID: SIGTERM, bounded wait, SIGKILL after that. Fails when the
# process did not exit 0 by itself.
stop_pid() {
    local name=$1 pid=$2 i rc=0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        say "$name did not stop in ${STOP_WAIT_S}s: killed"
        return 1
    fi
    wait "$pid" 2>/dev/null || rc=$?
    if ((rc != 0 && INTERRUPTED == 0)); then
        say "$name exited with status $rc after SIGTERM"
        return 1
    fi
}

# Stops every process this run started: the coordinator first, then the shards.
stop_cluster() {
    local i failed=0
    ((STOPPED == 0)) || return 0
    STOPPED=1
    ((${#PIDS[@]} > 0)) || return 0
    say "stopping the cluster (SIGTERM)"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${NAMES[i]}" "${PIDS[i]}" || failed=1
    done
    rm -f "$DEMO_DIR/pids"
    return "$failed"
}

on_exit() {
    local rc=$?
    if ((rc == 0)) && [[ $DEMO_KEEP == 1 ]]; then
        say "DEMO_KEEP=1: the cluster keeps running (logs in $DEMO_DIR/*.log)"
        local env=''
        [[ $DEMO_DIR == build/demo ]] || env="DEMO_DIR=$DEMO_DIR "
        say "stop it with: ${env}bash deploy/demo.sh stop"
        say "(or: kill -TERM $(cut -d' ' -f1 "$DEMO_DIR/pids" | tr '\n' ' ' | sed 's/ $//'))"
        exit 0
    fi
    stop_cluster || { ((rc != 0)) || rc=1; }
    exit "$rc"
}

# Processes a previous DEMO_KEEP=1 run left in DEMO_DIR: SIGTERM each that is
# still a shoal program (a pid may have been reused by something else).
stop_previous() {
    local pid name i
    [[ -f $DEMO_DIR/pids ]] || return 0
    while read -r pid name; do
        if grep -qa 'shoal-' "/proc/$pid/cmdline" 2>/dev/null; then
            say "stopping $name (pid $pid) left running by an earlier demo"
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        fi
    done < <(tac "$DEMO_DIR/pids")
    rm -f "$DEMO_DIR/pids"
}

# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------

check_programs() {
    local p
    for p in shoal-shard shoal-coordinator shoal shoal-bench; do
        [[ -x $BIN/$p ]] || die "$BIN/$p not found: build it first (make)"
    done
}

# Wipes DEMO_DIR, but only when it is one this script made (or empty).
fresh_dir() {
    [[ -n $DEMO_DIR && $DEMO_DIR != / ]] || die "DEMO_DIR must name a folder, got \"$DEMO_DIR\""
    if [[ -d $DEMO_DIR && ! -f $DEMO_DIR/$MARKER ]] && [[ -n $(ls -A "$DEMO_DIR") ]]; then
        die "$DEMO_DIR exists and was not made by the demo: set DEMO_DIR to another folder"
    fi
    stop_previous
    rm -rf "$DEMO_DIR"
    mkdir -p "$DEMO_DIR"
    touch "$DEMO_DIR/$MARKER"
}

# Sets BASE, QUERIES, GT, NLIST, TRAIN_ROWS and DATA_NAME.
pick_data() {
    local sift=$DATASETS/siftsmall
    if [[ -f $sift/siftsmall_base.fvecs && -f $sift/siftsmall_query.fvecs &&
        -f $sift/siftsmall_groundtruth.ivecs ]]; then
        BASE=$sift/siftsmall_base.fvecs
        QUERIES=$sift/siftsmall_query.fvecs
        GT=$sift/siftsmall_groundtruth.ivecs
        NLIST=64
        TRAIN_ROWS=10000
        DATA_NAME="SIFT10K (10,000 x 128, 100 queries, exact ground truth)"
        return
    fi
    # The same files `make bench-shard` makes for BENCH_SHARD_N=100000.
    local gen=build/bench-data/gen-100000-q1000-k10
    if [[ ! -f $gen/groundtruth.ivecs ]]; then
        say "$sift not found: generating 100,000 x 128 clustered vectors into $gen"
        "$BIN/shoal-bench" gen --n 100000 --dim 128 --queries 1000 --k 10 --seed 1 \
            --out "$gen" || die "shoal-bench gen failed"
    fi
    BASE=$gen/base.fvecs
    QUERIES=$gen/query.fvecs
    GT=$gen/groundtruth.ivecs
    NLIST=256
    TRAIN_ROWS=50000
    DATA_NAME="generated (100,000 x 128 clustered, 1,000 queries, exact ground truth)"
}

# Sets PORTS (coordinator first): DEMO_PORT.. when all are free, else "*".
pick_ports() {
    local p busy=''
    PORTS=()
    for ((p = DEMO_PORT; p <= DEMO_PORT + NSHARDS; p++)); do
        port_busy "$p" && busy+=" $p"
        PORTS+=("$p")
    done
    if [[ -n $busy ]]; then
        say "port(s)$busy on 127.0.0.1 in use: letting the system pick free ports"
        say "(set DEMO_PORT to use another fixed range)"
        PORTS=()
        for ((p = 0; p <= NSHARDS; p++)); do PORTS+=("*"); done
    fi
}

# Starts the shards, then the coordinator; sets COORD to its endpoint.
start_cluster() {
    local i dir endpoint threads shards=''
    local -a spids=()
    threads=$(($(nproc) / NSHARDS))
    ((threads >= 1)) || threads=1
    for ((i = 0; i < NSHARDS; i++)); do
        dir=$DEMO_DIR/shard$i
        start "shard $i" "$dir.log" "$BIN/shoal-shard" --listen "tcp://127.0.0.1:${PORTS[i + 1]}" \
            --data-dir "$dir" --ready-file "$dir.ready" --threads "$threads" --log-level info
        spids+=("${PIDS[-1]}")
    done
    for ((i = 0; i < NSHARDS; i++)); do
        dir=$DEMO_DIR/shard$i
        endpoint=$(wait_ready "shard $i" "${spids[i]}" "$dir.ready" "$dir.log")
        say "shard $i ready at $endpoint (data $dir, log $dir.log)"
        shards+=${shards:+,}$endpoint
    done
    dir=$DEMO_DIR/coordinator
    start coordinator "$dir.log" "$BIN/shoal-coordinator" --listen "tcp://127.0.0.1:${PORTS[0]}" \
        --data-dir "$dir" --shards "$shards" --ready-file "$dir.ready" --log-level info
    COORD=$(wait_ready coordinator "${PIDS[-1]}" "$dir.ready" "$dir.log")
    say "coordinator ready at $COORD (catalog $dir, log $dir.log)"
}

# cli ARGS...: the shoal CLI against the demo's coordinator, echoed first.
cli() {
    printf '  $ %s\n' "$BIN/shoal -c $COORD $*"
    "$BIN/shoal" -c "$COORD" "$@"
}

load_and_search() {
    say "creating collection \"$COLL\" (dim 128, l2, nlist $NLIST), training, loading"
    cli create "$COLL" --dim 128 --metric l2 --nlist "$NLIST" || die "create failed"
    cli train "$COLL" "$BASE" --max-rows "$TRAIN_ROWS" || die "train failed"
    cli load "$COLL" "$BASE" --batch 10000 </dev/null || die "load failed"
    local status
    status=$("$BIN/shoal" -c "$COORD" status) || die "status failed"
    say "vectors per shard: $(grep -o '"shard_counts": {[^}]*}' <<<"$status" | head -n 1 |
        sed 's/"shard_counts": //' || true)"

    say "searching every query, one per request, with exact ground truth"
    local line recall
    printf '  $ %s\n' "$BIN/shoal -c $COORD search $COLL $QUERIES -k $K --gt $GT"
    line=$("$BIN/shoal" -c "$COORD" search "$COLL" "$QUERIES" -k "$K" --gt "$GT") ||
        die "search failed"
    printf '%s\n' "$line"
    recall=$(sed -n "s/.*recall@$K=\([0-9.]*\).*/\1/p" <<<"$line" | tail -n 1)
    [[ -n $recall ]] || die "no recall@$K in the search output"
    if ! awk -v r="$recall" -v min="$RECALL_MIN" 'BEGIN { exit !(r >= min) }'; then
        die "recall@$K = $recall is below $RECALL_MIN"
    fi
    say "recall@$K = $recall (>= $RECALL_MIN)"
}

show_next_steps() {
    say "query it again (while the cluster runs) with:"
    printf '  %s\n' "$BIN/shoal -c $COORD search $COLL $QUERIES -k $K --gt $GT"
    printf '  %s\n' "SHOAL_COORDINATOR=$COORD $BIN/shoal status"
    if [[ $DEMO_KEEP != 1 ]]; then
        say "(the cluster stops now; DEMO_KEEP=1 make demo leaves it running)"
    fi
}

main() {
    if [[ ${1:-} == stop ]]; then
        stop_previous
        say "stopped"
        return 0
    fi
    trap on_exit EXIT
    trap 'INTERRUPTED=1; exit 130' INT
    trap 'exit 143' TERM
    check_programs
    fresh_dir
    pick_data
    pick_ports
    say "data: $DATA_NAME"
    say "cluster: 1 coordinator + $NSHARDS shards on 127.0.0.1, data and logs in $DEMO_DIR"
    start_cluster
    load_and_search
    show_next_steps
    if [[ $DEMO_KEEP != 1 ]]; then
        stop_cluster || die "the cluster did not stop cleanly (logs in $DEMO_DIR)"
        say "done: every process stopped cleanly"
    fi
}

main "$@"
