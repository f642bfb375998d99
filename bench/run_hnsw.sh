#!/usr/bin/env bash
# run_hnsw.sh - shoal's HNSW index against hnswlib, on the same data, the same
# machine, the same parameters and the same thread count, with shoal's graph
# storing each kind in turn (f32, f16, sq8; the compressed kinds re-rank their
# final pool from the float32 base). Used by `make bench-hnsw`, which first
# builds both programs at -O3 -march=native.
#
#   bash bench/run_hnsw.sh [BIN]     BIN holds shoal-bench and hnswlib-bench
#                                    (default build/native/bin)
#
# Datasets:
#   siftsmall  from ${SHOAL_DATASETS:-../shared/datasets}/siftsmall (skipped
#              with a message when absent);
#   glove50    cosine, from the same folder (skipped when absent);
#   gen-N-iR   clustered, dim 128, intrinsic dimension R, 1000 queries, made
#              once by `shoal-bench gen` into build/bench-data/gen-N-iR-q1000-kK
#              and reused. N is $BENCH_HNSW_N, else 1,000,000, or 200,000 on
#              machines with fewer than 4 cores (a 1M build there takes well
#              over 20 minutes per library). R is $BENCH_HNSW_INTRINSIC_DIM,
#              else 64 (issue 13's set: neighbours less separated than with
#              the generator's default of dim/8 = 16).
#
# Environment: BENCH_HNSW_N (base size; 20000 is a quick run, see `make
# bench-hnsw-quick`), BENCH_HNSW_EF (ef list, default 10,20,40,80,160,320),
# BENCH_HNSW_STORAGE (shoal's kinds, default "f32 f16 sq8"), BENCH_HNSW_REPEAT
# (passes per ef, each program printing the median; default 1),
# BENCH_HNSW_ROUNDS (see run_pair; default 1), BENCH_HNSW_KEEP_INDEX (non-empty:
# keep the saved indexes, $results/NAME.PROG.idx, for further --load runs),
# BENCH_HNSW_INTRINSIC_DIM, SHOAL_DATASETS.
#
# Prints each program's own output, then a side-by-side table per dataset and
# storage kind, and last one line per kind, on the generated set at the
# smallest ef where both reach recall@10 >= 0.95:
#   RESULT hnsw storage=<s> recall=<r> qps_ratio_vs_hnswlib=<x>
#          cpu_qps_ratio_vs_hnswlib=<c> build_ratio_vs_hnswlib=<y>
#          memory_ratio_vs_hnswlib=<z>
# (cpu_qps: queries per second of the searching thread's CPU time, the
# steadier figure on a machine shared with other work.)
set -euo pipefail

cd "$(dirname "$0")/.."

bin=${1:-build/native/bin}
datasets=${SHOAL_DATASETS:-../shared/datasets}
threads=$(nproc)
efs=${BENCH_HNSW_EF:-10,20,40,80,160,320}
storages=${BENCH_HNSW_STORAGE:-f32 f16 sq8}
intrinsic=${BENCH_HNSW_INTRINSIC_DIM:-64}
repeat=${BENCH_HNSW_REPEAT:-1}
rounds=${BENCH_HNSW_ROUNDS:-1}
M=16
ef_construction=200
k=10
seed=1
recall_target=0.95
results=build/bench-hnsw

for prog in shoal-bench hnswlib-bench; do
    if [[ ! -x "$bin/$prog" ]]; then
        echo "run_hnsw: $bin/$prog not found (make bench-hnsw builds it)" >&2
        exit 1
    fi
done
mkdir -p "$results"

