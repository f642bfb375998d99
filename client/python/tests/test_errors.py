"""Every error code a healthy test cluster can produce, raised from Python as
its ShoalError subclass with the server's message; and the protocol's rules for
malformed requests (docs/protocol.md sections 1, 3 and 6) as the client meets
them."""

import os
import signal
import time
import warnings

import msgpack
import numpy as np
import pytest

import shoal
from conftest import Cluster


def _small(client, coll, dim=8, n=50):
    X = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    client.create_collection(coll, dim, nlist=4)
    client.train(coll, X)
    client.insert(coll, X, np.arange(n))
    return X


def _raises(cls, fn, *words):
    with pytest.raises(cls) as info:
        fn()
    e = info.value
    assert isinstance(e, shoal.ShoalError)
    assert e.code == cls.code and e.err == cls.err
    for w in words:
        assert w in e.msg, e.msg
    assert e.msg in str(e)
    return e


def test_einval(client, coll):
    X = _small(client, coll)
    _raises(shoal.EinvalError, lambda: client.search(coll, X[:1], 0), '"k"')
    _raises(shoal.EinvalError, lambda: client.create_collection("bad name", 4), "")
    _raises(shoal.EinvalError, lambda: client.create_collection(coll + "x", 4, metric="manhattan"))
    bad = X[:1].copy()
    bad[0, 3] = np.nan
    _raises(shoal.EinvalError, lambda: client.insert(coll, bad, [999]))
    e = _raises(shoal.EinvalError, lambda: client.train(coll, X, init=7))
    assert e.op == "train"
    assert issubclass(shoal.EinvalError, shoal.InvalidArgument)
    # nprobe above the collection's nlist (4): section 11.4
    _raises(shoal.EinvalError, lambda: client.search(coll, X[:1], 3, nprobe=5), '"nprobe"',
            "nlist = 4")


def test_train_and_untrained_insert_errors(client, coll):
    """Section 11.3 and 11.7: a sample smaller than nlist, an insert before
    training with fewer rows than nlist, a second train."""
    X = np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32)
    client.create_collection(coll, 8, nlist=4)
    _raises(shoal.EinvalError, lambda: client.train(coll, X[:3]), "nlist 4")
    _raises(shoal.EinvalError, lambda: client.insert(coll, X[:3], [1, 2, 3]), "not trained")
    client.train(coll, X)
    _raises(shoal.EexistError, lambda: client.train(coll, X), "already trained")


def test_edim(client, coll):
    _small(client, coll)
    _raises(shoal.EdimError, lambda: client.search(coll, np.zeros((1, 5), np.float32), 3),
            "expected dim 8")
    _raises(shoal.EdimError, lambda: client.insert(coll, np.zeros((1, 5), np.float32), [1]))


def test_enotfound(client):
    _raises(shoal.EnotfoundError, lambda: client.search("no_such_coll", np.zeros((1, 4)), 1))
    _raises(shoal.EnotfoundError, lambda: client.drop("no_such_coll"))
    _raises(shoal.EnotfoundError, lambda: client.stats("no_such_coll"))
    _raises(shoal.EnotfoundError, lambda: list(client.knn_graph("no_such_coll", 3)))


def test_eexist(client, coll):
    client.create_collection(coll, 4, nlist=2)
    e = _raises(shoal.EexistError, lambda: client.create_collection(coll, 4, nlist=2))
    assert e.op == "create_collection"


def test_elimit(client, coll):
    X = _small(client, coll)
    _raises(shoal.ElimitError, lambda: client.search(coll, X[:1], 5000), '"k"')
    # ef beyond its bound is a limit like k (section 7), from the shard or the codec
    _raises(shoal.ElimitError, lambda: client.search(coll, X[:1], 3, nprobe=4, ef=100000),
            '"ef" must be 1..65536')
    _raises(shoal.ElimitError, lambda: client.search(coll, X[:1], 3, ef=2 ** 33), '"ef"')
    _raises(shoal.ElimitError, lambda: client.create_collection(coll + "big", 100000))


