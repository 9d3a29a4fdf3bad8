"""One exception tree: every exception azproxy defines.

* AzproxyError                 the root
  + ProxyError                 HTTP-facing: rendered in OpenAI's error shape
    |                          with its status; 500 api_error by default
    + BadRequest               400 invalid_request_error
    + InvalidCredentials       401 invalid_request_error / invalid_api_key
    + Forbidden                403 invalid_request_error / model_not_allowed
    | + QuotaExceeded          403 insufficient_quota / quota_exceeded: an
    |                            access key's token_quota is spent
    + NotFound                 404 invalid_request_error / unknown_url
    + MethodNotAllowed         405 invalid_request_error
    + RequestTimeout           408 invalid_request_error / request_timeout
    |                            (then the connection closes: server/closing.py)
    + PayloadTooLarge          413 invalid_request_error
    + UnsupportedMediaType     415 invalid_request_error / unsupported_content_encoding
    + UpgradeRequired          426 invalid_request_error / websocket_required
    + RateLimited              429 requests / rate_limit_exceeded (an access
    |                            key's rpm, tpm or max_concurrent, too)
    + UpstreamUnreachable      502 api_error
    + ServiceUnavailable       503 api_error
    + UpstreamTimeout          504 timeout
  + ConfigError                the settings are wrong: one line per problem
  + CannotListen               the address to serve on cannot be had (one line)
  + Internal                   control flow between modules; never reaches a
    |                          client as such
    + Failure                  one attempt at Azure got no usable answer
    + AllCoolingDown           every deployment of a model is cooling down
    + InvalidJson              a body's brackets or quotes do not match
    + StreamIncomplete         Azure ended a stream before its last event
    + ShuttingDown             the shutdown grace is over: cut the stream
    + SharedStateDown          Redis is away: the shared-state call was not made

An error is built whole, with its status, and never changed afterwards
(reworded() makes a new one). Upstream error bodies are never wrapped: they
are relayed as Azure sent them. Messages say what to fix and never contain
a secret.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping
from typing import ClassVar

from aiohttp import web

__all__ = [
    "AllCoolingDown",
    "AzproxyError",
    "BadRequest",
    "CannotListen",
    "ConfigError",
    "Failure",
    "Forbidden",
    "Internal",
    "InvalidCredentials",
    "InvalidJson",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProxyError",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "ServiceUnavailable",
    "SharedStateDown",
    "ShuttingDown",
    "StreamIncomplete",
    "UnsupportedMediaType",
    "UpgradeRequired",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "error_body",
    "forget_frames",
]


def error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    """The JSON body OpenAI uses for errors: {"error": {message, type, param, code}}."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def forget_frames(error: BaseException | None) -> None:
    """Drop the tracebacks of an error and of its causes, where something
    keeps the error: aiohttp's readers keep the one they raised (the answer's
    when Azure's connection breaks, the request's when the client's does),
    aiohttp and aiohappyeyeballs a connect error in a local of a frame its
    own traceback holds (last_exc, exceptions). Either is a cycle through
    the frames of the request, which would hold its body until the
    collector's next pass. azproxy reports these errors in its own words,
    never their tracebacks (log first what is to be logged with one)."""
    while error is not None:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


class AzproxyError(Exception):
    """The root of every exception azproxy defines."""


class ProxyError(AzproxyError):
    status = 500
    type = "api_error"
    code = "internal_error"
    # Whether the connection closes after this answer (the middleware then
    # sends it as a server.closing.ClosingResponse).
    closes_connection: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Instance values only where they differ from the class's: set here,
        # once, never afterwards.
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.headers = dict(headers or {})

    def reworded(self, message: str) -> ProxyError:
        """The same error with another message (a new instance)."""
        return builtins.type(self)(
            message,
            code=self.code,
            param=self.param,
            headers=self.headers,
            status=self.status,
            type=self.type,
        )

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def response(
        self, response_class: builtins.type[web.Response] = web.Response
    ) -> web.Response:
        return response_class(
            status=self.status,
            body=self.body(),
            content_type="application/json",
            headers=self.headers,
        )


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidCredentials(ProxyError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "unknown_url"


class MethodNotAllowed(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(ProxyError):
    """The client paused too long while sending its request body."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    closes_connection = True


class UnsupportedMediaType(ProxyError):
    """A body azproxy must read arrived compressed (Content-Encoding)."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_content_encoding"


class UpstreamUnreachable(ProxyError):
    status = 502
    type = "api_error"
    code = "upstream_unreachable"


class RateLimited(ProxyError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class ServiceUnavailable(ProxyError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class Forbidden(ProxyError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class QuotaExceeded(Forbidden):
    """An access key used its token_quota for the period; the message says
    when it renews. 403, not 429: waiting a few seconds will not help."""

    type = "insufficient_quota"
    code = "quota_exceeded"


class UpgradeRequired(ProxyError):
    """A WebSocket-only endpoint called without the upgrade (RFC 9110 §15.5.22)."""

    status = 426
    type = "invalid_request_error"
    code = "websocket_required"


class ConfigError(AzproxyError, ValueError):
    """One or more settings are wrong; `problems` has one line for each,
    saying what to change. Raised at start-up and by check-config, never
    while serving."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class CannotListen(AzproxyError):
    """The address to serve on is taken or cannot be had; the message is the
    one line to show, naming the flag that changes it. Raised at start-up."""


class Internal(AzproxyError):
    """Control flow between azproxy's own modules. Each is caught by the
    module that expects it and turned into an answer there."""


class Failure(Internal):
    """One attempt at Azure got no usable answer. `error` is what the
    client gets if nothing else works; `retryable` says whether the original
    proxy would have tried again; `unsent` that no byte of the request went
    out (the connection was never made), so even a stateful call may be sent
    again."""

    def __init__(
        self, error: ProxyError, *, retryable: bool, unsent: bool = False
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.unsent = unsent


class AllCoolingDown(Internal):
    """Every deployment of a model is cooling down: the shortest wait, and
    what Azure said about the limit behind it (`kind`: "requests" or
    "tokens", None when it did not say; `resets`: its reset headers, as the
    seconds still to wait)."""

    def __init__(
        self,
        wait_s: float,
        *,
        kind: str | None = None,
        resets: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(f"every deployment is cooling down for {wait_s:.3f} s")
        self.wait_s = wait_s
        self.kind = kind
        self.resets = dict(resets or {})


class SharedStateDown(Internal):
    """Redis (redis_url) did not answer in time, or is known to be away: the
    caller goes on with its process's own state (fleet/breaker.py)."""


class InvalidJson(Internal, ValueError):
    """A body's brackets or quotes do not match: it is not JSON (a 400 where
    it is caught)."""


class StreamIncomplete(Internal):
    """Azure ended a stream cleanly but before its last event."""

    def __init__(self, missing: str) -> None:
        super().__init__(missing)
        self.missing = missing


class ShuttingDown(Internal):
    """What a stream's upstream reader raises once the shutdown grace is
    over, so that the stream ends with the shutdown error event."""
