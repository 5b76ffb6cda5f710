"""
The one place where exceptions become HTTP error responses.
"""

from __future__ import annotations

import json

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from quayd.errors import RegistryError, Unsupported

_log = Logger()


class NotFoundRoute(RegistryError):
    """No route matches the request path."""

    code = "UNSUPPORTED"
    status = 404
    default_message = "no such endpoint"


class MethodNotAllowed(Unsupported):
    """The route exists but not for this method."""

    status = 405
    default_message = "method not allowed on this endpoint"


def error_body(error: RegistryError) -> bytes:
    """The spec's JSON error document for C{error}."""
    entry: dict[str, object] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return json.dumps({"errors": [entry]}, separators=(",", ":")).encode()


def render_error(request: IRequest, failure: Failure) -> bytes:
    """
    Turn an exception raised by a handler into the response.

    L{RegistryError}s become the spec's JSON error body with their status and
    headers; anything else is logged and becomes a 500 C{UNKNOWN} without
    details. If the response has already started, the connection is aborted.
    """
    error = failure.value
    if not isinstance(error, RegistryError):
        _log.failure(
            "unhandled error in {method} {path}",
            failure,
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
        )
        error = RegistryError("internal server error")
    else:
        _log.info(
            "{method} {path}: {status} {code} {message}",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
            status=error.status,
            code=error.code,
            message=error.message,
        )
    if getattr(request, "startedWriting", False):
        transport = getattr(getattr(request, "channel", None), "transport", None)
        if transport is not None:
            transport.abortConnection()
        return b""
    body = error_body(error)
    request.setResponseCode(error.status)
    request.responseHeaders.setRawHeaders(b"Content-Type", [b"application/json; charset=utf-8"])
    request.responseHeaders.setRawHeaders(b"Content-Length", [str(len(body)).encode()])
    for name, value in error.headers.items():
        request.responseHeaders.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
    if request.method == b"HEAD":
        return b""
    return body
