from __future__ import annotations

import pytest
from multidict import MultiDict

from azproxy.errors import MethodNotAllowed, NotFound
from azproxy.relay import mapping
from azproxy.relay.families import Route
from azproxy.relay.mapping import (
    Scope,
    classify,
    model_names_deployment,
    upstream_url,
)
from azproxy.settings.server_side import upstream_base


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


V1 = Route(True, None)


@pytest.mark.parametrize(
    ("subpath", "deployment", "route", "query", "url"),
    [
        (
            "chat/completions",
            "dep",
            Route(False, "2024-10-21"),
            None,
            "https://r.openai.azure.com/openai/deployments/dep/chat/completions"
            "?api-version=2024-10-21",
        ),
        (
            "embeddings",
            "text-embedding-3.small",
            Route(False, "2024-12-01-preview"),
            None,
            "https://r.openai.azure.com/openai/deployments/text-embedding-3.small/"
            "embeddings?api-version=2024-12-01-preview",
        ),
        (
            "chat/completions",
            "dep",
            V1,
            None,
            "https://r.openai.azure.com/openai/v1/chat/completions",
        ),
        (
            "chat/completions",
            "dep",
            Route(False, "2024-10-21"),
            MultiDict([("api-version", "x"), ("a", "b c")]),
            "https://r.openai.azure.com/openai/deployments/dep/chat/completions"
            "?a=b+c&api-version=2024-10-21",
        ),
        (
            # v1 preview features: the client asks with api-version=preview.
            "chat/completions",
            "dep",
            V1,
            MultiDict([("api-version", "preview")]),
            "https://r.openai.azure.com/openai/v1/chat/completions?api-version=preview",
        ),
        (
            "responses",
            "dep",
            V1,
            MultiDict([("api-version", "latest")]),
            "https://r.openai.azure.com/openai/v1/responses?api-version=latest",
        ),
        (
            # A dated version means nothing to v1: dropped.
            "chat/completions",
            "dep",
            V1,
            MultiDict([("api-version", "2024-10-21")]),
            "https://r.openai.azure.com/openai/v1/chat/completions",
        ),
        (
            "audio/transcriptions",
            "whisper",
            Route(False, "2024-06-01"),
            None,
            "https://r.openai.azure.com/openai/deployments/whisper/"
            "audio/transcriptions?api-version=2024-06-01",
        ),
        (
            "files/file-abc/content",
            None,
            Route(False, "2024-10-21"),
            None,
            "https://r.openai.azure.com/openai/files/file-abc/content"
            "?api-version=2024-10-21",
        ),
        (
            "files",
            None,
            Route(False, "2024-10-21"),
            MultiDict([("purpose", "batch"), ("limit", "2"), ("api-version", "x")]),
            "https://r.openai.azure.com/openai/files"
            "?purpose=batch&limit=2&api-version=2024-10-21",
        ),
        (
            "threads/thread_1/runs",
            None,
            Route(False, "2024-05-01-preview"),
            None,
            "https://r.openai.azure.com/openai/threads/thread_1/runs"
            "?api-version=2024-05-01-preview",
        ),
        (
            "files/file-abc",
            None,
            V1,
            None,
            "https://r.openai.azure.com/openai/v1/files/file-abc",
        ),
        (
            "responses/resp_1/input_items",
            None,
            V1,
            MultiDict([("limit", "5"), ("api-version", "preview")]),
            "https://r.openai.azure.com/openai/v1/responses/resp_1/input_items"
            "?limit=5&api-version=preview",
        ),
        (
            # A family v1 serves only in preview carries api-version=preview...
            "audio/speech",
            "tts",
            Route(True, "preview"),
            None,
            "https://r.openai.azure.com/openai/v1/audio/speech?api-version=preview",
        ),
        (
            # ...unless the client asked for `latest`.
            "audio/speech",
            "tts",
            Route(True, "preview"),
            MultiDict([("api-version", "latest")]),
            "https://r.openai.azure.com/openai/v1/audio/speech?api-version=latest",
        ),
        (
            # The client's key in the query never goes to Azure, in any case.
            "chat/completions",
            "dep",
            Route(False, "2024-10-21"),
            MultiDict([("api-key", "k1"), ("a", "1"), ("API-Key", "k2")]),
            "https://r.openai.azure.com/openai/deployments/dep/chat/completions"
            "?a=1&api-version=2024-10-21",
        ),
        (
            "responses",
            None,
            V1,
            MultiDict([("Api-Key", "k"), ("api-version", "preview")]),
            "https://r.openai.azure.com/openai/v1/responses?api-version=preview",
        ),
        (
            "files",
            None,
            Route(False, "2024-10-21"),
            MultiDict([("API-KEY", "k")]),
            "https://r.openai.azure.com/openai/files?api-version=2024-10-21",
        ),
    ],
)
def test_upstream_url(
    subpath: str,
    deployment: str | None,
    route: Route,
    query: MultiDict[str] | None,
    url: str,
) -> None:
    built = upstream_url(
        "https://r.openai.azure.com",
        subpath,
        deployment=deployment,
        route=route,
        client_query=query,
    )
    assert str(built) == url


