"""Errors azproxy produces itself, rendered in OpenAI's error shape.

* ProxyError                 500 api_error
  + BadRequest               400 invalid_request_error
  + InvalidCredentials       401 invalid_request_error / invalid_api_key
  + Forbidden                403 invalid_request_error / model_not_allowed
  + NotFound                 404 invalid_request_error / unknown_url
  + MethodNotAllowed         405 invalid_request_error
  + RequestTimeout           408 invalid_request_error / request_timeout
                               (then the connection closes: closing.py)
  + PayloadTooLarge          413 invalid_request_error
  + UnsupportedMediaType     415 invalid_request_error / unsupported_content_encoding
  + RateLimited              429 requests / rate_limit_exceeded
  + UpgradeRequired          426 invalid_request_error / websocket_required
  + UpstreamUnreachable      502 api_error
  + ServiceUnavailable       503 api_error
  + UpstreamTimeout          504 timeout

Upstream error bodies are never wrapped: they are relayed as Azure sent them.
Messages say what to fix and never contain a secret.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import ClassVar

from aiohttp import web

from azproxy.server.closing import ClosingResponse

__all__ = [
    "BadRequest",
    "Forbidden",
    "InvalidCredentials",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProxyError",
    "RateLimited",
    "RequestTimeout",
    "ServiceUnavailable",
    "UnsupportedMediaType",
    "UpgradeRequired",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "error_body",
]


def error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    """The JSON body OpenAI uses for errors: {"error": {message, type, param, code}}."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


class ProxyError(Exception):
    status = 500
    type = "api_error"
    code = "internal_error"
    response_class: ClassVar[builtins.type[web.Response]] = web.Response

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> web.Response:
        return self.response_class(
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
    response_class = ClosingResponse


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


class UpgradeRequired(ProxyError):
    """A WebSocket-only endpoint called without the upgrade (RFC 9110 §15.5.22)."""

    status = 426
    type = "invalid_request_error"
    code = "websocket_required"
