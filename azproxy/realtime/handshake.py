"""Realtime: an OpenAI Realtime WebSocket session relayed to Azure OpenAI.

`GET /v1/realtime?model=M` with a WebSocket upgrade. azproxy opens the Azure
WebSocket first and upgrades the client only once Azure has accepted, so a
refused handshake (401, 404, 429...) reaches the client as an ordinary HTTP
error in OpenAI's shape, which the SDKs raise. Then frames are relayed one
at a time in both directions: text and binary unchanged (text is never
decoded), close codes and reasons passed on, pings answered on each hop.
Memory per session stays within one message (realtime_max_message_mb) per
direction plus socket buffers; an idle session is closed (frames.py).

Azure's two URL forms (its "GPT Realtime API via WebSockets" guide):
  classic (preview protocol)  /openai/realtime?api-version=V&deployment=D
  v1 (GA protocol)            /openai/v1/realtime?model=D
Only previews from 2024-10-01-preview serve the classic form; a dated GA
version such as the default 2024-10-21 has no realtime, so the classic form
gets families.LATEST_PREVIEW instead (families.route decides, overrides too).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSCloseCode, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from azproxy.auth.credentials import KEY_PROTOCOL, offered_protocols
from azproxy.errors import Failure, ProxyError, UpgradeRequired, UpstreamUnreachable
from azproxy.front.cors import add_cors_headers
from azproxy.keys import CALLER, CONFIG, EXCHANGE, SESSION, UpstreamSession
from azproxy.limits.admission import admit
from azproxy.observe.observer import ensure_request_id
from azproxy.realtime.frames import (
    CLOSE_TIMEOUT_S,
    REALTIME_SESSIONS,
    RealtimeSession,
    Usage,
    close_sessions,
)
from azproxy.relay.attempts import retried
from azproxy.relay.families import LATEST_PREVIEW, NO_OVERRIDES, Family, route
from azproxy.relay.headers import request_headers
from azproxy.relay.refusal import auth_failed, refuses
from azproxy.relay.send import connection_failure

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange
    from azproxy.relay.backends import Backend
    from azproxy.settings.config import Config

__all__ = [
    "PREVIEW_API_VERSION",
    "REALTIME_PATH",
    "client_protocol",
    "forwarded_protocols",
    "handle_realtime",
    "realtime_url",
    "setup_realtime",
    "upstream_headers",
]

log = logging.getLogger("azproxy.realtime")

REALTIME_PATH = "/v1/realtime"
# The version Azure's realtime WebSocket guide names for the preview protocol.
PREVIEW_API_VERSION = LATEST_PREVIEW
# Query parameters azproxy decides, plus the client's own key (Azure reads
# `api-key` from the query too): none of the client's values go upstream.
DECIDED_PARAMS = frozenset({"model", "deployment", "api-version", "api-key"})
# Each hop answers its own pings (autoping) and sends its own, so a peer that
# vanished without a FIN is noticed and the other side closed.
HEARTBEAT_S = 30.0


def max_msg_size(config: Config) -> int:
    """aiohttp's max_msg_size for the realtime cap: aiohttp refuses a message
    of max_msg_size bytes or more, and the cap is the largest one relayed."""
    return config.realtime_max_message_bytes + 1


def realtime_url(
    base_url: str,
    deployment: str,
    api_version: str,
    client_query: Mapping[str, str],
    family_versions: Mapping[str, str] = NO_OVERRIDES,
) -> URL:
    """The Azure WebSocket URL; other client parameters (`intent`, `call_id`) kept."""
    if base_url.startswith("http"):
        base_url = "ws" + base_url[4:]  # http -> ws, https -> wss
    where = route(Family.REALTIME, api_version, family_versions)
    if where.v1:
        path = "/openai/v1/realtime"
        params = [("model", deployment)]
    else:
        assert where.version is not None  # the classic path is always dated
        path = "/openai/realtime"
        params = [("api-version", where.version), ("deployment", deployment)]
    params += [
        (k, v) for k, v in client_query.items() if k.lower() not in DECIDED_PARAMS
    ]
    return URL(f"{base_url}{path}", encoded=True).with_query(params)


def upstream_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The client's headers minus credentials, hop-by-hop fields and its own
    handshake (aiohttp makes a fresh key, version and protocol list)."""
    kept = request_headers(headers)
    for name in list(kept):
        if name.lower().startswith("sec-websocket-"):
            del kept[name]
    return kept


