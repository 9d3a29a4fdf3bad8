"""The realtime relay's pure decisions: URL, subprotocols, headers, credentials."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from azproxy.auth.credentials import offered_protocols, protocol_token
from azproxy.errors import BadRequest
from azproxy.realtime.handshake import (
    PREVIEW_API_VERSION,
    client_protocol,
    forwarded_protocols,
    realtime_url,
    upstream_headers,
)

KEY = "0123456789abcdef0123456789abcdef"


def headers(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


@pytest.mark.parametrize(
    ("base", "version", "query", "expected"),
    [
        (
            "https://res.openai.azure.com",
            "2024-10-21",
            {"model": "gpt-4o-realtime"},
            "wss://res.openai.azure.com/openai/realtime"
            f"?api-version={PREVIEW_API_VERSION}&deployment=dep",
        ),
        (
            "https://res.openai.azure.com",
            "2024-12-01-preview",
            {},
            "wss://res.openai.azure.com/openai/realtime"
            "?api-version=2024-12-01-preview&deployment=dep",
        ),
        (
            "http://127.0.0.1:9000",
            "v1",
            {"model": "gpt-realtime", "api-version": "x", "api-key": "k"},
            "ws://127.0.0.1:9000/openai/v1/realtime?model=dep",
        ),
        (
            "https://gw.example.com/prefix",
            "v1",
            {"model": "m", "intent": "transcription", "Deployment": "other"},
            "wss://gw.example.com/prefix/openai/v1/realtime"
            "?model=dep&intent=transcription",
        ),
    ],
)
def test_realtime_url(
    base: str, version: str, query: dict[str, str], expected: str
) -> None:
    client_query = MultiDictProxy(MultiDict(query))
    assert str(realtime_url(base, "dep", version, client_query)) == expected


@pytest.mark.parametrize(
    ("version", "overrides", "expected"),
    [
        # A preview older than Azure's realtime does not serve it either.
        (
            "2024-08-01-preview",
            {},
            f"/openai/realtime?api-version={PREVIEW_API_VERSION}",
        ),
        ("2024-10-21", {"realtime": "v1"}, "/openai/v1/realtime?model=dep"),
        (
            "v1",
            {"realtime": "2024-12-01-preview"},
            "/openai/realtime?api-version=2024-12-01-preview",
        ),
    ],
)
def test_realtime_url_follows_the_family_table(
    version: str, overrides: dict[str, str], expected: str
) -> None:
    empty = MultiDictProxy(MultiDict[str]())
    url = realtime_url("https://r.openai.azure.com", "dep", version, empty, overrides)
    assert str(url).startswith("wss://r.openai.azure.com" + expected)


def test_offered_protocols_keep_order_across_header_lines() -> None:
    offered = headers(
        ("Sec-WebSocket-Protocol", "realtime, openai-insecure-api-key.k"),
        ("Sec-WebSocket-Protocol", " openai-beta.realtime-v1 ,"),
    )
    assert offered_protocols(offered) == [
        "realtime",
        "openai-insecure-api-key.k",
        "openai-beta.realtime-v1",
    ]


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (f"realtime, openai-insecure-api-key.{KEY}", KEY),
        (f"openai-insecure-api-key.res%3Adep%3A{KEY}", f"res:dep:{KEY}"),
        ("openai-insecure-api-key.res%3Aa%7Cb%2Cc%7Cd%3Ak", "res:a|b,c|d:k"),
        ("openai-insecure-api-key.", None),
        ("realtime", None),
        ("", None),
    ],
)
def test_protocol_token(value: str, token: str | None) -> None:
    assert protocol_token(headers(("Sec-WebSocket-Protocol", value))) == token


@pytest.mark.parametrize(
    "value",
    [
        "real time",
        "real\ttime",
        "a/b",
        "a;b",
        "a=b",
        'a"b',
        "caf\u00e9",
        "openai-insecure-api-key.res:dep:k",
        "openai-insecure-api-key.res%3Adep%3Ak%0D%0AX-Injected%3A%201",
        "openai-insecure-api-key.res%3Adep%3Ak%00",
        "openai-insecure-api-key.res%3Adep%3Ak%20k",
        "openai-insecure-api-key.res%3Adep%3Ak%C3%A9",
    ],
)
def test_subprotocols_must_be_tokens_and_credentials_visible_ascii(
    value: str,
) -> None:
    offered = headers(("Sec-WebSocket-Protocol", f"realtime, {value}"))
    with pytest.raises(BadRequest) as raised:
        protocol_token(offered)
    assert raised.value.code == "invalid_subprotocol"
    assert "Injected" not in raised.value.message


def test_every_token_character_is_accepted() -> None:
    value = "!#$%&'*+-.^_`|~09AZaz"
    assert offered_protocols(headers(("Sec-WebSocket-Protocol", value))) == [value]


@pytest.mark.parametrize(
    ("offered", "upstream", "forwarded", "chosen"),
    [
        (
            ["realtime", "openai-insecure-api-key.k", "b"],
            "realtime",
            ["realtime", "b"],
            "realtime",
        ),
        (["realtime", "openai-insecure-api-key.k", "b"], "b", ["realtime", "b"], "b"),
        (["realtime", "openai-insecure-api-key.k"], None, ["realtime"], "realtime"),
        (["openai-insecure-api-key.k"], None, [], None),
        ([], None, [], None),
        # Azure cannot pick what was not offered to it.
        (["openai-insecure-api-key.k"], "openai-insecure-api-key.k", [], None),
    ],
)
def test_subprotocols(
    offered: list[str], upstream: str | None, forwarded: list[str], chosen: Any
) -> None:
    assert forwarded_protocols(offered) == forwarded
    assert client_protocol(offered, upstream) == chosen


def test_upstream_headers_drop_credentials_and_the_clients_handshake() -> None:
    sent = upstream_headers(
        headers(
            ("Authorization", "Bearer secret"),
            ("api-key", "secret"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "abc"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "realtime, openai-insecure-api-key.secret"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("OpenAI-Beta", "realtime=v1"),
            ("User-Agent", "openai-python"),
        )
    )
    assert dict(sent) == {"OpenAI-Beta": "realtime=v1", "User-Agent": "openai-python"}
