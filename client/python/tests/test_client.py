"""Round trips, padding, splitting and pipelining against a real cluster."""

import numpy as np
import pytest

import shoal
from conftest import MAX_BATCH


def _data(n, dim, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _make(client, coll, n=400, dim=16, nlist=8, metric="l2", seed=0):
    X = _data(n, dim, seed)
    client.create_collection(coll, dim, metric=metric, nlist=nlist)
    client.train(coll, X)
    assert client.insert(coll, X, np.arange(n)) == n
    return X


def test_ping_and_stats(client):
    info = client.ping()
    assert info["role"] == "coordinator"
    assert info["version"] == shoal.PROTOCOL_VERSION
    assert client.status()["role"] == "coordinator"


def test_create_reports_parameters(client, coll):
    info = client.create_collection(coll, 24, metric="cosine", nlist=6)
    assert info["dim"] == 24 and info["metric"] == "cosine" and info["nlist"] == 6
    # the shards' build defaults, filled in (docs/protocol.md 11.2)
    assert info["M"] == 16 and info["ef_construction"] == 200
    assert coll in client.collections()
    st = client.stats(coll)["collections"][coll]
    assert st["dim"] == 24 and st["trained"] == 0
    assert st["M"] == 16 and st["ef_construction"] == 200
    info = client.create_collection(coll + "x", 4, nlist=2, M=8, ef_construction=50)
    assert info["M"] == 8 and info["ef_construction"] == 50
    client.drop(coll + "x")


def test_insert_get_delete_round_trip(client, coll):
    X = _make(client, coll)
    assert client.count(coll) == len(X)
    ids = np.array([0, 7, 399, 5000], dtype=np.uint64)
    V, found = client.get(coll, ids)
    assert V.dtype == np.float32 and V.shape == (4, 16)
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(V[:3], X[[0, 7, 399]])
    assert not V[3].any()
    # delete counts the ids that existed; absent ones are skipped
    assert client.delete(coll, [7, 8, 123456]) == 2
    _, found = client.get(coll, [7, 8, 9])
    assert found.tolist() == [False, False, True]
    assert client.count(coll) == len(X) - 2
    assert client.delete(coll, []) == 0


def test_upsert_replaces(client, coll):
    X = _make(client, coll, n=100)
    new = np.full((1, 16), 0.5, dtype=np.float32)
    assert client.upsert(coll, new, [3]) == 1
    V, found = client.get(coll, [3])
    assert found[0]
    np.testing.assert_array_equal(V[0], new[0])
    assert client.count(coll) == len(X)


def test_ids_of_every_integer_type(client, coll):
    client.create_collection(coll, 4, nlist=2)
    X = _data(6, 4)
    client.train(coll, X)
    for ids in (np.array([1, 2], np.int64), np.array([3, 4], np.uint64), [5, 6],
                np.array([2 ** 62, 2 ** 62 + 1], np.uint64)):
        assert client.insert(coll, X[:2], ids) == 2
    V, found = client.get(coll, [2 ** 62 + 1, 6])
    assert found.all()
    with pytest.raises(ValueError):
        client.insert(coll, X[:1], [-1])
    with pytest.raises(ValueError):
        client.insert(coll, X[:2], [1])
    with pytest.raises(TypeError):
        client.insert(coll, X[:1], [1.5])


def test_search_finds_itself_exactly(client, coll):
    X = _make(client, coll)
    D, I = client.search(coll, X[:20], 5, nprobe=8, mode="exact")
    assert D.dtype == np.float32 and I.dtype == np.int64
    assert D.shape == I.shape == (20, 5)
    assert I[:, 0].tolist() == list(range(20))
    assert np.allclose(D[:, 0], 0, atol=1e-4)
    assert (np.diff(D, axis=1) >= 0).all()
    assert client.last_search.mode == "exact" and not client.last_search.partial
    # brute force agrees on the whole top 5
    d2 = ((X[:20, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(I, np.argsort(d2, axis=1, kind="stable")[:, :5])
    # a 1-D query is one row
    D1, I1 = client.search(coll, X[3], 5, nprobe=8, mode="exact")
    assert I1.shape == (1, 5) and I1[0, 0] == 3


def test_padding_faiss_convention(client, coll):
    client.create_collection(coll, 8, nlist=2)
    X = _data(3, 8)
    # an untrained collection holds nothing: every slot is padding
    D, I = client.search(coll, X, 4)
    assert (I == -1).all() and np.isinf(D).all() and (D > 0).all()
    client.train(coll, X)
    client.insert(coll, X, [10, 11, 12])
    D, I = client.search(coll, X[:2], 5, nprobe=2, mode="exact")
    assert (I[:, :3] >= 10).all() and (I[:, 3:] == -1).all()
    assert np.isfinite(D[:, :3]).all() and np.isposinf(D[:, 3:]).all()


def test_filter(client, coll):
    X = _make(client, coll, n=200)
    D, I = client.search(coll, X[:4], 5, nprobe=8, mode="exact", filter=[50, 60])
    assert set(I[:, :2].ravel().tolist()) <= {50, 60}
    assert (I[:, 2:] == -1).all() and np.isposinf(D[:, 2:]).all()
    # an empty allow-list allows nothing
    D, I = client.search(coll, X[:4], 3, filter=[])
    assert (I == -1).all() and np.isposinf(D).all()


def test_empty_inputs_send_nothing(client, coll):
    client.create_collection(coll, 8, nlist=2)
    assert client.insert(coll, np.empty((0, 8), np.float32), []) == 0
    D, I = client.search(coll, np.empty((0, 8), np.float32), 3)
    assert D.shape == I.shape == (0, 3)
    with pytest.raises(ValueError):
        client.search(coll, np.zeros((2, 2, 2), np.float32), 3)


def test_large_search_split_and_pipelined(client, coll):
    X = _make(client, coll, n=300)
    Q = _data(3000, 16, seed=5)
    ref_D, ref_I = client.search(coll, Q, 4, nprobe=8, mode="exact")
    client.search_batch = 128  # 24 requests, window of them in flight
    D, I = client.search(coll, Q, 4, nprobe=8, mode="exact")
    np.testing.assert_array_equal(I, ref_I)
    np.testing.assert_array_equal(D, ref_D)
    many = client.search_many(coll, [Q[i] for i in range(50)] + [Q[50:60]], 4, nprobe=8,
                              mode="exact")
    assert len(many) == 51
    for i in range(50):
        np.testing.assert_array_equal(many[i][1][0], ref_I[i])
    np.testing.assert_array_equal(many[50][1], ref_I[50:60])
    assert X.shape[0] == client.count(coll)


def _insert_requests(client):
    return client.stats().get("requests", {}).get("insert", 0)


def test_large_insert_split_by_bytes(client, coll, datasets):
    from shoal.vecs import read_fvecs
    X = read_fvecs(datasets + "/siftsmall/siftsmall_base.fvecs")  # 5.2 MB > 4 MiB limit
    client.create_collection(coll, 128, nlist=16)
    # more rows than one request may carry: trained on a subsample that fits
    with pytest.warns(UserWarning, match="evenly spaced"):
        info = client.train(coll, X)
    assert info["n"] == MAX_BATCH
    before = _insert_requests(client)
    assert client.insert(coll, X, np.arange(len(X)), progress=True) == len(X)
    assert _insert_requests(client) - before >= 2
    assert client.count(coll) == len(X)
    V, found = client.get(coll, np.arange(len(X)))
    assert found.all()
    np.testing.assert_array_equal(V, X)


def test_large_insert_split_by_count(client, coll):
    """More rows than max_batch: split by count, each row once."""
    n = MAX_BATCH * 2 + 123
    X = _data(n, 4, seed=3)
    client.create_collection(coll, 4, nlist=4)
    client.train(coll, X[:1000])
    before = _insert_requests(client)
    client.write_batch = 10 ** 9
    assert client.insert(coll, X, np.arange(n)) == n
    assert _insert_requests(client) - before == 3
    assert client.count(coll) == n


def test_insert_adapts_to_smaller_server_limits(cluster, coll):
    """A client not told the server's limits: the elimit answer makes it
    send the batch again in requests that fit, and nothing is lost."""
    with shoal.Client(cluster.endpoint, timeout=60, write_batch=10 ** 9) as c:
        n = MAX_BATCH + 500
        X = _data(n, 4, seed=4)
        c.create_collection(coll, 4, nlist=4)
        c.train(coll, X[:1000])
        assert c.insert(coll, X, np.arange(n)) == n
        assert c.count(coll) == n
        assert c.delete(coll, np.arange(n)) == n
        c.drop(coll)


def test_recall_parameter_is_clean(client, coll):
    """recall= on a collection too small to calibrate: a ShoalError saying
    so (eunavail), never anything else."""
    X = _make(client, coll, n=100)
    try:
        D, I = client.search(coll, X[:2], 3, recall=0.9)
    except shoal.ShoalError as e:
        assert e.code is not None and e.code < 0 and e.msg
    else:
        assert I.shape == (2, 3)


def test_context_manager_closes(cluster):
    with shoal.Client(cluster.endpoint) as c:
        assert c.ping()
    assert c.closed
    with pytest.raises(ValueError):
        c.ping()


def test_replicated_collection(client, coll):
    # the session cluster has 2 shards: R = 2 puts every list on both
    info = client.create_collection(coll, 16, nlist=4, replication=2, write_quorum=2)
    assert info["replication"] == 2 and info["write_quorum"] == 2
    X = _data(200, 16, seed=3)
    client.train(coll, X)
    assert client.insert(coll, X, np.arange(200)) == 200
    st = client.stats(coll)["collections"][coll]
    assert st["replication"] == 2 and st["write_quorum"] == 2 and st["stale_lists"] == 0
    # each shard holds every vector once, as primary or replica
    assert [st["shards"][s]["vectors"] for s in ("0", "1")] == [200, 200]
    _, ids = client.search(coll, X[:5], k=1, nprobe=4)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(shoal.ShoalError) as e:
        client.create_collection(coll + "r", 16, nlist=4, replication=3)
    assert e.value.err == "einval" and "replication 3" in e.value.msg
    with pytest.raises(shoal.ShoalError) as e:
        client.create_collection(coll + "w", 16, nlist=4, replication=2, write_quorum=3)
    assert e.value.err == "einval" and "write_quorum 3" in e.value.msg


def test_sq8_collection_is_exact_in_exact_mode(client, coll):
    # one copy as codes on the shards, float32 rows on disk: exact mode gives
    # the f32 collection's answers, ids and distances (docs/protocol.md 4.2)
    info = client.create_collection(coll, 16, nlist=4, storage="sq8")
    assert info["storage"] == "sq8"
    ref = _make(client, coll + "f", n=300, dim=16, nlist=4, seed=5)
    client.train(coll, ref)
    assert client.insert(coll, ref, np.arange(300)) == 300
    Q = _data(20, 16, seed=6)
    d8, i8 = client.search(coll, Q, k=5, nprobe=4, mode="exact")
    d32, i32 = client.search(coll + "f", Q, k=5, nprobe=4, mode="exact")
    assert i8.tolist() == i32.tolist()
    assert np.array_equal(d8, d32)
    got, found = client.get(coll, [7])
    assert found[0] and np.array_equal(got[0], ref[7])
    assert client.stats(coll)["collections"][coll]["storage"] == "sq8"
    with pytest.raises(shoal.ShoalError) as e:
        client.create_collection(coll + "x", 16, nlist=4, storage="f8")
    assert e.value.err == "einval" and "storage" in e.value.msg
    client.drop(coll + "f")
