"""Pure header filters for both directions of the relay."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "HOP_BY_HOP",
    "REQUEST_DROP",
    "RESPONSE_DROP",
    "request_headers",
    "response_headers",
]

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward, plus
# the ones RFC 9112 and common practice treat the same way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Never sent to Azure: the client's own credentials and identity, fields the
# upstream request sets itself (Host, Content-Length), and what a reverse proxy
# in front says about the client (its address is nobody's business at Azure).
REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "api-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
}

# Never relayed to the client: framing is redone by azproxy, CORS is azproxy's
# own policy, and cookies set for Azure's domain mean nothing here.
RESPONSE_DROP = HOP_BY_HOP | {
    "content-length",
    "set-cookie",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
}


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    """Field names listed in Connection are hop-by-hop too (RFC 9110 §7.6.1)."""
    listed: set[str] = set()
    for value in headers.getall("Connection", ()):
        listed.update(t.strip().lower() for t in value.split(",") if t.strip())
    return listed


# How many header sets a filter remembers, and how long their names may be
# (together): a client inventing names fills it and it starts over, holding
# little meanwhile.
_REMEMBERED = 256
_REMEMBERED_CHARS = 1024


class _Filter:
    """Copy headers, then delete the ones to drop. Which to delete depends
    only on the names sent (and what Connection lists), and clients and
    Azure send the same few sets again and again: it is decided once per
    set. A request pays a tuple of its names and one lookup, not a lookup
    per name that could be dropped (about half the instructions)."""

    __slots__ = ("_drop", "_known")

    def __init__(self, drop: frozenset[str]) -> None:
        self._drop = drop
        self._known: dict[tuple[str, ...], tuple[str, ...]] = {}

    def filtered(self, headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
        kept = headers.copy()
        names = tuple(headers.keys())
        if "Connection" in headers:
            # What it lists is part of the decision.
            names += ("", *headers.getall("Connection"))
        doomed = self._known.get(names)
        if doomed is None:
            doomed = self._decide(headers, names)
        for name in doomed:
            del kept[name]
        return kept

    def _decide(
        self, headers: CIMultiDictProxy[str], names: tuple[str, ...]
    ) -> tuple[str, ...]:
        drop: frozenset[str] | set[str] = self._drop
        if "Connection" in headers:
            drop = drop | _connection_listed(headers)
        # Lower case, each once: a deletion takes every spelling of a name.
        doomed = tuple(dict.fromkeys(n.lower() for n in headers if n.lower() in drop))
        if sum(map(len, names)) <= _REMEMBERED_CHARS:
            if len(self._known) >= _REMEMBERED:
                self._known.clear()
            self._known[names] = doomed
        return doomed


_REQUEST = _Filter(REQUEST_DROP)
_RESPONSE = _Filter(RESPONSE_DROP)
# Bound methods, not functions that call them: a call less per request.
# Headers to send upstream: the client's, minus hop-by-hop and credentials.
request_headers = _REQUEST.filtered
# Headers to relay to the client: Azure's, minus hop-by-hop, framing and CORS.
response_headers = _RESPONSE.filtered
