#!/usr/bin/env bash
# run_flat.sh - shoal's exact CPU search (common/flat.h: OpenBLAS GEMM and a
# fused top-k) against Faiss's exact index (IndexFlatL2), on the same data, the
# same machine and the same thread count, one program after the other. Used by
# `make bench-flat`, which first builds shoal-bench at -O3 -march=native and at
# the default -O2.
#
#   bash bench/run_flat.sh [BIN] [O2_BIN]   BIN holds the native shoal-bench
#                                           (default build/native/bin); O2_BIN
#                                           the default build's (default bin)
#
# What is compared: shoal built -O3 -march=native against Debian's
# python3-faiss, a generic (baseline x86-64) build of Faiss, run by Debian's
# /usr/bin/python3; both compute the distances with the same OpenBLAS sgemm
# when the libblas.so.3 alternative is OpenBLAS. The nq=10000 k=10 row also
# runs shoal's -O2 binary, whose distance kernels are chosen at run time.
#
# Faiss runs with OMP_WAIT_POLICY=PASSIVE. Its batch path alternates OpenMP
# loops (norms, top-k) with sgemm calls, and Debian's OpenBLAS runs its own
# pthreads: with OpenMP's default spin-wait, the idle OpenMP threads spin on
# the cores OpenBLAS needs, and on 2 cores Faiss lost 2-20x at nq >= 100. The
# passive policy is the peer at its best; the nq=10000 k=10 row also runs
# Faiss with its defaults, as a user who sets nothing would get it.
#
# Datasets:
#   siftsmall  from ${SHOAL_DATASETS:-../shared/datasets}/siftsmall (skipped
#              with a message when absent);
#   gen-200000 clustered, 200,000 x 128, made by `shoal-bench gen` into
#              build/bench-data/gen-200000-q10000-k100 (10,000 queries, ground truth k=100)
#              unless it is there already, as bench-hnsw leaves it (1,000
#              queries, k=10).
# Batches larger than the query file repeat its queries; recall is measured
# over the distinct ones. A k larger than the ground truth's is run without
# recall ("-" in the table).
#
# Rows: nq in 1 10 100 1000 10000 at k=10, and nq=10000 at k=100; every time
# is the median of 5 timed searches after one warm-up.
#
# Prints each program's own output, then a side-by-side table per dataset,
# and last one line, on the generated set:
#   RESULT flat nq=10000 k=10 qps=<shoal> qps_ratio_vs_faiss=<x> recall=<r>
set -euo pipefail

cd "$(dirname "$0")/.."

bin=${1:-build/native/bin}
o2_bin=${2:-bin}
datasets=${SHOAL_DATASETS:-../shared/datasets}
python=/usr/bin/python3
threads=$(nproc)
reps=5
metric=l2
n=200000
results=build/bench-flat
# Each row is nq:k.
rows=(1:10 10:10 100:10 1000:10 10000:10 10000:100)
o2_row=10000:10

for prog in "$bin/shoal-bench" "$o2_bin/shoal-bench"; do
    if [[ ! -x "$prog" ]]; then
        echo "run_flat: $prog not found (make bench-flat builds it)" >&2
        exit 1
    fi
done
if ! "$python" -c 'import faiss, numpy' 2>/dev/null; then
    echo "run_flat: $python cannot import faiss and numpy (make bench-deps installs" \
        "python3-faiss python3-numpy)" >&2
    exit 1
fi
mkdir -p "$results"

# k of an .ivecs file: its first row's int32 length.
ivecs_k() {
    od -An -t d4 -N 4 "$1" | tr -d ' '
}

