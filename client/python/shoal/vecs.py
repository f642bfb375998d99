"""TEXMEX .fvecs / .ivecs files and recall, for examples and tests.

A record is `int32 dim` followed by `dim` values (float32 or int32), little
endian; every record of a file has the same dim.
"""

import os

import numpy as np


def _read_vecs(path, dtype, limit=None):
    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        return np.empty((0, 0), dtype=dtype)
    dim = int(raw[0])
    if dim <= 0 or raw.size % (dim + 1) != 0:
        raise ValueError("%s: not a vecs file (dim %d, %d words)" % (path, dim, raw.size))
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        raise ValueError("%s: records of different dims" % path)
    if limit is not None:
        rows = rows[:limit]
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def read_fvecs(path, limit=None):
    """float32 (n, dim) array of an .fvecs file (its first `limit` rows)."""
    return _read_vecs(path, "<f4", limit)


def read_ivecs(path, limit=None):
    """int32 (n, dim) array of an .ivecs file (its first `limit` rows)."""
    return _read_vecs(path, "<i4", limit)


def recall_at(I, gt, k):
    """Mean over queries of |I[i, :k] & gt[i, :k]| / k (ids < 0 never match)."""
    I = np.asarray(I)[:, :k]
    gt = np.asarray(gt)[:, :k]
    hits = 0
    for row, truth in zip(I, gt):
        hits += len(set(int(x) for x in row if x >= 0) & set(int(x) for x in truth))
    return hits / float(k * len(gt)) if len(gt) else 0.0


def datasets_dir():
    """$SHOAL_DATASETS, else ../shared/datasets next to the repository or the
    current folder; None when absent."""
    env = os.environ.get("SHOAL_DATASETS")
    if env:
        return env if os.path.isdir(env) else None
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "..", "..", "..", "shared", "datasets"),
                 os.path.join(os.getcwd(), "..", "shared", "datasets")):
        cand = os.path.normpath(cand)
        if os.path.isdir(cand):
            return cand
    return None