def test_eproto(client, coll):
    X = _small(client, coll)
    # a negative k is a signed integer where an unsigned one is expected
    _raises(shoal.EprotoError, lambda: client.search(coll, X[:1], -1), '"k"')
    # a bulk frame of the wrong size, sent by hand
    rid = client._send("search", {"coll": coll, "n": 2, "dim": 8, "k": 1}, [X[:1]])
    e = _raises(shoal.EprotoError, lambda: client._wait(rid), "frame")
    assert e.rid == rid


def test_eunsupported_from_a_shard(cluster, coll):
    with shoal.Client(cluster.shard_endpoints[0], timeout=30) as shard:
        assert shard.ping()["role"] == "shard"
        _raises(shoal.EunsupportedError, lambda: list(shard.knn_graph(coll, 3)),
                "not served by a shard")
        _raises(shoal.EunsupportedError, lambda: shard.train(coll, np.zeros((4, 4))),
                "not served by a shard")


def test_client_timeout_on_a_dead_endpoint():
    # 7989: in this suite's range and never listened on.
    with shoal.Client("tcp://127.0.0.1:7989", timeout=0.3) as c:
        with pytest.raises(shoal.ClientTimeoutError) as info:
            c.ping()
    e = info.value
    assert isinstance(e, shoal.EtimeoutError) and isinstance(e, TimeoutError)
    assert "7989" in str(e)


def test_unknown_code_is_a_plain_shoal_error():
    e = shoal.error_for(-99, "enew", "something new")
    assert type(e) is shoal.ShoalError and e.code == -99 and e.err == "enew"
    assert isinstance(shoal.error_for(-6, "enotfound", "x"), shoal.NotFound)
    assert sorted(shoal.ERRORS) == list(range(-16, 0))


# ---------------------------------------------------------------------------
# malformed requests: what the error reply is addressed to (section 6)
# ---------------------------------------------------------------------------


def _send_raw(client, op, head):
    """Sends raw header bytes as a request of op; returns the rid the client
    waits on (the next one: head is expected to carry it where it can)."""
    rid = next(client._rids)
    client._inflight[rid] = op
    client._sock.send_multipart([head(rid)])
    return rid


def _reply(client, rid, op):
    header, frames = client._receive(rid, op)
    client._inflight.pop(rid, None)
    assert header["code"] != 0 and frames == []
    return header


def _key(k, v):
    return msgpack.packb(k) + msgpack.packb(v)


def test_unreadable_header_has_rid_0_and_reaches_the_caller(client):
    """A truncated header: neither rid nor op can be read, so the reply has
    rid 0 and no op, and the waiting call still gets its error."""
    rid = _send_raw(client, "ping",
                    lambda r: msgpack.packb({"v": 1, "op": "ping", "rid": r})[:-1])
    h = _reply(client, rid, "ping")
    assert h["rid"] == 0 and "op" not in h and "truncated" in h["msg"]
    assert client.ping()["role"] == "coordinator"  # the socket is still in step


def test_trailing_bytes_echo_op_and_rid(client):
    rid = _send_raw(client, "ping",
                    lambda r: msgpack.packb({"v": 1, "op": "ping", "rid": r}) + b"\x00")
    h = _reply(client, rid, "ping")
    assert h["rid"] == rid and h["op"] == "ping" and "trailing" in h["msg"]
    _raises(shoal.EprotoError, lambda: client._wait(
        _send_raw(client, "ping", lambda r: msgpack.packb({"v": 1, "op": "ping", "rid": r})
                  + b"\x00")), "trailing")


def test_unknown_op_echoes_rid_not_op(client):
    rid = _send_raw(client, "serch", lambda r: msgpack.packb({"v": 1, "op": "serch", "rid": r}))
    h = _reply(client, rid, "serch")
    assert h["rid"] == rid and "op" not in h and 'unknown op "serch"' in h["msg"]


def test_a_duplicate_key_is_not_echoed(client):
    rid = _send_raw(client, "ping", lambda r: b"\x84" + _key("v", 1) + _key("op", "ping")
                    + _key("rid", r) + _key("rid", r + 1))
    h = _reply(client, rid, "ping")
    assert h["rid"] == 0 and h["op"] == "ping" and 'duplicate key "rid"' in h["msg"]
    rid = _send_raw(client, "ping", lambda r: b"\x84" + _key("v", 1) + _key("op", "ping")
                    + _key("op", "ping") + _key("rid", r))
    h = _reply(client, rid, "ping")
    assert h["rid"] == rid and "op" not in h and 'duplicate key "op"' in h["msg"]


