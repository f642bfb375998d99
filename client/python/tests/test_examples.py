"""The examples run end to end (small sizes) against a cluster with the
default limits (ports 7986-7988)."""

import os
import subprocess
import sys

import pytest

from conftest import PATIENT_ARGS, Cluster

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("plain")), [7986, 7987, 7988],
                coord_args=PATIENT_ARGS)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _run(plain, script, *args):
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), "-c", plain.endpoint]
                       + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    return out


def test_batch_search_example(plain):
    out = _run(plain, "batch_search.py", "--queries", "3000", "--per-query", "100")
    assert "one call, 3000 queries" in out and "one call per query, 100" in out
    assert "100.0% of the 100 rows agree" in out


def test_knn_graph_example(plain, tmp_path):
    out = _run(plain, "knn_graph.py", "-k", "4", "--out", str(tmp_path / "g.npz"))
    assert "padded slots: 0" in out
    import numpy as np
    g = np.load(str(tmp_path / "g.npz"))
    assert g["I"].shape == (len(g["ids"]), 4) and len(set(g["ids"].tolist())) == len(g["ids"])


def test_rag_example(plain, datasets):
    out = _run(plain, "rag_glove.py", "--datasets", datasets, "garlic oven")
    assert "retrieved: " in out and "Question: garlic oven" in out
    retrieved = out.split("retrieved: ")[1].splitlines()[0]
    assert "garlic" not in retrieved and "oven" not in retrieved  # the filter left them out