# Runs the programs on one dataset, one after the other so they never share
# the cores: shoal once per storage kind, hnswlib once, keeping their output
# in $results/NAME.{shoal-KIND,hnswlib}.txt.
#
# With BENCH_HNSW_ROUNDS=R > 1, each index is built once and saved (--save),
# then R rounds load every index in turn (--load) and sweep it, so that the
# programs take turns through whatever else the machine runs meanwhile; the
# files then hold each ef's median qps and cpu_qps over the rounds (the
# build line is the first run's).
run_pair() {
    local name=$1 base=$2 queries=$3 gt=$4 metric=$5
    local args=(--base "$base" --queries "$queries" --gt "$gt" --metric "$metric" --M "$M"
                --ef-construction "$ef_construction" --ef "$efs" --threads "$threads"
                --k "$k" --seed "$seed" --repeat "$repeat")
    local progs=() prog out r
    for storage in $storages; do
        progs+=("shoal-$storage")
    done
    progs+=(hnswlib)
    local save
    for prog in "${progs[@]}"; do
        echo "== $name: $prog"
        out=$results/$name.$prog.txt
        save=()
        if (( rounds > 1 )); then
            save=(--save "$results/$name.$prog.idx")
        fi
        s_prog "$prog" "${args[@]}" "${save[@]}" | tee "$out"
    done
    (( rounds > 1 )) || return 0
    for (( r = 1; r <= rounds; r++ )); do
        for prog in "${progs[@]}"; do
            echo "== $name: $prog, round $r of $rounds"
            s_prog "$prog" "${args[@]}" --load "$results/$name.$prog.idx" |
                tee "$results/$name.$prog.round$r.txt"
        done
    done
    for prog in "${progs[@]}"; do
        s_merge_rounds "$results/$name.$prog.txt" "$results/$name.$prog".round*.txt
        [[ -n ${BENCH_HNSW_KEEP_INDEX:-} ]] || rm -f "$results/$name.$prog.idx"
    done
}

# Runs one of the programs: shoal-KIND or hnswlib, with the arguments given.
s_prog() {
    local prog=$1
    shift
    if [[ $prog == hnswlib ]]; then
        "$bin/hnswlib-bench" "$@"
    else
        "$bin/shoal-bench" hnsw "$@" --storage "${prog#shoal-}"
    fi
}

# Rewrites FIRST's ef lines with each ef's median qps and cpu_qps over the
# round files (recall and latencies from the round with the median qps).
s_merge_rounds() {
    local first=$1
    shift
    awk '
        function val(line, key,   i, n, f, eq) {
            n = split(line, f, " ")
            for (i = 1; i <= n; i++) {
                eq = index(f[i], "=")
                if (substr(f[i], 1, eq - 1) == key)
                    return substr(f[i], eq + 1)
            }
            return ""
        }
        function median(list,   n, v, i, j, t) {
            n = split(list, v, " ")
            for (i = 1; i <= n; i++)
                for (j = i + 1; j <= n; j++)
                    if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
            return v[int((n + 1) / 2)]
        }
        FNR == 1 { file++ }
        file == 1 { head[++nh] = $0; next }
        /^ef=/ {
            ef = val($0, "ef")
            qps[ef] = qps[ef] " " val($0, "qps")
            cpu[ef] = cpu[ef] " " val($0, "cpu_qps")
            line[ef, val($0, "qps")] = $0
            if (!(ef in seen)) { seen[ef] = 1; order[++ne] = ef }
        }
        END {
            for (i = 1; i <= nh; i++)
                if (head[i] !~ /^ef=/)
                    print head[i]
            for (i = 1; i <= ne; i++) {
                ef = order[i]
                q = median(qps[ef])
                l = line[ef, q]
                sub(/cpu_qps=[^ ]*/, "cpu_qps=" median(cpu[ef]), l)
                sub(/runs=[^ ]*/, "runs=" (split(qps[ef], x, " ")) "x" val(l, "runs"), l)
                print l
            }
        }' "$first" "$@" > "$first.merged"
    mv "$first.merged" "$first"
}

