"""Client: shoal's wire protocol (docs/protocol.md, version 1) over a ZeroMQ DEALER.

One Client holds one DEALER socket to a coordinator (or a shard). Each request
carries a fresh `rid`; replies are matched to requests by it, so several
requests can be in flight (large searches are split into pipelined requests,
and search_many() pipelines many small ones). A Client is not thread-safe:
use one per thread.

Arrays: vectors are float32 (n, dim) row-major; ids are uint64 on the wire and
accepted as any non-negative integer array. Search results follow Faiss's
convention: (D float32 (nq, k), I int64 (nq, k)), best first, padded with
I = -1 and D = +inf where a row has fewer than k results (the wire's padding id
UINT64_MAX read as int64 is -1). Distances are "smaller is nearer": squared L2,
negated inner product, or 1 - cosine similarity.
"""

import collections
import itertools
import os
import re
import time
import warnings

import msgpack
import numpy as np
import zmq

from .errors import ClientTimeoutError, ElimitError, ReplyError, error_for

PROTOCOL_VERSION = 1

# docs/protocol.md section 7: wire_limits_default(). A server started with
# smaller limits needs the client told (Client(max_batch=...)); a write refused
# with elimit is also retried in smaller requests.
DEFAULT_MAX_BATCH = 1000000
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
HEADER_SLACK = 64 * 1024  # bytes kept for frame 0 when sizing a request

DEFAULT_ENDPOINT = "tcp://127.0.0.1:7700"

# czmq's certificate text (shoal keygen): `public-key = "Z85"` and, in the
# _secret file, `secret-key = "Z85"`, each 40 characters.
# docs/protocol.md 4.13: a collection name (3.3) that does not begin with '.'.
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}\Z")
_CERT_KEY = re.compile(r'^\s*(public-key|secret-key)\s*=\s*"?([^"\s]{40})"?\s*$')


def _load_cert(path, need_secret):
    """(public, secret or None) as Z85 bytes from a czmq certificate file.

    ValueError naming the file when it cannot be read, has no public key,
    or has no secret key where one is needed (the _secret file of the pair).
    """
    try:
        with open(path, "r", encoding="ascii") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError("certificate %s: cannot read: %s" % (path, e)) from None
    keys = {}
    for line in text.splitlines():
        m = _CERT_KEY.match(line)
        if m:
            keys[m.group(1)] = m.group(2).encode("ascii")
    if "public-key" not in keys:
        raise ValueError("certificate %s: no public-key of 40 Z85 characters" % path)
    if need_secret and "secret-key" not in keys:
        raise ValueError("certificate %s: no secret-key (give the _secret file of the pair)"
                         % path)
    return keys["public-key"], keys.get("secret-key")

SearchInfo = collections.namedtuple("SearchInfo",
                                    "mode partial missing fanout nprobe ef recall",
                                    defaults=(None, None, None))
SearchInfo.__doc__ = """What the server said about the last search: the mode that
ran ("hnsw"/"exact", or "mixed" across split requests), partial (True when some
shards missed the deadline), missing (their endpoints), fanout (sum over the
queries of the shards each was sent to; 0 when the server does not say); at a
recall target, nprobe and ef (the setting the coordinator ran) and recall (what
its calibration measured there), else None."""

KnnChunk = collections.namedtuple("KnnChunk", "ids D I total cursor partial missing")
KnnChunk.__doc__ = """One chunk of a k-NN graph: ids (n,) int64 the rows' own ids,
D float32 (n, k), I int64 (n, k) their neighbours (padding -1 / +inf), total
(rows in the whole graph), cursor (resumes after this chunk; "" at the end),
partial / missing as for SearchInfo."""


class PartialResultWarning(UserWarning):
    """Some shards missed a search's deadline: the results cover the others."""


