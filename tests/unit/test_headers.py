from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from azproxy.relay import headers
from azproxy.relay.headers import request_headers, response_headers


def proxy_of(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_request_headers_drop_credentials_identity_and_hop_by_hop() -> None:
    kept = request_headers(
        proxy_of(
            ("Host", "proxy:3000"),
            ("Authorization", "Bearer t"),
            ("api-key", "t"),
            ("Cookie", "a=b"),
            ("OpenAI-Organization", "org"),
            ("OpenAI-Project", "p"),
            ("Connection", "keep-alive, X-Hop"),
            ("Connection", "X-Other"),
            ("X-Hop", "1"),
            ("x-other", "1"),
            ("Keep-Alive", "5"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Content-Length", "10"),
            ("Content-Type", "application/json"),
            ("X-Stainless-Arch", "x64"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Real-IP", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.9"),
            ("Accept", "*/*"),
            ("Accept", "text/event-stream"),
        )
    )
    assert list(kept.items()) == [
        ("Content-Type", "application/json"),
        ("X-Stainless-Arch", "x64"),
        ("Accept", "*/*"),
        ("Accept", "text/event-stream"),
    ]


def test_response_headers_keep_azure_metadata_and_drop_framing_and_cors() -> None:
    kept = response_headers(
        proxy_of(
            ("Content-Type", "text/event-stream"),
            ("Content-Length", "99"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("Access-Control-Allow-Origin", "*"),
            ("Set-Cookie", "affinity=1"),
            ("apim-request-id", "abc"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("retry-after-ms", "50"),
            ("Content-Encoding", "gzip"),
        )
    )
    assert list(kept.items()) == [
        ("Content-Type", "text/event-stream"),
        ("apim-request-id", "abc"),
        ("x-ratelimit-remaining-tokens", "10"),
        ("retry-after-ms", "50"),
        ("Content-Encoding", "gzip"),
    ]


def test_a_header_set_seen_before_is_filtered_the_same_way() -> None:
    # The second and third time, the decision is the remembered one: it
    # must follow what Connection lists, and each spelling of a name.
    for _ in range(3):
        assert list(
            request_headers(proxy_of(*SEEN, ("Connection", "X-A"))).items()
        ) == [
            ("X-B", "2"),
        ]
        assert list(
            request_headers(proxy_of(*SEEN, ("Connection", "X-B"))).items()
        ) == [
            ("X-A", "1"),
        ]
        assert list(request_headers(proxy_of(*SEEN)).items()) == [
            ("X-A", "1"),
            ("X-B", "2"),
        ]


SEEN = (
    ("Authorization", "Bearer t"),
    ("X-A", "1"),
    ("authorization", "Bearer u"),
    ("X-B", "2"),
)


def test_the_header_sets_remembered_are_bounded() -> None:
    for index in range(1000):
        request_headers(proxy_of((f"X-Made-Up-{index}", "1"), ("Host", "h")))
    # A set of long names is not remembered at all.
    long_names = [(f"X-{index}-" + "n" * 200, "1") for index in range(10)]
    kept = request_headers(proxy_of(*long_names, ("Cookie", "a")))
    assert list(kept.items()) == long_names
    remembered = headers._REQUEST._known
    assert 0 < len(remembered) <= headers._REMEMBERED
    assert all(
        sum(map(len, names)) <= headers._REMEMBERED_CHARS for names in remembered
    )