# Side-by-side table of one dataset's result files for one storage kind.
print_table() {
    local name=$1 storage=$2
    awk -v name="$name ($storage)" -v k="$k" '
        # Each line is key=value pairs; vals[file, ef, key] keeps the ef lines.
        {
            delete kv
            for (i = 1; i <= NF; i++) {
                eq = index($i, "=")
                if (eq > 0)
                    kv[substr($i, 1, eq - 1)] = substr($i, eq + 1)
            }
            side = (FILENAME ~ /\.hnswlib\.txt$/) ? "h" : "s"
            if ("n" in kv)
                info = sprintf("n=%s dim=%s queries=%s threads=%s M=%s ef_construction=%s",
                               kv["n"], kv["dim"], kv["queries"], kv["threads"], kv["M"],
                               kv["ef_construction"])
            if ("build_s" in kv) {
                build[side] = kv["build_s"]
                bpv[side] = kv["bytes_per_vector"]
            }
            if ("ef" in kv) {
                ef = kv["ef"]
                if (!((side, ef) in seen)) {
                    seen[side, ef] = 1
                    if (side == "s")
                        order[++nef] = ef
                }
                rec[side, ef] = kv["recall@" k]
                qps[side, ef] = kv["qps"]
                p50[side, ef] = kv["p50_us"]
                p99[side, ef] = kv["p99_us"]
                cpu[side, ef] = kv["cpu_qps"]
            }
        }
        END {
            printf "\n%s (%s)\n", name, info
            # Ratios go through ratio(): a ">" inside a printf list would redirect.
            printf "build_s: shoal %s, hnswlib %s (shoal/hnswlib %.2f)\n", build["s"],
                   build["h"], ratio(build["s"], build["h"])
            printf "bytes/vector: shoal %s, hnswlib %s (shoal/hnswlib %.2f)\n", bpv["s"],
                   bpv["h"], ratio(bpv["s"], bpv["h"])
            printf "%6s | %-48s | %-48s | %s\n", "", "shoal", "hnswlib", "ratios shoal/hnswlib"
            printf "%6s | %8s %10s %10s %8s %8s | %8s %10s %10s %8s %8s | %6s %7s\n", "ef",
                   "recall", "qps", "cpu_qps", "p50_us", "p99_us", "recall", "qps", "cpu_qps",
                   "p50_us", "p99_us", "qps", "cpu_qps"
            for (i = 1; i <= nef; i++) {
                ef = order[i]
                printf "%6s | %8s %10s %10s %8s %8s | %8s %10s %10s %8s %8s | %6.2f %7.2f\n", ef,
                       rec["s", ef], qps["s", ef], cpu["s", ef], p50["s", ef], p99["s", ef],
                       rec["h", ef], qps["h", ef], cpu["h", ef], p50["h", ef], p99["h", ef],
                       ratio(qps["s", ef], qps["h", ef]), ratio(cpu["s", ef], cpu["h", ef])
            }
        }
        function ratio(a, b) { return b > 0 ? a / b : 0 }' "$results/$name.shoal-$storage.txt" "$results/$name.hnswlib.txt"
}