def _progress_bar(enabled, total, desc):
    """A tqdm bar when enabled and tqdm is importable, else a stand-in."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit="vec")
        except ImportError:
            pass
    return _NoBar()


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _as_matrix(x, what="vectors"):
    """x as a C-contiguous little-endian float32 (n, dim) array (1-D = one row)."""
    a = np.asarray(x, dtype="<f4")
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ValueError("%s must be a 2-D (n, dim) array, got shape %s" % (what, a.shape))
    return np.ascontiguousarray(a)


def _as_ids(x, what="ids"):
    """x as a C-contiguous little-endian uint64 1-D array of non-negative ids."""
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError("%s must be 1-D, got shape %s" % (what, a.shape))
    if a.size == 0:
        return np.empty(0, dtype="<u8")
    if a.dtype.kind == "u":
        return np.ascontiguousarray(a, dtype="<u8")
    if a.dtype.kind == "i":
        if (a < 0).any():
            raise ValueError("%s must be >= 0 (got %d)" % (what, int(a.min())))
        return np.ascontiguousarray(a.astype("<u8"))
    if a.dtype.kind == "O":  # Python ints beyond int64
        try:
            return np.ascontiguousarray(np.array([int(v) for v in a], dtype="<u8"))
        except (OverflowError, TypeError, ValueError):
            pass
    raise TypeError("%s must be integers, got dtype %s" % (what, a.dtype))


def _lift(header, **opts):
    """header with the options that are not None added."""
    for key, value in opts.items():
        if value is not None:
            header[key] = value
    return header


class Client:
    """A connection to a shoal coordinator (or shard).

    Client(endpoint, timeout=30.0): endpoint defaults to $SHOAL_COORDINATOR,
    else tcp://127.0.0.1:7700; timeout is the most seconds to wait for a reply
    (ClientTimeoutError after that). max_batch and max_message_bytes are the
    server's limits (docs/protocol.md section 7, defaults there); large inputs
    are split into requests within them. write_batch / search_batch cap the
    rows of one insert / search request, window the requests in flight.

    CURVE (docs/operations.md, "Security"): curve_key is this client's secret
    certificate file (the _secret file of `shoal keygen`), curve_server_key
    the server's public certificate file; defaults $SHOAL_CURVE_KEY and
    $SHOAL_CURVE_SERVER_KEY; both or neither. A server that does not admit
    the key answers nothing: calls raise ClientTimeoutError, whose message
    says to check the keys.
    """

    def __init__(self, endpoint=None, timeout=30.0, *, max_batch=DEFAULT_MAX_BATCH,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, write_batch=65536,
                 search_batch=2048, window=16, context=None, curve_key=None,
                 curve_server_key=None):
        self.endpoint = endpoint or os.environ.get("SHOAL_COORDINATOR") or DEFAULT_ENDPOINT
        self.timeout = float(timeout)
        self.max_batch = int(max_batch)
        self.max_message_bytes = int(max_message_bytes)
        self.write_batch = int(write_batch)
        self.search_batch = int(search_batch)
        self.window = max(1, int(window))
        self.last_search = None
        curve_key = curve_key or os.environ.get("SHOAL_CURVE_KEY") or None
        curve_server_key = (curve_server_key or os.environ.get("SHOAL_CURVE_SERVER_KEY")
                            or None)
        if bool(curve_key) != bool(curve_server_key):
            raise ValueError("curve_key and curve_server_key go together (this client's "
                             "secret certificate and the server's public one)")
        self._curve = None
        if curve_key:
            public, secret = _load_cert(curve_key, True)
            server, _ = _load_cert(curve_server_key, False)
            self._curve = (public, secret, server)
        self._heard = False  # a reply came: a later timeout is not a refused handshake
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self._curve:
            self._sock.curve_publickey, self._sock.curve_secretkey, \
                self._sock.curve_serverkey = self._curve
        self._sock.connect(self.endpoint)
        self._rids = itertools.count(1)
        self._inflight = {}  # rid -> op, requests sent and not answered
        self._stash = {}  # rid -> (header, frames), replies that came early

    # ------------------------------------------------------------------
    # lifetime
    # ------------------------------------------------------------------

    def close(self):
        """Closes the socket (replies still on the way are dropped)."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._inflight.clear()
        self._stash.clear()

    @property
    def closed(self):
        return self._sock is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "Client(%r%s)" % (self.endpoint, ", closed" if self.closed else "")

    # ------------------------------------------------------------------
    # requests and replies
    # ------------------------------------------------------------------

    def _send(self, op, header, frames=()):
        """Sends one request; returns its rid."""
        if self._sock is None:
            raise ValueError("the client is closed")
        rid = next(self._rids)
        head = {"v": PROTOCOL_VERSION, "op": op, "rid": rid}
        head.update(header)
        parts = [msgpack.packb(head, use_bin_type=True)]
        parts.extend(frames)
        self._sock.send_multipart(parts, copy=False)
        self._inflight[rid] = op
        return rid

    def _read(self, parts, rid):
        """(header, bulk frames) of a received message."""
        # Section 1's REQ rule: a request whose first frame is empty gets its
        # reply behind an empty frame. This client never sends one, but a reply
        # behind one is read past it all the same.
        if len(parts) > 1 and len(parts[0]) == 0:
            parts = parts[1:]
        try:
            header = msgpack.unpackb(parts[0].bytes, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several types
            raise ReplyError("unreadable reply header: %s" % e, rid=rid)
        if not isinstance(header, dict):
            raise ReplyError("reply header is not a map", rid=rid)
        return header, parts[1:]

    def _wait(self, rid):
        """The reply to rid: (header, bulk frames); raises its error."""
        op = self._inflight.get(rid)
        if rid in self._stash:
            header, frames = self._stash.pop(rid)
        else:
            header, frames = self._receive(rid, op)
        self._inflight.pop(rid, None)
        code = header.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            raise ReplyError("reply has no integer \"code\"", op=op, rid=rid)
        if code != 0:
            msg = header.get("msg")
            err = header.get("err")
            raise error_for(code, err if isinstance(err, str) else None,
                            msg if isinstance(msg, str) else "", op=op, rid=rid)
        return header, frames

    def _receive(self, rid, op):
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(max(1, int(left * 1000))):
                self._inflight.pop(rid, None)
                hint = ""
                if not self._heard:
                    # A CURVE server that refuses the key is silent, not an error.
                    hint = (" (no answer at all: check that this client's key is authorized "
                            "and the server key is right)" if self._curve else
                            " (no answer at all: if the server uses CURVE, give curve_key "
                            "and curve_server_key)")
                raise ClientTimeoutError(
                    "no reply from %s within %.3g s%s" % (self.endpoint, self.timeout, hint),
                    op=op, rid=rid)
            parts = self._sock.recv_multipart(copy=False)
            self._heard = True
            header, frames = self._read(parts, rid)
            got = header.get("rid")
            if got == rid:
                return header, frames
            if got in self._inflight and got != 0:
                self._stash[got] = (header, frames)
                continue
            # An error reply to a request whose rid the server could not read
            # has rid 0 (section 6, "Addressing an error reply"): it answers a
            # request still in flight, most likely the one waited for.
            # Anything else is a late reply to a request given up on
            # (timeout): dropped.
            if (got == 0 or got is None) and header.get("code", 0) != 0:
                return header, frames

    def _call(self, op, header, frames=()):
        return self._wait(self._send(op, header, frames))

    def _pipeline(self, requests, window=None, budget=None):
        """Sends (op, header, frames, ctx) requests with up to `window` in
        flight and (when budget is given) at most `budget` rows (header "n")
        in flight beyond the first request; yields (ctx, header, frames) in
        order. On an error the rest is abandoned (late replies are dropped)
        and the error raised.

        The row budget keeps large searches from queueing behind each other
        at the server: a request's deadline runs from its arrival, so many
        big ones sent at once would miss it and come back partial."""
        window = window or self.window
        pending = collections.deque()
        rows = 0
        try:
            for op, header, frames, ctx in requests:
                n = header.get("n", 1)
                while pending and (len(pending) >= window or
                                   (budget is not None and rows + n > budget)):
                    rid, c, m = pending.popleft()
                    rows -= m
                    h, f = self._wait(rid)
                    yield c, h, f
                pending.append((self._send(op, header, frames), ctx, n))
                rows += n
            while pending:
                rid, c, _ = pending.popleft()
                h, f = self._wait(rid)
                yield c, h, f
        finally:
            for rid, _, _ in pending:
                self._inflight.pop(rid, None)
                self._stash.pop(rid, None)

    @staticmethod
    def _info(header):
        info = header.get("info")
        return info if isinstance(info, dict) else {}

    def _rows(self, per_row, fixed=0, cap=None):
        """Rows per request so that fixed + rows * per_row bytes fit the limit."""
        room = self.max_message_bytes - HEADER_SLACK - fixed
        rows = room // max(1, per_row)
        rows = min(rows, self.max_batch, cap or self.max_batch)
        if rows < 1:
            raise ValueError("one row (%d bytes) does not fit max_message_bytes %d"
                             % (per_row + fixed, self.max_message_bytes))
        return int(rows)

    @staticmethod
    def _frame(header, frames, i, dtype, count, what):
        """Bulk frame i as a numpy array of `count` elements, checked."""
        if i >= len(frames):
            raise ReplyError("%s: frame %d missing" % (what, i + 1))
        a = np.frombuffer(frames[i].buffer, dtype=dtype)
        if a.size != count or len(frames[i]) != count * np.dtype(dtype).itemsize:
            raise ReplyError("%s: frame %d has %d bytes, expected %d"
                             % (what, i + 1, len(frames[i]), count * np.dtype(dtype).itemsize))
        return a

    # ------------------------------------------------------------------
    # server and collections
    # ------------------------------------------------------------------

    def ping(self):
        """Liveness check; returns the server's info map (role, uptime_s, ...)."""
        return self._info(self._call("ping", {})[0])

    def stats(self, name=None):
        """The server's stats info map, or one collection's (enotfound if absent)."""
        return self._info(self._call("stats", _lift({}, coll=name or None))[0])

    status = stats

    def collections(self):
        """Names of the collections the server has."""
        return sorted(self.stats().get("collections", {}) or {})

    def count(self, name):
        """Vectors in collection `name` (the coordinator's id map)."""
        info = self.stats(name).get("collections", {}).get(name, {})
        return int(info.get("count", 0))

    def checkpoint(self, name=None):
        """Asks the server to checkpoint now (one collection, or all)."""
        return self._info(self._call("checkpoint", _lift({}, coll=name or None))[0])

    # ------------------------------------------------------------------
    # cluster growth (docs/protocol.md 11.9; the coordinator only)
    # ------------------------------------------------------------------

    def add_shard(self, endpoint):
        """Adds the running shard at `endpoint` (lists come to it with
        rebalance()); returns {"endpoint", "index", "shards"}."""
        return self._shard_op("shard_add", endpoint)

    def drain_shard(self, endpoint):
        """Plans the moves of every list off the shard and starts them; returns
        {"endpoint", "moves", "vectors"} once they are planned, not done
        (stats()["moves"] follows them)."""
        return self._shard_op("shard_drain", endpoint)

    def remove_shard(self, endpoint):
        """Removes a drained shard; returns {"endpoint", "shards"}."""
        return self._shard_op("shard_remove", endpoint)

    def rebalance(self, dry_run=False, max_moves=0, rate_mb=0):
        """Plans list moves that even out the shards and, unless dry_run,
        starts them. max_moves 0: no limit; rate_mb 0: the coordinator's copy
        rate. Returns the plan's info map: moves, vectors, imbalance_before /
        _after, shards_per_query_before / _after / _fresh, and plan (a list of
        {"coll", "list", "replica", "from", "to", "vectors"}, at most 1,000)."""
        header = {}
        for key, value in (("max_moves", max_moves), ("rate_mb", rate_mb)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError("%s must be an integer, got %r" % (key, value))
            if not 0 <= int(value) <= 0xFFFFFFFF:
                raise ValueError("%s must be 0..4294967295, got %d" % (key, int(value)))
            if value:
                header[key] = int(value)  # 0 is each key's default: not sent
        if dry_run:
            header["dry_run"] = 1
        return self._info(self._call("rebalance", header)[0])

    # ------------------------------------------------------------------
    # snapshots (docs/protocol.md 11.10; the coordinator only)
    # ------------------------------------------------------------------

    def snapshot_create(self, name):
        """Takes a consistent snapshot of the cluster named `name` (every
        shard's database and the catalog, each at <data-dir>/snapshots/NAME on
        its own host; writes wait while it runs). Returns its info map: name,
        created, dir, paused_ms, waited_ms, shards (a list of {"endpoint",
        "dir", "seq"}) and collections (a list of {"name", "count"})."""
        if not isinstance(name, str):
            raise TypeError("name must be a str, got %r" % (name,))
        if not _SNAPSHOT_NAME.match(name):
            raise ValueError("snapshot name %r must be 1..64 of A-Z a-z 0-9 _ . - and not "
                             "begin with '.'" % name)
        return self._info(self._call("snapshot_create", {"name": name})[0])

    def snapshots(self):
        """The snapshots the catalog records, by name: a list of {"name",
        "created", "shards", "collections", "vectors"} (at most 256; the reply's
        "total" counts them all)."""
        return self._info(self._call("snapshot_list", {})[0]).get("snapshots", [])

    def _shard_op(self, op, endpoint):
        """shard_add / shard_drain / shard_remove of one endpoint, checked as the
        server would (1..255 bytes of printable ASCII)."""
        if not isinstance(endpoint, str):
            raise TypeError("endpoint must be a str, got %r" % (endpoint,))
        if not 1 <= len(endpoint.encode("utf-8")) <= 255:
            raise ValueError("endpoint must have 1..255 bytes, got %d"
                             % len(endpoint.encode("utf-8")))
        if any(not " " <= c <= "~" for c in endpoint):
            raise ValueError("endpoint %r has a character outside printable ASCII" % endpoint)
        return self._info(self._call(op, {"endpoint": endpoint})[0])

    def create_collection(self, name, dim, metric="l2", nlist=None, *, M=None,
                          ef_construction=None, replication=None, write_quorum=None,
                          target_recall=None, storage=None, **options):
        """Creates a collection; returns the parameters in effect (info map).

        metric: "l2", "ip" or "cosine"; nlist: IVF lists (coordinator default
        when None); M / ef_construction: HNSW parameters of the shards;
        replication: copies of each list on distinct shards (1..3, default 1);
        write_quorum: replicas that must hold a write before it is
        acknowledged (1..replication, default 1); target_recall: the recall@10
        its searches aim at when they give neither nprobe, ef nor recall (0..1];
        storage: how the shards keep the vectors in RAM, "f32" (default), "f16"
        or "sq8" (one copy as codes, float32 rows on disk; exact search stays
        exact). Extra keyword options are sent as header keys as given.
        """
        header = _lift({"coll": name, "dim": int(dim), "metric": metric}, nlist=nlist, M=M,
                       ef_construction=ef_construction, replication=replication,
                       write_quorum=write_quorum)
        if target_recall is not None:
            header["target_recall"] = float(target_recall)
        if storage is not None:
            header["storage"] = str(storage)
        header.update(options)
        return self._info(self._call("create_collection", header)[0])

    def drop(self, name):
        """Drops a collection (enotfound if absent)."""
        self._call("drop_collection", {"coll": name})

    drop_collection = drop

    def train(self, name, sample, *, init=None, max_iters=None, seed=None):
        """k-means on `sample` (float32 (n, dim)) sets the collection's IVF
        centroids; returns the training report (info map). init: 0 k-means++,
        1 random rows."""
        X = _as_matrix(sample, "sample")
        fit = self._rows(4 * X.shape[1])
        if X.shape[0] > fit:
            # One request carries the whole sample: a larger one would be
            # refused (or dropped unanswered by ZeroMQ's message size limit).
            warnings.warn("train: the sample's %d rows exceed one request's limits: "
                          "training on %d evenly spaced rows" % (X.shape[0], fit), stacklevel=2)
            X = np.ascontiguousarray(X[np.linspace(0, X.shape[0] - 1, fit).astype(np.int64)])
        header = _lift({"coll": name, "n": X.shape[0], "dim": X.shape[1]},
                       init=init, max_iters=max_iters, seed=seed)
        return self._info(self._call("train", header, [X])[0])

    # ------------------------------------------------------------------
    # writes
    # ------------------------------------------------------------------

    def insert(self, name, vectors, ids, *, progress=False):
        """Writes vectors (float32 (n, dim)) under ids (n non-negative
        integers); an existing id is replaced. Large arrays go in several
        requests (progress=True shows a tqdm bar when tqdm is importable).
        Returns the number of vectors written."""
        X = _as_matrix(vectors)
        I = _as_ids(ids)
        n, dim = X.shape
        if I.shape[0] != n:
            raise ValueError("%d vectors but %d ids" % (n, I.shape[0]))
        if n == 0:
            return 0
        rows = self._rows(8 + 4 * dim, cap=self.write_batch)

        def frames(a, b):
            return [I[a:b], X[a:b]]

        return self._write("insert", name, n, rows, frames, {"dim": dim}, progress)

    upsert = insert

    def delete(self, name, ids, *, progress=False):
        """Deletes ids (absent ones are skipped); returns how many existed."""
        I = _as_ids(ids)
        if I.shape[0] == 0:
            return 0
        rows = self._rows(8, cap=max(self.write_batch, 1 << 20))

        def frames(a, b):
            return [I[a:b]]

        return self._write("delete", name, I.shape[0], rows, frames, {}, progress)

    def _write(self, op, name, n, rows, frames, extra, progress):
        bar = _progress_bar(progress, n, "%s %s" % (op, name))
        total, start = 0, 0
        try:
            while start < n:
                end = min(n, start + rows)
                header = {"coll": name, "n": end - start}
                header.update(extra)
                try:
                    reply = self._call(op, header, frames(start, end))[0]
                except ElimitError as e:
                    # The server's limits are smaller than this client was
                    # told: a request refused with elimit did nothing, so it
                    # is sent again in smaller pieces.
                    if end - start <= 1:
                        raise
                    m = re.search(r'"n" must be 1\.\.(\d+)', e.msg or "")
                    limit = int(m.group(1)) if m else 0
                    rows = limit if 0 < limit < end - start else max(1, (end - start) // 2)
                    continue
                count = reply.get("count")
                total += count if isinstance(count, int) else 0
                bar.update(end - start)
                start = end
        finally:
            bar.close()
        return total

    # ------------------------------------------------------------------
    # reads
    # ------------------------------------------------------------------

    def get(self, name, ids):
        """Stored vectors of ids: (vectors float32 (n, dim), found bool (n,)),
        zero rows where absent (cosine collections hold normalised vectors)."""
        I = _as_ids(ids)
        n = I.shape[0]
        out, found, dim = None, np.zeros(n, dtype=bool), None
        # The reply's size depends on the dim, known from the first reply:
        # that one asks for few rows (and fewer again if refused with elimit).
        start, rows = 0, min(self.max_batch, self.write_batch, 1024)
        while start < n:
            end = min(n, start + rows)
            try:
                header, frames = self._call("get", {"coll": name, "n": end - start},
                                            [I[start:end]])
            except ElimitError:
                if end - start <= 1:
                    raise
                rows = (end - start) // 2
                continue
            m = end - start
            dim = header.get("dim")
            if not isinstance(dim, int) or dim < 0:
                raise ReplyError("get: reply has no \"dim\"", op="get")
            flags = self._frame(header, frames, 0, "u1", m, "get")
            vecs = self._frame(header, frames, 1, "<f4", m * dim, "get")
            if out is None:
                out = np.zeros((n, dim), dtype=np.float32)
                rows = self._rows(1 + 4 * dim, cap=min(self.write_batch, rows * 64))
            found[start:end] = flags != 0
            out[start:end] = vecs.reshape(m, dim)
            start = end
        if out is None:
            out = np.zeros((0, 0), dtype=np.float32)
        return out, found

    def _search_requests(self, name, Q, k, opts, fil):
        nq, dim = Q.shape
        fixed = 0 if fil is None else 8 * fil.shape[0]
        rows = self._rows(4 * dim, fixed=fixed, cap=self.search_batch)
        rows = min(rows, self._rows(12 * max(1, k)))  # the reply's size
        header = _lift({"coll": name, "dim": dim, "k": k}, **opts)
        if fil is not None:
            header["nfilter"] = fil.shape[0]
        for start in range(0, nq, rows):
            end = min(nq, start + rows)
            h = dict(header, n=end - start)
            frames = [Q[start:end]] if fil is None else [Q[start:end], fil]
            yield "search", h, frames, (start, end)

    def search(self, name, queries, k, nprobe=None, ef=None, mode=None, recall=None,
               filter=None, *, deadline_ms=None, **options):
        """k nearest neighbours of each query (float32 (nq, dim), or one 1-D
        query): returns (D float32 (nq, k), I int64 (nq, k)), best first,
        padded with -1 / +inf.

        nprobe: IVF lists probed; ef: HNSW candidates; mode: "auto", "hnsw"
        or "exact"; recall: a target recall@10 in (0, 1], sent only when
        given: the coordinator picks nprobe and ef from its calibration of the
        collection (client.last_search says which; protocol section 11.4);
        filter: ids allowed in the results; deadline_ms: the coordinator's
        deadline. Many queries go in several pipelined requests. When shards
        miss the deadline the results cover the others, a
        PartialResultWarning is issued and client.last_search says which.
        """
        Q = _as_matrix(queries, "queries")
        return self._search_all(name, [Q], k, dict(
            nprobe=nprobe, ef=ef, mode=mode, recall=recall, deadline_ms=deadline_ms,
            **options), filter)[0]

    def search_many(self, name, query_sets, k, nprobe=None, ef=None, mode=None, recall=None,
                    filter=None, *, deadline_ms=None, **options):
        """search() for each of many query arrays (a list of (dim,) or (m, dim)
        arrays), with their requests pipelined (self.window in flight): much
        faster than calling search() in a loop. Returns a list of (D, I)."""
        sets = [_as_matrix(q, "queries") for q in query_sets]
        return self._search_all(name, sets, k, dict(
            nprobe=nprobe, ef=ef, mode=mode, recall=recall, deadline_ms=deadline_ms,
            **options), filter)

    def _search_all(self, name, sets, k, opts, filter):
        opts = {key: value for key, value in opts.items() if value is not None}
        fil = None if filter is None else _as_ids(filter, "filter")
        if fil is not None and fil.shape[0] == 0:
            # An empty allow-list allows nothing (nfilter 0 would mean "no filter").
            return [self._padding(Q.shape[0], k) for Q in sets]
        kk = max(0, int(k))
        results = [(np.full((Q.shape[0], kk), np.inf, dtype=np.float32),
                    np.full((Q.shape[0], kk), -1, dtype=np.int64)) for Q in sets]

        def requests():
            for i, Q in enumerate(sets):
                if Q.shape[0] == 0:
                    continue
                for op, h, f, (a, b) in self._search_requests(name, Q, k, opts, fil):
                    yield op, h, f, (i, a, b)

        modes, partial, missing, fanout = set(), False, [], 0
        setting = (None, None, None)
        budget = 2 * self.search_batch
        for (i, a, b), header, frames in self._pipeline(requests(), budget=budget):
            m = b - a
            rk = header.get("k", k)
            if rk != k or header.get("n", m) != m:
                raise ReplyError("search: reply n=%r k=%r, asked n=%d k=%d"
                                 % (header.get("n"), rk, m, k), op="search")
            ids = self._frame(header, frames, 0, "<u8", m * kk, "search")
            dist = self._frame(header, frames, 1, "<f4", m * kk, "search")
            D, I = results[i]
            I[a:b] = ids.view("<i8").reshape(m, kk)
            D[a:b] = dist.reshape(m, kk)
            if isinstance(header.get("mode"), str):
                modes.add(header["mode"])
            if header.get("partial") == 1:
                partial = True
                miss = header.get("missing")
                if isinstance(miss, str) and miss:
                    missing.extend(x for x in miss.split(",") if x not in missing)
            if isinstance(header.get("fanout"), int):
                fanout += header["fanout"]
            if isinstance(header.get("recall"), float):
                setting = (header.get("nprobe"), header.get("ef"), header["recall"])
        for D, I in results:
            D[I < 0] = np.inf  # Faiss's padding whatever the server sent there
        mode = modes.pop() if len(modes) == 1 else ("mixed" if modes else None)
        self.last_search = SearchInfo(mode, partial, ",".join(missing), fanout, *setting)
        if partial:
            warnings.warn("search of %r: shards missed the deadline (%s): partial results"
                          % (name, ",".join(missing) or "unknown"), PartialResultWarning,
                          stacklevel=3)
        return results

    @staticmethod
    def _padding(nq, k):
        kk = max(0, int(k))
        return (np.full((nq, kk), np.inf, dtype=np.float32), np.full((nq, kk), -1, dtype=np.int64))

    # ------------------------------------------------------------------
    # k-NN graph
    # ------------------------------------------------------------------

    def knn_graph(self, name, k, *, chunk=None, mode=None, ef=None, nprobe=None,
                  deadline_ms=None, cursor=None, progress=False):
        """The k-NN graph of every vector of the collection, as an iterator of
        KnnChunk (rows' own ids, D, I, total, cursor, ...), pulled from the
        coordinator one chunk at a time. A walk can be resumed later from a
        chunk's cursor (cursor=...)."""
        header = _lift({"coll": name, "k": int(k)}, chunk=chunk, mode=mode, ef=ef,
                       nprobe=nprobe, deadline_ms=deadline_ms)
        cursor = cursor or ""
        bar = None
        try:
            while True:
                h = dict(header)
                if cursor:
                    h["cursor"] = cursor
                reply, frames = self._call("knn_graph", h)
                n, rk = reply.get("n"), reply.get("k")
                nxt, total = reply.get("cursor"), reply.get("total", 0)
                if not isinstance(n, int) or not isinstance(rk, int) or not isinstance(nxt, str):
                    raise ReplyError("knn_graph: reply lacks n, k or cursor", op="knn_graph")
                if bar is None:
                    bar = _progress_bar(progress, total, "knn_graph %s" % name)
                nbrs = self._frame(reply, frames, 0, "<u8", n * rk, "knn_graph")
                dist = self._frame(reply, frames, 1, "<f4", n * rk, "knn_graph")
                own = self._frame(reply, frames, 2, "<u8", n, "knn_graph")
                I = nbrs.view("<i8").reshape(n, rk).copy()
                D = dist.reshape(n, rk).copy()
                D[I < 0] = np.inf
                miss = reply.get("missing") if isinstance(reply.get("missing"), str) else ""
                if reply.get("partial") == 1:
                    warnings.warn("knn_graph of %r: shards missed the deadline (%s)"
                                  % (name, miss or "unknown"), PartialResultWarning,
                                  stacklevel=2)
                if n:
                    bar.update(n)
                    yield KnnChunk(own.view("<i8").copy(), D, I, total, nxt,
                                   reply.get("partial") == 1, miss)
                if nxt == "" or (n == 0 and nxt == cursor):
                    return
                cursor = nxt
        finally:
            if bar is not None:
                bar.close()

    def knn_graph_array(self, name, k, **kwargs):
        """The whole k-NN graph at once: (ids (n,) int64, D float32 (n, k),
        I int64 (n, k)), rows in the coordinator's order. Takes
        knn_graph()'s keyword arguments."""
        ids, Ds, Is = [], [], []
        for c in self.knn_graph(name, k, **kwargs):
            ids.append(c.ids)
            Ds.append(c.D)
            Is.append(c.I)
        if not ids:
            kk = max(0, int(k))
            return (np.empty(0, np.int64), np.empty((0, kk), np.float32),
                    np.empty((0, kk), np.int64))
        return np.concatenate(ids), np.concatenate(Ds), np.concatenate(Is)
