#!/usr/bin/env python3
"""The k-NN graph of a collection: every vector's k nearest neighbours.

Pulls the graph from the coordinator one chunk at a time (client.knn_graph,
an iterator; knn_graph_array() returns the whole graph at once), shows the
progress, and prints a summary (and saves ids, D, I to --out FILE.npz).
Uses --collection when it exists (e.g. `demo` from `make demo`), else loads
SIFT10K into it first.
"""

import time

import numpy as np

from _common import ensure_collection, parser, shoal, sift_or_generated


def main():
    p = parser(__doc__)
    p.add_argument("--collection", default="py_knn")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--chunk", type=int, default=2048, help="rows per reply")
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--out", default=None, help="save ids, D, I to this .npz file")
    args = p.parse_args()

    with shoal.Client(args.endpoint, timeout=args.timeout) as c:
        created = False
        if args.collection not in c.collections():
            created = ensure_collection(c, args.collection, sift_or_generated(args))
        try:
            ids, Ds, Is = [], [], []
            t = time.perf_counter()
            for chunk in c.knn_graph(args.collection, args.k, chunk=args.chunk,
                                     nprobe=args.nprobe, progress=True):
                ids.append(chunk.ids)
                Ds.append(chunk.D)
                Is.append(chunk.I)
                done = sum(len(x) for x in ids)
                print("  %d / %d rows" % (done, chunk.total))
            secs = time.perf_counter() - t
            ids, D, I = np.concatenate(ids), np.concatenate(Ds), np.concatenate(Is)
            print("k-NN graph of %r: %d rows x k=%d in %.2f s (%.0f rows/s)"
                  % (args.collection, len(ids), args.k, secs, len(ids) / secs))
            print("mean distance to the nearest neighbour: %.4g; padded slots: %d"
                  % (float(np.mean(D[:, 0])), int((I < 0).sum())))
            print("row of id %d: neighbours %s" % (ids[0], I[0].tolist()))
            if args.out:
                np.savez(args.out, ids=ids, D=D, I=I)
                print("saved to %s" % args.out)
        finally:
            if created and not args.keep:
                c.drop(args.collection)


if __name__ == "__main__":
    main()
