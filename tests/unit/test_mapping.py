from __future__ import annotations

import pytest
from multidict import MultiDict

from azproxy.errors import MethodNotAllowed, NotFound
from azproxy.mapping import Scope, classify, upstream_base, upstream_url


@pytest.mark.parametrize(
    ("template", "resource", "base"),
    [
        ("https://{resource}.openai.azure.com", "res", "https://res.openai.azure.com"),
        ("https://{resource}.openai.azure.com/", "r", "https://r.openai.azure.com"),
        ("http://127.0.0.1:9000", "ignored", "http://127.0.0.1:9000"),
        ("https://gw.example/{resource}/", "r1", "https://gw.example/r1"),
    ],
)
def test_upstream_base(template: str, resource: str, base: str) -> None:
    assert upstream_base(template, resource) == base


@pytest.mark.parametrize(
    ("subpath", "deployment", "version", "query", "url"),
    [
        (
            "chat/completions",
            "dep",
            "2024-10-21",
            None,
            "https://r.openai.azure.com/openai/deployments/dep/chat/completions"
            "?api-version=2024-10-21",
        ),
        (
            "embeddings",
            "text-embedding-3.small",
            "2024-12-01-preview",
            None,
            "https://r.openai.azure.com/openai/deployments/text-embedding-3.small/"
            "embeddings?api-version=2024-12-01-preview",
        ),
        (
            "chat/completions",
            "dep",
            "v1",
            None,
            "https://r.openai.azure.com/openai/v1/chat/completions",
        ),
        (
            "chat/completions",
            "dep",
            "2024-10-21",
            MultiDict([("api-version", "x"), ("a", "b c")]),
            "https://r.openai.azure.com/openai/deployments/dep/chat/completions"
            "?a=b+c&api-version=2024-10-21",
        ),
        (
            "chat/completions",
            "dep",
            "v1",
            MultiDict([("api-version", "preview")]),
            "https://r.openai.azure.com/openai/v1/chat/completions",
        ),
    ],
)
def test_upstream_url(
    subpath: str,
    deployment: str,
    version: str,
    query: MultiDict[str] | None,
    url: str,
) -> None:
    built = upstream_url(
        "https://r.openai.azure.com",
        subpath,
        deployment=deployment,
        api_version=version,
        client_query=query,
    )
    assert str(built) == url


@pytest.mark.parametrize(
    "subpath",
    [
        "chat/completions",
        "completions",
        "embeddings",
        "images/generations",
        "audio/speech",
    ],
)
def test_deployment_scoped(subpath: str) -> None:
    assert classify("POST", subpath) is Scope.DEPLOYMENT


def test_wrong_method() -> None:
    with pytest.raises(MethodNotAllowed):
        classify("GET", "chat/completions")


@pytest.mark.parametrize(
    ("subpath", "code"),
    [
        ("moderations", "unsupported_endpoint"),
        ("images/variations", "unsupported_endpoint"),
        ("chat/completions/x", "unknown_url"),
        ("engines", "unknown_url"),
        ("", "unknown_url"),
    ],
)
def test_not_found(subpath: str, code: str) -> None:
    with pytest.raises(NotFound) as caught:
        classify("POST", subpath)
    assert caught.value.code == code
