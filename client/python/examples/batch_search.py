#!/usr/bin/env python3
"""The batch story: 100,000 queries in one call vs one call per query.

Loads SIFT10K (../shared/datasets/siftsmall; a generated set when absent) into
a collection, makes N queries (base vectors plus noise), then searches them

  1. in one call: client.search(name, Q, k) (split into pipelined requests),
  2. one call per query: for q in Q: client.search(name, q, k) (timed on the
     first --per-query queries: every call waits for its round trip),
  3. pipelined single-query requests: client.search_many(name, list_of_q, k),

and prints the three throughputs. Against `make demo` (DEMO_KEEP=1) use
`--collection demo` to search the demo's collection.
"""

import time

import numpy as np

from _common import ensure_collection, parser, shoal, sift_or_generated


def main():
    p = parser(__doc__)
    p.add_argument("--collection", default="py_batch")
    p.add_argument("--queries", type=int, default=100000, help="N, the batch's queries")
    p.add_argument("--per-query", type=int, default=2000,
                   help="how many of them to time one call each (default 2000)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--nprobe", type=int, default=None)
    args = p.parse_args()

    with shoal.Client(args.endpoint, timeout=args.timeout) as c:
        X = sift_or_generated(args)
        created = ensure_collection(c, args.collection, X)
        try:
            rng = np.random.default_rng(7)
            Q = X[rng.integers(0, len(X), args.queries)]
            Q = Q + rng.standard_normal(Q.shape).astype(np.float32) * Q.std() * 0.05

            t = time.perf_counter()
            D, I = c.search(args.collection, Q, args.k, nprobe=args.nprobe)
            batch_s = time.perf_counter() - t
            print("one call, %d queries:        %8.3f s  %10.0f queries/s"
                  % (len(Q), batch_s, len(Q) / batch_s))

            m = min(args.per_query, len(Q))
            t = time.perf_counter()
            single = [c.search(args.collection, Q[i], args.k, nprobe=args.nprobe)[1][0]
                      for i in range(m)]
            loop_s = time.perf_counter() - t
            print("one call per query, %d:     %8.3f s  %10.0f queries/s"
                  % (m, loop_s, m / loop_s))

            t = time.perf_counter()
            many = c.search_many(args.collection, [Q[i] for i in range(m)], args.k,
                                 nprobe=args.nprobe)
            pipe_s = time.perf_counter() - t
            print("pipelined per query, %d:    %8.3f s  %10.0f queries/s"
                  % (m, pipe_s, m / pipe_s))

            same = np.mean([(single[i] == I[i]).all() and (many[i][1][0] == I[i]).all()
                            for i in range(m)])
            print("the batch is %.0fx the per-query loop; %.1f%% of the %d rows agree"
                  % ((len(Q) / batch_s) / (m / loop_s), 100 * same, m))
        finally:
            if created and not args.keep:
                c.drop(args.collection)


if __name__ == "__main__":
    main()
