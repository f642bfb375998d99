"""The cluster-growth calls (docs/protocol.md 11.9) against a fake coordinator:
a ROUTER socket in a thread of the test that records each request's header and
answers with a canned info map, so the calls are checked without a cluster."""

import threading

import msgpack
import pytest
import zmq

import shoal


class FakeCoordinator:
    """Answers every request with `answers[op]` (an info map) or an error."""

    def __init__(self, answers):
        self.answers = answers
        self.headers = []
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            ident, frame = self._sock.recv_multipart()[:2]
            head = msgpack.unpackb(frame, raw=False)
            self.headers.append(head)
            reply = {"v": 1, "op": head["op"], "rid": head["rid"]}
            info = self.answers.get(head["op"])
            if isinstance(info, dict):
                reply.update(code=0, err="ok", info=info)
            else:
                reply.update(code=-2, err="einval", msg=info or "not served here")
            self._sock.send_multipart([ident, msgpack.packb(reply, use_bin_type=True)])

    def close(self):
        self._stop.set()
        self._thread.join()
        self._sock.close()


PLAN = {"dry_run": 1, "moves": 2, "vectors": 2011, "imbalance_before": 1.5,
        "imbalance_after": 1.0625, "shards_per_query_before": 3.25,
        "shards_per_query_after": 3.5, "shards_per_query_fresh": 3.125,
        "plan": [{"coll": "docs", "list": 5, "replica": 0, "from": "tcp://h1:7702",
                  "to": "tcp://h4:7702", "vectors": 1005},
                 {"coll": "docs", "list": 11, "replica": 1, "from": "tcp://h2:7702",
                  "to": "tcp://h4:7702", "vectors": 1006}]}


@pytest.fixture
def fake():
    f = FakeCoordinator({
        "shard_add": {"endpoint": "tcp://h4:7702", "index": 3, "shards": 4},
        "shard_drain": {"endpoint": "tcp://h2:7702", "moves": 17, "vectors": 52113},
        "shard_remove": "shard tcp://h2:7702 still holds 3 lists: drain it first",
        "rebalance": PLAN,
        "snapshot_create": {"name": "nightly", "created": 1700000000, "dir": "/d/snapshots/nightly",
                            "paused_ms": 12.5, "waited_ms": 0.5,
                            "shards": [{"endpoint": "tcp://h1:7702", "dir": "/s/snapshots/nightly",
                                        "seq": 42}],
                            "collections": [{"name": "docs", "count": 10000}]},
        "snapshot_list": {"total": 1, "snapshots": [
            {"name": "nightly", "created": 1700000000, "vectors": 10000,
             "shards": ["tcp://h1:7702"], "collections": [{"name": "docs", "count": 10000}]}]},
    })
    yield f
    f.close()


def test_shard_calls_send_the_endpoint_and_return_the_info(fake):
    with shoal.Client(fake.endpoint, timeout=10) as c:
        assert c.add_shard("tcp://h4:7702") == {"endpoint": "tcp://h4:7702", "index": 3,
                                                "shards": 4}
        assert c.drain_shard("tcp://h2:7702")["moves"] == 17
        with pytest.raises(shoal.EinvalError) as info:
            c.remove_shard("tcp://h2:7702")
        assert "drain it first" in info.value.msg
        assert info.value.op == "shard_remove"
    ops = [(h["op"], h["endpoint"]) for h in fake.headers]
    assert ops == [("shard_add", "tcp://h4:7702"), ("shard_drain", "tcp://h2:7702"),
                   ("shard_remove", "tcp://h2:7702")]
    assert all("coll" not in h for h in fake.headers)


def test_rebalance_sends_only_what_is_set_and_returns_the_plan(fake):
    with shoal.Client(fake.endpoint, timeout=10) as c:
        plan = c.rebalance()
        assert plan["plan"][1]["list"] == 11  # arrays in the info map are lists
        c.rebalance(dry_run=True, max_moves=40, rate_mb=25)
    assert "dry_run" not in fake.headers[0] and "max_moves" not in fake.headers[0]
    assert "rate_mb" not in fake.headers[0]
    assert fake.headers[1]["dry_run"] == 1
    assert fake.headers[1]["max_moves"] == 40 and fake.headers[1]["rate_mb"] == 25


def test_bad_arguments_are_refused_before_sending(fake):
    with shoal.Client(fake.endpoint, timeout=10) as c:
        for bad in ("", "e" * 256, "tcp://h:1\n", "tcp://h\u00e9:1"):
            with pytest.raises(ValueError):
                c.add_shard(bad)
        with pytest.raises(TypeError):
            c.drain_shard(7702)
        with pytest.raises(ValueError):
            c.rebalance(max_moves=-1)
        with pytest.raises(ValueError):
            c.rebalance(rate_mb=1 << 32)
        with pytest.raises(TypeError):
            c.rebalance(max_moves=1.5)
    assert fake.headers == []


def test_snapshot_calls_send_the_name_and_return_the_info(fake):
    with shoal.Client(fake.endpoint, timeout=10) as c:
        made = c.snapshot_create("nightly")
        assert made["shards"][0]["seq"] == 42
        assert made["collections"] == [{"name": "docs", "count": 10000}]
        listed = c.snapshots()
        assert [s["name"] for s in listed] == ["nightly"]
        assert listed[0]["vectors"] == 10000
    assert [(h["op"], h.get("name")) for h in fake.headers] == [
        ("snapshot_create", "nightly"), ("snapshot_list", None)]


@pytest.mark.parametrize("bad", ["", "..", ".hidden", "a/b", "x" * 65, "caf\u00e9"])
def test_snapshot_create_refuses_bad_names_before_sending(fake, bad):
    with shoal.Client(fake.endpoint, timeout=10) as c:
        with pytest.raises(ValueError):
            c.snapshot_create(bad)
    assert fake.headers == []