def forwarded_protocols(offered: Sequence[str]) -> list[str]:
    """The client's subprotocols minus the one carrying its key."""
    return [p for p in offered if not p.startswith(KEY_PROTOCOL)]


def client_protocol(offered: Sequence[str], upstream: str | None) -> str | None:
    """The subprotocol to accept for the client: Azure's choice, or else the
    first one offered, since a browser that offered some fails a handshake
    that selects none. Never the key-carrying one: that would echo the key."""
    candidates = forwarded_protocols(offered)
    if upstream in candidates:
        return upstream
    return candidates[0] if candidates else None


def setup_realtime(app: web.Application) -> None:
    """The sessions, closed on shutdown. (app.py routes GET /v1/realtime to
    handle_realtime.)"""
    app[REALTIME_SESSIONS] = set()
    app.on_shutdown.append(close_sessions)


async def handle_realtime(request: web.Request) -> web.StreamResponse:
    if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
        raise UpgradeRequired(
            "/v1/realtime is a WebSocket endpoint: connect with ws:// or wss://.",
            headers={hdrs.UPGRADE: "websocket"},
        )
    offered = offered_protocols(request.headers)
    model = request.query.get("model")
    caller = request[CALLER]
    backends = caller.backends(model)
    exchange = request[EXCHANGE]  # for the access log
    if caller.limits is not None:
        # A session is one request and holds one concurrency slot until it
        # ends; its tokens are counted as each response.done reports them.
        await admit(request, caller.limits, 0)
    upstream, backend = await connect(request, backends, forwarded_protocols(offered))
    exchange.model, exchange.stream = model, True
    exchange.deployment, exchange.endpoint = backend.deployment, backend.endpoint.name
    config = request.app[CONFIG]
    try:
        client = web.WebSocketResponse(
            protocols=[p for p in [client_protocol(offered, upstream.protocol)] if p],
            timeout=CLOSE_TIMEOUT_S,
            autoclose=False,
            autoping=True,
            heartbeat=HEARTBEAT_S,
            compress=False,  # relay frames as they are, without recompressing
            max_msg_size=max_msg_size(config),
            decode_text=False,
        )
        client.headers["x-azproxy-deployment"] = backend.deployment
        if exchange.ticket is not None:
            client.headers.update(exchange.ticket.headers)
        ensure_request_id(client.headers)  # sent now, before Observer.done runs
        add_cors_headers(request, client.headers)
        await client.prepare(request)
    except BaseException:
        await upstream.close(code=WSCloseCode.GOING_AWAY)
        raise
    session = RealtimeSession(
        client,
        upstream,
        client_transport=request.transport,
        idle_timeout_s=config.realtime_idle_timeout_s,
        max_message_mb=config.realtime_max_message_mb,
        on_usage=partial(count_usage, exchange),
    )
    sessions = request.app[REALTIME_SESSIONS]
    sessions.add(session)
    try:
        await session.run()
    finally:
        sessions.discard(session)
    return client


def count_usage(exchange: Exchange, usage: Usage) -> None:
    """One response.done's usage: added to the session's (the access log,
    the metrics) and charged to its key's limits as it comes."""
    sum_ = exchange.usage
    exchange.usage = (
        usage
        if sum_ is None
        else (sum_[0] + usage[0], sum_[1] + usage[1], sum_[2] + usage[2])
    )
    if exchange.ticket is not None:
        exchange.ticket.charge(usage[2])


async def connect(
    request: web.Request, backends: Sequence[Backend], protocols: Sequence[str]
) -> tuple[aiohttp.ClientWebSocketResponse[Any], Backend]:
    """Open the Azure WebSocket; move to the next backend only when Azure says
    the deployment does not exist (the model-name fallbacks)."""
    for index, backend in enumerate(backends):
        try:
            upstream = await open_upstream(request, backend, protocols)
        except ProxyError as exc:
            if exc.status == 404 and index < len(backends) - 1:
                continue
            raise
        return upstream, backend
    raise AssertionError("unreachable: a caller always yields a backend")