# Runs every row on one dataset, shoal then Faiss for each so they never share
# the cores, keeping the output in
# $results/NAME.{shoal,shoal-o2,faiss,faiss-default}.txt.
run_set() {
    local name=$1 base=$2 queries=$3 gt=$4
    local gt_k row nq k
    gt_k=$(ivecs_k "$gt")
    : > "$results/$name.shoal.txt"
    : > "$results/$name.shoal-o2.txt"
    : > "$results/$name.faiss.txt"
    : > "$results/$name.faiss-default.txt"
    for row in "${rows[@]}"; do
        nq=${row%:*}
        k=${row#*:}
        local args=(--base "$base" --queries "$queries" --nq "$nq" --k "$k"
                    --threads "$threads" --metric "$metric" --reps "$reps")
        if (( k <= gt_k )); then
            args+=(--gt "$gt")
        fi
        echo "== $name nq=$nq k=$k"
        "$bin/shoal-bench" flat "${args[@]}" | tee -a "$results/$name.shoal.txt"
        if [[ "$row" == "$o2_row" ]]; then
            "$o2_bin/shoal-bench" flat "${args[@]}" | tee -a "$results/$name.shoal-o2.txt"
        fi
        OMP_WAIT_POLICY=PASSIVE "$python" bench/faiss_flat.py "${args[@]}" |
            tee -a "$results/$name.faiss.txt"
        if [[ "$row" == "$o2_row" ]]; then
            "$python" bench/faiss_flat.py "${args[@]}" | tee -a "$results/$name.faiss-default.txt"
        fi
    done
}

# The awk that reads the result files: vals[side, nq, k, key] for each line's
# key=value pairs; side is s (shoal native), o (shoal -O2), f (Faiss, passive
# OpenMP threads) or d (Faiss with its defaults).
# shellcheck disable=SC2016
read_results='
    {
        delete kv
        for (i = 1; i <= NF; i++) {
            eq = index($i, "=")
            if (eq > 0)
                kv[substr($i, 1, eq - 1)] = substr($i, eq + 1)
        }
        if (!("nq" in kv))
            next
        if (FILENAME ~ /\.shoal\.txt$/)
            side = "s"
        else if (FILENAME ~ /\.shoal-o2\.txt$/)
            side = "o"
        else if (FILENAME ~ /\.faiss-default\.txt$/)
            side = "d"
        else
            side = "f"
        nq = kv["nq"]
        k = kv["k"]
        if (side == "s") {
            order[++nrows] = nq SUBSEP k
            info = sprintf("n=%s dim=%s metric=%s threads=%s", kv["n"], kv["dim"],
                           kv["metric"], threads)
        }
        if (side == "f")
            impl = kv["impl"]
        qps[side, nq, k] = kv["qps"]
        gflops[side, nq, k] = kv["gflops"]
        path[side, nq, k] = kv["path"]
        rec[side, nq, k] = ("recall@" k) in kv ? kv["recall@" k] : "-"
    }
    function ratio(a, b) { return b > 0 ? a / b : 0 }'

# Side-by-side table of one dataset's result files.
print_table() {
    local name=$1
    awk -v name="$name" -v threads="$threads" "$read_results"'
        END {
            printf "\n%s (%s; shoal -O3 -march=native vs Debian %s, generic build)\n",
                   name, info, impl
            printf "%6s %4s | %-33s | %-25s | %s\n", "", "", "shoal (native)",
                   "faiss (OMP_WAIT_POLICY=PASSIVE)", "qps ratio"
            printf "%6s %4s | %7s %10s %7s %6s | %10s %7s %6s | %s\n", "nq", "k", "path",
                   "qps", "GFLOP/s", "recall", "qps", "GFLOP/s", "recall", "shoal/faiss"
            for (i = 1; i <= nrows; i++) {
                split(order[i], key, SUBSEP)
                nq = key[1]
                k = key[2]
                printf "%6s %4s | %7s %10s %7s %6s | %10s %7s %6s | %.2f\n", nq, k,
                       path["s", nq, k], qps["s", nq, k], gflops["s", nq, k], rec["s", nq, k],
                       qps["f", nq, k], gflops["f", nq, k], rec["f", nq, k],
                       ratio(qps["s", nq, k], qps["f", nq, k])
                if (("o", nq, k) in qps)
                    printf "%6s %4s | %7s %10s %7s %6s | %10s %7s %6s | %.2f  (shoal -O2)\n",
                           nq, k, path["o", nq, k], qps["o", nq, k], gflops["o", nq, k],
                           rec["o", nq, k], qps["f", nq, k], gflops["f", nq, k],
                           rec["f", nq, k], ratio(qps["o", nq, k], qps["f", nq, k])
                if (("d", nq, k) in qps)
                    printf "%6s %4s | %7s %10s %7s %6s | %10s %7s %6s | %.2f  (faiss defaults)\n",
                           nq, k, path["s", nq, k], qps["s", nq, k], gflops["s", nq, k],
                           rec["s", nq, k], qps["d", nq, k], gflops["d", nq, k],
                           rec["d", nq, k], ratio(qps["s", nq, k], qps["d", nq, k])
            }
        }' "$results/$name.shoal.txt" "$results/$name.shoal-o2.txt" \
        "$results/$name.faiss.txt" "$results/$name.faiss-default.txt"
}

print_result() {
    local name=$1
    awk -v threads="$threads" "$read_results"'
        END {
            printf "shoal native (-O3 -march=native) vs Debian %s (generic build,\n", impl
            printf "OMP_WAIT_POLICY=PASSIVE), %s threads, at nq=10000 k=10;\n", threads
            printf "qps_ratio_vs_faiss is shoal/faiss: > 1 means shoal is faster\n"
            printf "RESULT flat nq=10000 k=10 qps=%s qps_ratio_vs_faiss=%.3f recall=%s\n",
                   qps["s", 10000, 10], ratio(qps["s", 10000, 10], qps["f", 10000, 10]),
                   rec["s", 10000, 10]
        }' "$results/$name.shoal.txt" "$results/$name.shoal-o2.txt" \
        "$results/$name.faiss.txt" "$results/$name.faiss-default.txt"
}

echo "run_flat: threads=$threads reps=$reps metric=$metric rows(nq:k)=${rows[*]}"
echo "run_flat: shoal $bin/shoal-bench (-O3 -march=native) and $o2_bin/shoal-bench (-O2)" \
    "vs Faiss from Debian's python3-faiss (generic build), OMP_WAIT_POLICY=PASSIVE"

# (a) siftsmall, when the shared datasets have it.
sift="$datasets/siftsmall"
have_sift=0
if [[ -f "$sift/siftsmall_base.fvecs" && -f "$sift/siftsmall_query.fvecs" &&
      -f "$sift/siftsmall_groundtruth.ivecs" ]]; then
    run_set siftsmall "$sift/siftsmall_base.fvecs" "$sift/siftsmall_query.fvecs" \
        "$sift/siftsmall_groundtruth.ivecs"
    have_sift=1
else
    echo "run_flat: $sift not found (set SHOAL_DATASETS); skipping siftsmall"
fi

# (b) the generated clustered set; the folder name carries every parameter of
# its generation, so sets of other scripts are reused only when identical.
gen=build/bench-data/gen-$n-q10000-k100
if [[ ! -f "$gen/groundtruth.ivecs" ]]; then
    echo "== generating $gen"
    "$bin/shoal-bench" gen --n "$n" --dim 128 --queries 10000 --k 100 --seed 1 --out "$gen"
else
    echo "run_flat: reusing $gen"
fi
run_set "gen-$n" "$gen/base.fvecs" "$gen/query.fvecs" "$gen/groundtruth.ivecs"

if (( have_sift )); then
    print_table siftsmall
fi
print_table "gen-$n"
echo
print_result "gen-$n"
