"""Fixtures: a real local shoal cluster (a coordinator + 2 shards on loopback).

The programs come from $SHOAL_BIN (make test-python sets it to the build's
bin folder; default: the repository's bin/). Ports are fixed and used by no
other test of the repository: 7980 (coordinator), 7981-7982 (shards) for the
main cluster, 7983-7985 for the small one of the failure tests. Data and
logs go to a pytest temporary folder. Every process is killed at teardown,
also when a test fails, and dies with pytest itself (PR_SET_PDEATHSIG).

The cluster runs with smaller limits than the defaults (--max-batch 5000,
--max-message-bytes 4 MiB) so that the client's request splitting is
exercised with small data.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PKG_ROOT))
if PKG_ROOT not in sys.path:
    sys.path.insert(0, PKG_ROOT)

import shoal  # noqa: E402
from shoal.vecs import datasets_dir  # noqa: E402

MAX_BATCH = 5000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
READY_WAIT_S = 60
STOP_WAIT_S = 20


def _bin_dir():
    return os.environ.get("SHOAL_BIN") or os.path.join(REPO, "bin")


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the child gets SIGKILL when pytest exits.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def _port_busy(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cluster:
    """A coordinator and its shards, started as subprocesses."""

    def __init__(self, workdir, ports, coord_args=(), shard_args=()):
        self.workdir = workdir
        self.ports = ports
        self.coord_args = list(coord_args)
        self.shard_args = list(shard_args)
        self.procs = []  # (name, Popen, log path)
        self.endpoint = "tcp://127.0.0.1:%d" % ports[0]
        self.shard_endpoints = ["tcp://127.0.0.1:%d" % p for p in ports[1:]]

    def _start(self, name, argv):
        log = os.path.join(self.workdir, name + ".log")
        with open(log, "wb") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent)
        self.procs.append((name, p, log))
        return p

    def _wait_ready(self, name, proc, ready, log):
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                return
            if proc.poll() is not None:
                raise RuntimeError("%s exited with %s before it was ready:\n%s"
                                   % (name, proc.returncode, _tail(log)))
            time.sleep(0.05)
        raise RuntimeError("%s not ready after %d s:\n%s" % (name, READY_WAIT_S, _tail(log)))

    def start(self):
        bindir = _bin_dir()
        for prog in ("shoal-shard", "shoal-coordinator"):
            if not os.access(os.path.join(bindir, prog), os.X_OK):
                if os.environ.get("SHOAL_BIN"):
                    raise RuntimeError("%s/%s not found (SHOAL_BIN)" % (bindir, prog))
                pytest.skip("%s/%s not found: build shoal first (make), or set SHOAL_BIN"
                            % (bindir, prog))
        busy = [p for p in self.ports if _port_busy(p)]
        if busy:
            raise RuntimeError("ports %s on 127.0.0.1 are in use (a cluster left running?)" % busy)
        waits = []
        for i, ep in enumerate(self.shard_endpoints):
            name = "shard%d" % i
            ready = os.path.join(self.workdir, name + ".ready")
            p = self._start(name, [
                os.path.join(bindir, "shoal-shard"), "--listen", ep,
                "--data-dir", os.path.join(self.workdir, name), "--ready-file", ready,
                "--threads", "1", "--sync", "off", "--log-level", "warn"] + self.shard_args)
            waits.append((name, p, ready))
        for name, p, ready in waits:
            self._wait_ready(name, p, ready, os.path.join(self.workdir, name + ".log"))
        ready = os.path.join(self.workdir, "coordinator.ready")
        p = self._start("coordinator", [
            os.path.join(bindir, "shoal-coordinator"), "--listen", self.endpoint,
            "--data-dir", os.path.join(self.workdir, "coordinator"),
            "--shards", ",".join(self.shard_endpoints), "--ready-file", ready,
            "--threads", "1", "--log-level", "warn"] + self.coord_args)
        self._wait_ready("coordinator", p, ready, os.path.join(self.workdir, "coordinator.log"))
        return self

    def shard_pid(self, i):
        return self.procs[i][1].pid

    def stop(self):
        """SIGTERM to every process (coordinator first), SIGKILL after a while."""
        for name, p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)  # a test may have stopped it
                    p.terminate()
                except OSError:
                    pass
        for name, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def _tail(path, n=20):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return "(no log)"


LIMIT_ARGS = ["--max-batch", str(MAX_BATCH), "--max-message-bytes", str(MAX_MESSAGE_BYTES)]
# A busy CI machine must not turn a slow shard into partial results or a
# shard marked down: generous deadlines (the failure tests use their own).
PATIENT_ARGS = ["--deadline-ms", "120000", "--down-after-ms", "60000"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster")), [7980, 7981, 7982],
                coord_args=LIMIT_ARGS + PATIENT_ARGS, shard_args=LIMIT_ARGS)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def client(cluster):
    """A client told the cluster's limits."""
    with shoal.Client(cluster.endpoint, timeout=60, max_batch=MAX_BATCH,
                      max_message_bytes=MAX_MESSAGE_BYTES) as c:
        yield c


_names = iter(range(1, 1 << 30))


@pytest.fixture
def coll(client):
    """A fresh collection name, dropped after the test."""
    name = "t%d_%d" % (os.getpid(), next(_names))
    yield name
    try:
        client.drop(name)
    except shoal.ShoalError:
        pass


@pytest.fixture(scope="session")
def datasets():
    d = datasets_dir()
    if d is None:
        pytest.skip("datasets folder not found (set SHOAL_DATASETS; default ../shared/datasets)")
    return d
