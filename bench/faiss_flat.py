#!/usr/bin/python3
"""faiss_flat.py - Faiss's exact index on a vecs file, the peer of
`shoal-bench flat` in bench/run_flat.sh (make bench-flat).

Takes the subset of shoal-bench flat's options that has a meaning here and
measures the same things the same way: the base is added to IndexFlatL2 (l2)
or IndexFlatIP (ip; cosine normalises base and queries first, as shoal's store
does), ids are row numbers, the queries are repeated or cut to --nq, one
untimed search warms caches and threads, then --reps timed searches of all nq
queries; the median is reported. Recall is gt_recall's (common/groundtruth.c):
mean |found & truth[:k]| / k over the distinct queries.

Output, one line, in shoal-bench flat's key=value form:
  nq=... n=... dim=... k=... metric=... threads=... impl=faiss-VERSION
  add_s=... seconds=... qps=... gflops=... [recall@K=...]

Run with Debian's /usr/bin/python3 (python3-faiss, python3-numpy; make
bench-deps installs them). Exit codes: 0 success, 2 usage error, 1 anything
that failed while running.
"""
import argparse
import sys
import time

import faiss
import numpy as np

EXIT_RUNTIME = 1


def read_vecs(path, dtype):
    """A TEXMEX .fvecs/.ivecs file: per row an int32 dim, then dim values of
    4 bytes each. Returns an (n, dim) array; every row must have the same dim."""
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        raise ValueError(f"{path}: empty")
    dim = int(raw[0])
    if dim <= 0 or raw.size % (dim + 1) != 0:
        raise ValueError(f"{path}: {raw.size * 4} bytes is not a whole number of "
                         f"rows of dim {dim}")
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        raise ValueError(f"{path}: rows of different dims (the first has {dim})")
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def recall(found, truth, k):
    """gt_recall: hits of each found row among its truth row's first k ids,
    an id listed twice counting once, over nq * k."""
    hits = 0
    for f, t in zip(found, truth):
        hits += len(set(int(i) for i in f[:k] if i >= 0) & set(int(i) for i in t[:k]))
    return hits / (len(found) * k)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected >= 1, got {value}")
    return value


def parse_args():
    p = argparse.ArgumentParser(
        description="Faiss exact k-NN (IndexFlatL2/IndexFlatIP), timed like shoal-bench flat")
    p.add_argument("--base", required=True, help="base vectors (.fvecs)")
    p.add_argument("--queries", required=True, help="query vectors (.fvecs), same dim")
    p.add_argument("--gt", help="ground truth (.ivecs) for recall@K")
    p.add_argument("--nq", type=positive, help="queries per search (default: all of Q)")
    p.add_argument("--k", type=positive, default=10, help="neighbours per query (default 10)")
    p.add_argument("--threads", type=int, default=0,
                   help="OpenMP threads (default 0: Faiss's own default, every core)")
    p.add_argument("--metric", choices=("l2", "ip", "cosine"), default="l2")
    p.add_argument("--reps", type=positive, default=1,
                   help="timed searches, the median is reported (default 1)")
    return p.parse_args()


def run(args):
    base = read_vecs(args.base, np.float32)
    file_queries = read_vecs(args.queries, np.float32)
    n, dim = base.shape
    nfile = file_queries.shape[0]
    if file_queries.shape[1] != dim:
        raise ValueError(f"--queries: dim {file_queries.shape[1]}, expected {dim} (as --base)")
    nq = args.nq or nfile
    # Repeated queries have the same answers: recall is over the distinct ones.
    nmeasure = min(nq, nfile)
    truth = None
    if args.gt:
        truth = read_vecs(args.gt, np.int32)
        if truth.shape[0] < nmeasure or truth.shape[1] < args.k:
            raise ValueError(f"--gt: {truth.shape[0]} rows of {truth.shape[1]} ids, "
                             f"need {nmeasure} rows of >= {args.k} (--k)")

    queries = np.ascontiguousarray(file_queries[np.arange(nq) % nfile])
    if args.threads > 0:
        faiss.omp_set_num_threads(args.threads)
    threads = faiss.omp_get_max_threads()

    t0 = time.perf_counter()
    if args.metric == "l2":
        index = faiss.IndexFlatL2(dim)
    else:
        index = faiss.IndexFlatIP(dim)
    if args.metric == "cosine":
        base = np.ascontiguousarray(base)
        faiss.normalize_L2(base)
        faiss.normalize_L2(queries)
    index.add(base)
    add_s = time.perf_counter() - t0

    _, found = index.search(queries, args.k)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        _, found = index.search(queries, args.k)
        times.append(time.perf_counter() - t0)
    # The upper median for even counts, as shoal-bench's times[reps / 2].
    search_s = sorted(times)[len(times) // 2]

    flops = 2.0 * nq * n * dim
    line = (f"nq={nq} n={n} dim={dim} k={args.k} metric={args.metric} threads={threads} "
            f"impl=faiss-{faiss.__version__} add_s={add_s:.3f} seconds={search_s:.6f} "
            f"qps={nq / search_s:.1f} gflops={flops / search_s * 1e-9:.2f}")
    if truth is not None:
        line += f" recall@{args.k}={recall(found[:nmeasure], truth[:nmeasure], args.k):.4f}"
    print(line, flush=True)


def main():
    args = parse_args()  # exits 2 on a usage error
    try:
        run(args)
    except (OSError, ValueError, MemoryError) as e:
        print(f"faiss_flat: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