def test_unknown_keys_are_ignored(client, coll):
    """Section 3.1: a key the server does not know is accepted, not acted on."""
    X = _small(client, coll)
    assert client._call("ping", {"recall": 0.9, "future": {"x": 1}})[0]["code"] == 0
    D, I = client.search(coll, X[:2], 3, future_key={"x": 1})
    assert I.shape == (2, 3) and I[0, 0] == 0


def test_reply_behind_an_empty_frame_is_read(client):
    """Section 1's REQ rule: a request whose first frame is empty is taken as
    coming from REQ, and the reply comes back behind an empty frame."""
    rid = next(client._rids)
    client._inflight[rid] = "ping"
    client._sock.send_multipart([b"", msgpack.packb({"v": 1, "op": "ping", "rid": rid})])
    parts = client._sock.recv_multipart()
    assert parts[0] == b"" and len(parts) == 2
    header = msgpack.unpackb(parts[1], raw=False)
    assert header["rid"] == rid and header["code"] == 0
    client._inflight.pop(rid)
    # and the client reads past it
    rid = next(client._rids)
    client._inflight[rid] = "ping"
    client._sock.send_multipart([b"", msgpack.packb({"v": 1, "op": "ping", "rid": rid})])
    header, frames = client._wait(rid)
    assert header["rid"] == rid and header["code"] == 0 and frames == []


def test_writes_at_the_coordinator_have_seq_0(client, coll):
    """Section 11.7: no one sequence across shards."""
    X = _small(client, coll)
    h, _ = client._call("insert", {"coll": coll, "n": 1, "dim": 8},
                        [np.array([777], "<u8"), X[:1]])
    assert h["count"] == 1 and h["seq"] == 0
    h, _ = client._call("delete", {"coll": coll, "n": 1}, [np.array([777], "<u8")])
    assert h["count"] == 1 and h["seq"] == 0


def test_late_replies_are_dropped(cluster):
    """A reply to a request given up on never answers a later one."""
    with shoal.Client(cluster.endpoint, timeout=30) as c:
        stale = c._send("ping", {})
        c._inflight.pop(stale)  # as after a client timeout
        assert c.ping()["role"] == "coordinator"
        assert c.stats()["role"] == "coordinator"


# ---------------------------------------------------------------------------
# a shard that stops answering: etimeout, eunavail, partial results
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frail(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("frail")), [7983, 7984, 7985],
                coord_args=["--write-timeout-ms", "1500", "--down-after-ms", "5000",
                            "--ping-interval-ms", "200", "--deadline-ms", "1000"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_stopped_shard_etimeout_eunavail_partial(frail):
    with shoal.Client(frail.endpoint, timeout=60) as c:
        X = np.random.default_rng(2).standard_normal((200, 8)).astype(np.float32)
        c.create_collection("f", 8, nlist=4)
        c.train("f", X)
        c.insert("f", X, np.arange(200))
        pid = frail.shard_pid(1)
        os.kill(pid, signal.SIGSTOP)
        try:
            # a write waits for the silent shard, then times out (server side)
            with pytest.raises((shoal.EtimeoutError, shoal.EunavailError)) as info:
                c.insert("f", X, np.arange(1000, 1200))
            assert not isinstance(info.value, shoal.ClientTimeoutError)
            # once the shard is marked down, writes are refused at once
            deadline = time.monotonic() + 30
            while c.ping().get("shards_up") != 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            _raises(shoal.EunavailError, lambda: c.insert("f", X, np.arange(2000, 2200)),
                    "down")
            # reads answer with what the live shard has, flagged partial
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                D, I = c.search("f", X[:5], 3, nprobe=4, mode="exact")
            assert c.last_search.partial
            assert frail.shard_endpoints[1] in c.last_search.missing
            assert any(issubclass(w.category, shoal.PartialResultWarning) for w in caught)
            assert I.shape == (5, 3)
        finally:
            os.kill(pid, signal.SIGCONT)