async def open_upstream(
    request: web.Request, backend: Backend, protocols: Sequence[str]
) -> aiohttp.ClientWebSocketResponse[Any]:
    """The handshake, retried by the HTTP relay's rules (attempts.retried):
    connection errors and 5xx, config.retries times; never a 4xx or a
    handshake timeout."""
    config: Config = request.app[CONFIG]
    endpoint = backend.endpoint
    url = realtime_url(
        endpoint.base_url,
        backend.deployment,
        endpoint.api_version,
        request.query,
        endpoint.family_versions,
    )
    headers = upstream_headers(request.headers)
    endpoint.authorize(headers)
    shake = partial(
        handshake, request.app[SESSION], config, url, headers, protocols, backend
    )
    what = f"realtime handshake with {url.host}"
    return await retried(config, what, shake, retries=config.retries)


async def handshake(
    session: UpstreamSession,
    config: Config,
    url: URL,
    headers: CIMultiDict[str],
    protocols: Sequence[str],
    backend: Backend,
) -> aiohttp.ClientWebSocketResponse[Any]:
    """One try: Azure's WebSocket, or a Failure saying whether another try
    could help (as send.send_once says it for HTTP)."""
    host = url.host
    try:
        return await session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            # No idle limit: a voice session may be silent for minutes.
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
            autoclose=False,
            autoping=True,
            heartbeat=HEARTBEAT_S,
            max_msg_size=max_msg_size(config),
            decode_text=False,
        )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status >= 500:
            raise Failure(refused(exc, backend), retryable=True) from None
        raise refused(exc, backend) from None
    except aiohttp.ClientError as exc:
        # Converted as for HTTP (send.connection_failure), frames forgotten.
        raise connection_failure(
            exc,
            host,
            f"Azure OpenAI at {host} did not answer the WebSocket handshake "
            f"within {config.header_timeout_s:g} s (header_timeout_s).",
        ) from None


# Headers of a refused handshake worth passing on; the body is azproxy's own
# because aiohttp discards the body of a failed WebSocket handshake.
REFUSAL_HEADERS = ("retry-after", "retry-after-ms", "apim-request-id", "x-ms-region")


def refused(exc: aiohttp.WSServerHandshakeError, backend: Backend) -> ProxyError:
    """Azure's refusal as an OpenAI error with Azure's status, saying what to
    fix. The client is told the endpoint's name; its URL, which is server-side
    configuration, goes to the log."""
    status, endpoint = exc.status, backend.endpoint
    headers: Mapping[str, str] = exc.headers or {}
    if refuses(endpoint, status):
        # aiohttp drops a refused handshake's body: Azure's code is unknown.
        return auth_failed(endpoint, status, "", "", headers.get("apim-request-id"))
    where = f"deployment {backend.deployment!r} on endpoint {endpoint.name!r}"
    log.warning(
        "Azure OpenAI answered the realtime handshake for %s at %s with HTTP %d",
        where,
        endpoint.base_url,
        status,
    )
    if status < 400:
        # 101 with a wrong accept key or upgrade header, or a plain 200.
        return UpstreamUnreachable(
            f"Azure OpenAI answered the realtime WebSocket handshake for {where} "
            f"with an invalid response (HTTP {status}, {exc.message})."
        )
    if status in (401, 403):  # a pass-through token's key, or an api-key's 403
        message = (
            f"Azure OpenAI refused the realtime connection to {where} "
            f"(HTTP {status}): check the Azure key or Entra ID role for it."
        )
        code = "upstream_unauthorized"
    elif status == 404:
        message = (
            f"Azure OpenAI found no realtime endpoint for {where} (HTTP 404): "
            "check that the deployment exists and is a realtime model, and that "
            f"the API version ({endpoint.api_version}) serves realtime; "
            "GA realtime models need API version v1."
        )
        code = "deployment_not_found"
    elif status == 429:
        message = f"Azure OpenAI rate-limited the realtime connection to {where}."
        code = "rate_limit_exceeded"
    else:
        message = (
            f"Azure OpenAI refused the realtime connection to {where} (HTTP {status})."
        )
        code = "upstream_error"
    return ProxyError(
        message,
        code=code,
        headers={k: headers[k] for k in REFUSAL_HEADERS if k in headers},
        status=status,
        type="invalid_request_error" if status < 500 else "api_error",
    )
