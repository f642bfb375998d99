"""Shared bits of the examples: command-line defaults, data, a collection."""

import argparse
import os
import sys

import numpy as np

# Run from a checkout without installing: the package is one folder up.
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import shoal  # noqa: E402
from shoal.vecs import datasets_dir, read_fvecs  # noqa: E402


def parser(doc):
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--endpoint", "-c", default=None,
                   help="the coordinator (default: $SHOAL_COORDINATOR, else %s)"
                   % shoal.DEFAULT_ENDPOINT)
    p.add_argument("--datasets", default=None,
                   help="the shared datasets folder (default: $SHOAL_DATASETS, "
                   "else ../shared/datasets)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a reply")
    p.add_argument("--keep", action="store_true",
                   help="keep the collection the example creates (default: drop it)")
    return p


def sift_or_generated(args, n=10000, dim=128):
    """siftsmall's base vectors, or (when absent) a clustered generated set."""
    folder = args.datasets or datasets_dir()
    path = os.path.join(folder, "siftsmall", "siftsmall_base.fvecs") if folder else None
    if path and os.path.exists(path):
        print("data: %s" % path)
        return read_fvecs(path)
    print("data: siftsmall not found: %d x %d generated clustered vectors" % (n, dim))
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((64, dim)).astype(np.float32) * 10
    return (centers[rng.integers(0, 64, n)] +
            rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


def ensure_collection(client, name, X, metric="l2", nlist=64):
    """Creates, trains and loads `name` with X (ids 0..n-1); returns True when
    it did, False when the collection was there already (used as it is)."""
    try:
        client.create_collection(name, X.shape[1], metric=metric, nlist=nlist)
    except shoal.AlreadyExists:
        print("collection %r exists: using it as it is" % name)
        return False
    client.train(name, X[:min(len(X), 50000)])
    client.insert(name, X, np.arange(len(X)), progress=True)
    print("collection %r: %d vectors of dim %d loaded" % (name, len(X), X.shape[1]))
    return True
