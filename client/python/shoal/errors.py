"""Errors: one ShoalError subclass per error code of docs/protocol.md section 6.

Every error a server answers is raised as the subclass of its `code`, carrying
the server's `msg` unchanged; an unknown (newer) negative code is raised as
ShoalError itself, with its `code` and `err`. Errors the client itself detects
while talking to a server (no reply in time, a reply that breaks the protocol)
are raised as ClientTimeoutError (an EtimeoutError) and ReplyError (an
EprotoError). Bad arguments caught before anything is sent (a 3-D array, a
negative id) are ValueError / TypeError, as usual in Python.
"""


class ShoalError(Exception):
    """An error reply of a shoal server (or one the client detected).

    Attributes: code (int, negative; None for client-side errors that have no
    protocol code), err (the code's short name, "einval"), msg (the server's
    message), op (the request's op), rid (the request id).
    """

    code = None
    err = "error"

    def __init__(self, msg="", code=None, err=None, op=None, rid=None):
        if code is not None:
            self.code = code
        if err is not None:
            self.err = err
        self.msg = msg
        self.op = op
        self.rid = rid
        super().__init__(msg)

    def __str__(self):
        where = "%s: " % self.op if self.op else ""
        return "%s%s (%s)" % (where, self.msg or self.err, self.err)

    def __repr__(self):
        return "%s(code=%r, err=%r, msg=%r, op=%r)" % (
            type(self).__name__, self.code, self.err, self.msg, self.op)


def _define(code, err, doc):
    name = err[0].upper() + err[1:] + "Error"
    cls = type(name, (ShoalError,), {"code": code, "err": err, "__doc__": doc})
    return cls


EnomemError = _define(-1, "enomem", "The server ran out of memory serving the request.")
EinvalError = _define(-2, "einval", "A value out of range or malformed.")
EioError = _define(-3, "eio", "The server's storage failed.")
EformatError = _define(-4, "eformat", "A file or stored value has the wrong format.")
EdimError = _define(-5, "edim", "The request's dim is not the collection's.")
EnotfoundError = _define(-6, "enotfound", "The collection does not exist.")
EexistError = _define(-7, "eexist", "The collection already exists.")
EnodevError = _define(-8, "enodev", "A GPU was required and none is usable.")
ElimitError = _define(-9, "elimit", "A limit of the server (size, n, k, dim, ...) is exceeded.")
EprotoError = _define(-10, "eproto", "A protocol violation.")
EcorruptError = _define(-11, "ecorrupt", "Stored data failed its checks.")
EunsupportedError = _define(-12, "eunsupported", "A valid request this server cannot serve.")
EtimeoutError = _define(-13, "etimeout", "A deadline passed.")
EunavailError = _define(-14, "eunavail", "A needed peer or resource is down.")
EinternalError = _define(-15, "einternal", "A bug in the server.")
EgpuError = _define(-16, "egpu", "A CUDA / cuBLAS / NCCL call failed.")

#: code -> class, for every code of the protocol's table.
ERRORS = {c.code: c for c in (
    EnomemError, EinvalError, EioError, EformatError, EdimError, EnotfoundError,
    EexistError, EnodevError, ElimitError, EprotoError, EcorruptError,
    EunsupportedError, EtimeoutError, EunavailError, EinternalError, EgpuError)}

# Friendlier names for the ones applications usually catch.
InvalidArgument = EinvalError
DimensionMismatch = EdimError
NotFound = EnotfoundError
AlreadyExists = EexistError
LimitExceeded = ElimitError
ProtocolError = EprotoError
Unsupported = EunsupportedError
Unavailable = EunavailError


class ClientTimeoutError(EtimeoutError, TimeoutError):
    """No reply within the client's timeout (the server may be down or busy)."""


class ReplyError(EprotoError):
    """A reply the client cannot read (it breaks docs/protocol.md)."""


def error_for(code, err=None, msg="", op=None, rid=None):
    """The exception for an error reply's fields."""
    cls = ERRORS.get(code, ShoalError)
    if cls is ShoalError:
        return ShoalError(msg, code=code, err=err or "unknown", op=op, rid=rid)
    return cls(msg, err=err or cls.err, op=op, rid=rid)
