"""Azure refusing azproxy's own credentials: 502 upstream_auth_failed.

A server-side endpoint's key (or Entra ID token) is the operator's
configuration. Azure's 401 to it, relayed as it is, would tell a client whose
access key is valid that its key is wrong (the openai SDKs raise
AuthenticationError). The client gets a 502 naming the endpoint instead, and
the log gets its URL and Azure's own words, for the operator; as for
DeploymentNotFound (response.with_deployment_hint). A 403 counts only for an
Entra ID token, whose identity may lack its role: an api-key's 403 (network
rules) is relayed. A pass-through token's refusals are the client's own and
are relayed untouched.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from azproxy.errors import ProxyError, UpstreamUnreachable

if TYPE_CHECKING:
    from azproxy.relay.backends import Endpoint
    from azproxy.relay.send import Reply

__all__ = [
    "REFUSALS",
    "auth_failed",
    "refused_credentials",
    "refuses",
    "refuses_credentials",
]

log = logging.getLogger("azproxy.relay")

REFUSALS = (401, 403)
ROLE = "Cognitive Services OpenAI User"


def refuses_credentials(reply: Reply) -> bool:
    """Whether the answer is a 401 (or an Entra ID token's 403) to a
    server-side endpoint's own credentials."""
    return reply.status in REFUSALS and refuses(reply.backend.endpoint, reply.status)


def refuses(endpoint: Endpoint, status: int) -> bool:
    """Whether `status` from `endpoint` refuses its own credentials."""
    return endpoint.server_side and (
        status == 401 or (status == 403 and endpoint.auth.bearer)
    )


def refused_credentials(reply: Reply) -> ProxyError | None:
    """The error for an answer that refuses_credentials; None for any other."""
    if not refuses_credentials(reply):
        return None
    code, message = _azure_error(reply.first)
    return auth_failed(
        reply.backend.endpoint,
        reply.status,
        code,
        message,
        reply.response.headers.get("apim-request-id"),
    )


def auth_failed(
    endpoint: Endpoint,
    status: int,
    code: str,
    message: str,
    apim_id: str | None,
) -> ProxyError:
    """The 502 for Azure refusing `endpoint`'s credentials with `status`
    (Azure's error `code` and `message`, if it sent them, go to the log)."""
    bearer = endpoint.auth.bearer
    log.warning(
        "Azure OpenAI at %s refused the %s of endpoint %r: HTTP %d %s: %s",
        endpoint.base_url,
        "Entra ID token" if bearer else "api-key",
        endpoint.name,
        status,
        code,
        message,
    )
    if status == 403 and code == "PermissionDenied":
        why = f"its identity lacks the '{ROLE}' role on the Azure OpenAI resource"
    elif status == 403:
        why = "its identity may not use the resource (role assignment, network rules)"
    elif bearer:
        why = "its Entra ID token is not accepted (tenant, scope, or an expired token)"
    else:
        why = "its api_key is not accepted by the resource"
    return UpstreamUnreachable(
        f"Azure OpenAI refused azproxy's credentials for endpoint "
        f"{endpoint.name!r} (HTTP {status}): {why}. This is azproxy's "
        "configuration, not your request or access key; its log has the details.",
        code="upstream_auth_failed",
        # Azure's request id (it becomes x-request-id): for a support ticket.
        headers={"apim-request-id": apim_id} if apim_id else None,
    )


def _azure_error(body: bytes) -> tuple[str, str]:
    """Azure's error code and message, cut short (they name no secret).
    Azure OpenAI nests them in "error"; its gateway's 401 to a token does not
    ({"statusCode": 401, "message": ...})."""
    try:
        document = json.loads(body)
        error = document.get("error", document)
        code = error.get("code") or document.get("statusCode") or ""
        return str(code), str(error.get("message") or "")[:300]
    except (ValueError, TypeError, AttributeError):
        return "", ""