# The RESULT line, from one dataset's files: the smallest ef at which both
# reach the recall target (the largest ef, said so, when none does).
print_result() {
    local name=$1 storage=$2
    awk -v k="$k" -v target="$recall_target" -v storage="$storage" '
        {
            delete kv
            for (i = 1; i <= NF; i++) {
                eq = index($i, "=")
                if (eq > 0)
                    kv[substr($i, 1, eq - 1)] = substr($i, eq + 1)
            }
            side = (FILENAME ~ /\.hnswlib\.txt$/) ? "h" : "s"
            if ("build_s" in kv) {
                build[side] = kv["build_s"]
                bpv[side] = kv["bytes_per_vector"]
            }
            if ("ef" in kv) {
                ef = kv["ef"] + 0
                rec[side, ef] = kv["recall@" k]
                qps[side, ef] = kv["qps"]
                cpu[side, ef] = kv["cpu_qps"]
                if (side == "s")
                    efs[ef] = 1
            }
        }
        END {
            best = -1
            largest = -1
            for (ef in efs) {
                ef += 0
                if (!(("h", ef) in rec))
                    continue
                if (ef > largest)
                    largest = ef
                if (rec["s", ef] >= target && rec["h", ef] >= target && (best < 0 || ef < best))
                    best = ef
            }
            if (best < 0) {
                printf "no ef reaches recall@%s >= %s for both; using the largest, ef=%d\n", k,
                       target, largest
                best = largest
            } else {
                printf "at ef=%d, the smallest ef where both reach recall@%s >= %s:\n", best,
                       k, target
            }
            printf "ratios are shoal/hnswlib: qps > 1 means shoal is faster; build > 1 means shoal builds slower; memory > 1 means shoal uses more bytes per vector\n"
            printf "RESULT hnsw storage=%s recall=%s qps_ratio_vs_hnswlib=%.3f cpu_qps_ratio_vs_hnswlib=%.3f build_ratio_vs_hnswlib=%.3f memory_ratio_vs_hnswlib=%.3f\n",
                   storage, rec["s", best], ratio(qps["s", best], qps["h", best]),
                   ratio(cpu["s", best], cpu["h", best]), ratio(build["s"], build["h"]),
                   ratio(bpv["s"], bpv["h"])
        }
        function ratio(a, b) { return b > 0 ? a / b : 0 }' "$results/$name.shoal-$storage.txt" "$results/$name.hnswlib.txt"
}

echo "run_hnsw: threads=$threads M=$M ef_construction=$ef_construction k=$k seed=$seed ef=$efs" \
    "storage=\"$storages\""

# (a) siftsmall, when the shared datasets have it.
sift="$datasets/siftsmall"
have_sift=0
if [[ -f "$sift/siftsmall_base.fvecs" && -f "$sift/siftsmall_query.fvecs" &&
      -f "$sift/siftsmall_groundtruth.ivecs" ]]; then
    run_pair siftsmall "$sift/siftsmall_base.fvecs" "$sift/siftsmall_query.fvecs" \
        "$sift/siftsmall_groundtruth.ivecs" l2
    have_sift=1
else
    echo "run_hnsw: $sift not found (set SHOAL_DATASETS); skipping siftsmall"
fi
glove="$datasets/glove50"
have_glove=0
if [[ -f "$glove/glove50_base.fvecs" && -f "$glove/glove50_query.fvecs" &&
      -f "$glove/glove50_groundtruth_angular.ivecs" ]]; then
    run_pair glove50 "$glove/glove50_base.fvecs" "$glove/glove50_query.fvecs" \
        "$glove/glove50_groundtruth_angular.ivecs" cosine
    have_glove=1
else
    echo "run_hnsw: $glove not found (set SHOAL_DATASETS); skipping glove50"
fi

# (b) the generated clustered set.
if [[ -n "${BENCH_HNSW_N:-}" ]]; then
    n=$BENCH_HNSW_N
elif (( threads < 4 )); then
    n=200000
    echo "run_hnsw: $threads cores (< 4): generated set of n=200000 instead of 1000000," \
        "which would take over 20 minutes per library here (BENCH_HNSW_N overrides)"
else
    n=1000000
fi
gname=gen-$n-i$intrinsic
gen=build/bench-data/$gname-q1000-k$k   # the name carries every generation parameter
if [[ ! -f "$gen/groundtruth.ivecs" ]]; then
    echo "== generating $gen"
    "$bin/shoal-bench" gen --n "$n" --dim 128 --intrinsic-dim "$intrinsic" --queries 1000 \
        --k "$k" --seed 1 --out "$gen"
else
    echo "run_hnsw: reusing $gen"
fi
run_pair "$gname" "$gen/base.fvecs" "$gen/query.fvecs" "$gen/groundtruth.ivecs" l2

for storage in $storages; do
    if (( have_sift )); then
        print_table siftsmall "$storage"
    fi
    if (( have_glove )); then
        print_table glove50 "$storage"
    fi
    print_table "$gname" "$storage"
done
echo
for storage in $storages; do
    print_result "$gname" "$storage"
done
