"""shoal - Python client of the shoal distributed vector search cluster.

    import numpy as np
    import shoal

    with shoal.Client("tcp://127.0.0.1:7700") as c:
        c.create_collection("docs", dim=128, metric="l2", nlist=64)
        c.train("docs", X[:10000])
        c.insert("docs", X, ids=np.arange(len(X)))
        D, I = c.search("docs", Q, k=10, nprobe=16)

It speaks docs/protocol.md directly (msgpack headers and raw array frames over
a ZeroMQ DEALER socket); see shoal.Client for every call and shoal.errors for
the exceptions (one ShoalError subclass per error code).
"""

from .client import (DEFAULT_ENDPOINT, KnnChunk, PROTOCOL_VERSION, Client,
                     PartialResultWarning, SearchInfo)
from .errors import *  # noqa: F401,F403 (every error class)
from .errors import ERRORS, ClientTimeoutError, ReplyError, ShoalError, error_for

__version__ = "0.1.0"

__all__ = [
    "Client", "SearchInfo", "KnnChunk", "PartialResultWarning", "DEFAULT_ENDPOINT",
    "PROTOCOL_VERSION", "ShoalError", "ClientTimeoutError", "ReplyError", "ERRORS",
    "error_for",
] + [cls.__name__ for cls in ERRORS.values()] + [
    "InvalidArgument", "DimensionMismatch", "NotFound", "AlreadyExists", "LimitExceeded",
    "ProtocolError", "Unsupported", "Unavailable",
]