@pytest.mark.parametrize(
    ("method", "subpath", "scope"),
    [
        ("POST", "chat/completions", Scope.DEPLOYMENT),
        ("POST", "completions", Scope.DEPLOYMENT),
        ("POST", "embeddings", Scope.DEPLOYMENT),
        ("POST", "images/generations", Scope.DEPLOYMENT),
        ("POST", "audio/speech", Scope.DEPLOYMENT),
        ("POST", "audio/transcriptions", Scope.UPLOAD),
        ("POST", "audio/translations", Scope.UPLOAD),
        ("POST", "images/edits", Scope.UPLOAD),
        ("POST", "files", Scope.RESOURCE),
        ("GET", "files", Scope.RESOURCE),
        ("GET", "files/file-abc123", Scope.RESOURCE),
        ("DELETE", "files/file-abc123", Scope.RESOURCE),
        ("GET", "files/file-abc123/content", Scope.RESOURCE),
        ("POST", "uploads", Scope.RESOURCE),
        ("POST", "uploads/upload_1/parts", Scope.RESOURCE),
        ("POST", "uploads/upload_1/complete", Scope.RESOURCE),
        ("POST", "batches", Scope.RESOURCE),
        ("GET", "batches", Scope.RESOURCE),
        ("GET", "batches/batch_1", Scope.RESOURCE),
        ("POST", "batches/batch_1/cancel", Scope.RESOURCE),
        ("POST", "fine_tuning/jobs", Scope.RESOURCE),
        ("GET", "fine_tuning/jobs/ftjob-1/events", Scope.RESOURCE),
        ("GET", "fine_tuning/jobs/ftjob-1/checkpoints", Scope.RESOURCE),
        ("POST", "fine_tuning/jobs/ftjob-1/cancel", Scope.RESOURCE),
        ("POST", "assistants", Scope.RESOURCE),
        ("GET", "assistants/asst_1", Scope.RESOURCE),
        ("DELETE", "assistants/asst_1", Scope.RESOURCE),
        ("POST", "threads", Scope.RESOURCE),
        ("POST", "threads/runs", Scope.RESOURCE),
        ("POST", "threads/thread_1/messages", Scope.RESOURCE),
        ("GET", "threads/thread_1/messages", Scope.RESOURCE),
        ("POST", "threads/thread_1/runs", Scope.RESOURCE),
        ("GET", "threads/thread_1/runs/run_1/steps/step_1", Scope.RESOURCE),
        ("POST", "threads/thread_1/runs/run_1/submit_tool_outputs", Scope.RESOURCE),
        ("POST", "vector_stores", Scope.RESOURCE),
        ("GET", "vector_stores/vs_1/files", Scope.RESOURCE),
        ("POST", "vector_stores/vs_1/file_batches/vsfb_1/cancel", Scope.RESOURCE),
        ("POST", "vector_stores/vs_1/search", Scope.RESOURCE),
        ("POST", "responses", Scope.RESOURCE),
        ("GET", "responses/resp_1", Scope.RESOURCE),
        ("DELETE", "responses/resp_1", Scope.RESOURCE),
        ("GET", "responses/resp_1/input_items", Scope.RESOURCE),
        ("POST", "responses/resp_1/cancel", Scope.RESOURCE),
    ],
)
def test_classify(method: str, subpath: str, scope: Scope) -> None:
    assert classify(method, subpath) is scope


@pytest.mark.parametrize(
    ("method", "subpath"),
    [
        ("GET", "chat/completions"),
        ("GET", "audio/transcriptions"),
        ("PUT", "files"),
        ("PATCH", "responses/resp_1"),
    ],
)
def test_wrong_method(method: str, subpath: str) -> None:
    with pytest.raises(MethodNotAllowed):
        classify(method, subpath)


@pytest.mark.parametrize(
    ("subpath", "code"),
    [
        ("moderations", "unsupported_endpoint"),
        ("images/variations", "unsupported_endpoint"),
        ("chat/completions/x", "unknown_url"),
        ("engines", "unknown_url"),
        ("", "unknown_url"),
        # Strict path segments: nothing that could climb out of /openai/.
        ("files/..", "unknown_url"),
        ("files/../deployments/x", "unknown_url"),
        ("files/.", "unknown_url"),
        ("files/.hidden", "unknown_url"),
        ("files/", "unknown_url"),
        ("files//content", "unknown_url"),
        ("files/a b", "unknown_url"),
        ("files/a%2Fb", "unknown_url"),
        ("files/a?b", "unknown_url"),
        ("files/a\\b", "unknown_url"),
        ("files/" + "a" * 257, "unknown_url"),
        ("openai/files", "unknown_url"),
        ("filesx", "unknown_url"),
    ],
)
def test_not_found(subpath: str, code: str) -> None:
    with pytest.raises(NotFound) as caught:
        classify("POST", subpath)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("method", "subpath", "maps"),
    [
        ("POST", "responses", True),
        ("POST", "assistants", True),
        ("POST", "assistants/asst_1", True),
        ("POST", "threads/runs", True),
        ("POST", "threads/thread_1/runs", True),
        # A fine-tuning job's model is a base model, not a deployment.
        ("POST", "fine_tuning/jobs", False),
        ("POST", "batches", False),
        ("POST", "responses/resp_1/cancel", False),
        ("POST", "threads/thread_1/runs/run_1", False),
        ("GET", "responses", False),
        ("DELETE", "assistants/asst_1", False),
    ],
)
def test_model_names_deployment(method: str, subpath: str, maps: bool) -> None:
    assert model_names_deployment(method, subpath) is maps


def test_upstream_urls_are_remembered_within_a_bound() -> None:
    route = Route(False, "2024-10-21")
    first = upstream_url(
        "https://r.example", "chat/completions", deployment="d", route=route
    )
    again = upstream_url(
        "https://r.example", "chat/completions", deployment="d", route=route
    )
    assert again is first  # built once
    for index in range(1000):  # a client naming ever new deployments
        upstream_url(
            "https://r.example", "embeddings", deployment=f"d{index}", route=route
        )
    assert 0 < len(mapping._BUILT) <= mapping._BUILT_KEPT + 1
    built = upstream_url(
        "https://r.example", "embeddings", deployment="d7", route=route
    )
    assert str(built) == (
        "https://r.example/openai/deployments/d7/embeddings?api-version=2024-10-21"
    )
