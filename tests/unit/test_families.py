"""Where each endpoint family goes, from tables: the configured version,
v1, the documented fallbacks, the overrides and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from azproxy.errors import ConfigError
from azproxy.relay.families import (
    LATEST_GA,
    LATEST_PREVIEW,
    Family,
    Route,
    family_of,
    family_version_problems,
    parse_family_versions,
    route,
    route_for,
    sends_deployments_to_v1,
)
from azproxy.settings.config import Config

V1 = Route(True, None)
V1_PREVIEW = Route(True, "preview")


def classic(version: str) -> Route:
    return Route(False, version)


@pytest.mark.parametrize(
    ("subpath", "family"),
    [
        ("chat/completions", Family.CHAT),
        ("completions", Family.COMPLETIONS),
        ("embeddings", Family.EMBEDDINGS),
        ("images/generations", Family.IMAGE_GENERATIONS),
        ("images/edits", Family.IMAGE_EDITS),
        ("audio/transcriptions", Family.TRANSCRIPTIONS),
        ("audio/translations", Family.TRANSLATIONS),
        ("audio/speech", Family.SPEECH),
        ("files", Family.FILES),
        ("files/file-1/content", Family.FILES),
        ("uploads/upload_1/parts", Family.UPLOADS),
        ("batches/batch_1/cancel", Family.BATCHES),
        ("fine_tuning/jobs", Family.FINE_TUNING),
        ("assistants/asst_1", Family.ASSISTANTS),
        ("threads/thread_1/runs", Family.ASSISTANTS),
        ("threads/runs", Family.ASSISTANTS),
        ("vector_stores/vs_1/files", Family.VECTOR_STORES),
        ("responses", Family.RESPONSES),
        ("responses/resp_1/input_items", Family.RESPONSES),
    ],
)
def test_family_of(subpath: str, family: Family) -> None:
    assert family_of(subpath) is family


# The default (2024-10-21, the latest dated GA) serves the GA families; the
# others go to v1 (GA there) or to the latest preview.
@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (Family.CHAT, classic(LATEST_GA)),
        (Family.COMPLETIONS, classic(LATEST_GA)),
        (Family.EMBEDDINGS, classic(LATEST_GA)),
        (Family.IMAGE_GENERATIONS, classic(LATEST_GA)),
        (Family.IMAGE_EDITS, classic(LATEST_PREVIEW)),
        (Family.TRANSCRIPTIONS, classic(LATEST_GA)),
        (Family.TRANSLATIONS, classic(LATEST_GA)),
        (Family.SPEECH, classic(LATEST_PREVIEW)),
        (Family.FILES, classic(LATEST_GA)),
        (Family.UPLOADS, classic(LATEST_GA)),
        (Family.BATCHES, classic(LATEST_GA)),
        (Family.FINE_TUNING, classic(LATEST_GA)),
        (Family.ASSISTANTS, classic(LATEST_PREVIEW)),
        (Family.VECTOR_STORES, V1),
        (Family.RESPONSES, V1),
        (Family.REALTIME, classic(LATEST_PREVIEW)),
    ],
)
def test_the_default_version(family: Family, expected: Route) -> None:
    assert route(family, "2024-10-21") == expected


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (Family.CHAT, V1),
        (Family.EMBEDDINGS, V1),
        (Family.FILES, V1),
        (Family.FINE_TUNING, V1),
        (Family.VECTOR_STORES, V1),
        (Family.RESPONSES, V1),
        (Family.REALTIME, V1),
        # v1 serves these only in preview.
        (Family.COMPLETIONS, V1_PREVIEW),
        (Family.IMAGE_GENERATIONS, V1_PREVIEW),
        (Family.IMAGE_EDITS, V1_PREVIEW),
        (Family.TRANSCRIPTIONS, V1_PREVIEW),
        (Family.TRANSLATIONS, V1_PREVIEW),
        (Family.SPEECH, V1_PREVIEW),
        (Family.BATCHES, V1_PREVIEW),
        (Family.UPLOADS, V1_PREVIEW),
        # Not on v1 at all.
        (Family.ASSISTANTS, classic(LATEST_PREVIEW)),
    ],
)
def test_the_v1_api(family: Family, expected: Route) -> None:
    assert route(family, "v1") == expected


@pytest.mark.parametrize(
    ("family", "version", "expected"),
    [
        # A version that serves the family is kept.
        (Family.CHAT, "2023-05-15", classic("2023-05-15")),
        (Family.CHAT, "2024-12-01-preview", classic("2024-12-01-preview")),
        (Family.TRANSCRIPTIONS, "2024-06-01", classic("2024-06-01")),
        (Family.SPEECH, "2024-12-01-preview", classic("2024-12-01-preview")),
        (Family.ASSISTANTS, "2024-05-01-preview", classic("2024-05-01-preview")),
        (Family.REALTIME, "2024-12-01-preview", classic("2024-12-01-preview")),
        (Family.BATCHES, "2024-07-01-preview", classic("2024-07-01-preview")),
        # One that does not is replaced by the documented one.
        (Family.TRANSCRIPTIONS, "2023-05-15", classic(LATEST_GA)),
        (Family.BATCHES, "2024-06-01", classic(LATEST_GA)),
        # Files, yes; their large-upload API came with 2024-08-01-preview.
        (Family.FILES, "2024-06-01", classic("2024-06-01")),
        (Family.UPLOADS, "2024-06-01", classic(LATEST_GA)),
        (Family.UPLOADS, "2024-08-01-preview", classic("2024-08-01-preview")),
        (Family.FINE_TUNING, "2023-05-15", classic(LATEST_GA)),
        (Family.ASSISTANTS, "2024-02-15-preview", classic(LATEST_PREVIEW)),
        (Family.IMAGE_EDITS, "2025-03-01-preview", classic(LATEST_PREVIEW)),
        (Family.REALTIME, "2024-08-01-preview", classic(LATEST_PREVIEW)),
        (Family.REALTIME, "2024-06-01", classic(LATEST_PREVIEW)),
        # GA on v1 and preview-only as a dated version: v1 from any date.
        (Family.RESPONSES, "2025-04-01-preview", V1),
        (Family.VECTOR_STORES, "2024-05-01-preview", V1),
    ],
)
def test_dated_versions(family: Family, version: str, expected: Route) -> None:
    assert route(family, version) == expected


@pytest.mark.parametrize(
    ("family", "version", "overrides", "expected"),
    [
        (Family.RESPONSES, "2024-10-21", {"responses": "2025-04-01-preview"},
         classic("2025-04-01-preview")),
        (Family.CHAT, "2024-10-21", {"chat": "v1"}, V1),
        (Family.SPEECH, "2024-10-21", {"speech": "v1"}, V1_PREVIEW),
        (Family.ASSISTANTS, "v1", {"assistants": "2024-05-01-preview"},
         classic("2024-05-01-preview")),
        (Family.REALTIME, "2024-10-21", {"realtime": "v1"}, V1),
        (Family.CHAT, "v1", {"chat": "2024-10-21"}, classic("2024-10-21")),
        # Another family's override changes nothing.
        (Family.CHAT, "2024-10-21", {"responses": "2025-04-01-preview"},
         classic(LATEST_GA)),
    ],
)  # fmt: skip
def test_overrides(
    family: Family, version: str, overrides: dict[str, str], expected: Route
) -> None:
    assert route(family, version, overrides) == expected


@dataclass
class FakeEndpoint:
    api_version: str
    family_versions: dict[str, str] = field(default_factory=dict)


def test_route_for_reads_the_endpoint() -> None:
    endpoint = FakeEndpoint("2024-10-21", {"speech": "v1"})
    assert route_for("responses/resp_1", endpoint) == V1
    assert route_for("audio/speech", endpoint) == V1_PREVIEW
    assert route_for("chat/completions", endpoint) == classic("2024-10-21")


@pytest.mark.parametrize(
    ("version", "overrides", "moves"),
    [
        ("2024-10-21", {}, False),
        ("v1", {}, True),
        # Resource families read no request body for their deployment.
        ("2024-10-21", {"responses": "v1", "files": "v1"}, False),
        ("2024-10-21", {"transcriptions": "v1"}, True),
        ("v1", {"chat": "2024-10-21"}, True),
    ],
)
def test_sends_deployments_to_v1(
    version: str, overrides: dict[str, str], moves: bool
) -> None:
    assert sends_deployments_to_v1(FakeEndpoint(version, overrides)) is moves


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", {}),
        (
            "responses=v1, assistants = 2025-04-01-preview,",
            {"responses": "v1", "assistants": "2025-04-01-preview"},
        ),
        ({"responses": "v1"}, {"responses": "v1"}),
    ],
)
def test_parse_family_versions(raw: object, parsed: dict[str, str]) -> None:
    assert parse_family_versions(raw) == parsed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("responses", "'responses' is not family=version"),
        (["responses=v1"], "expected a table of family = version"),
        ({"batches": 2024}, 'quote it: batches = "2024"'),
    ],
)
def test_parse_family_versions_refuses(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_family_versions(raw)


@pytest.mark.parametrize(
    ("overrides", "problems"),
    [
        ({"responses": "v1", "speech": "2024-12-01-preview"}, []),
        (
            {"moderations": "v1"},
            ["family_api_versions.moderations: no such family (families: chat,"],
        ),
        (
            {"responses": "2024-10-21"},
            [
                "family_api_versions.responses: 2024-10-21 does not serve "
                "responses (use v1, or 2025-03-01-preview or a later preview)"
            ],
        ),
        (
            {"assistants": "v1"},
            [
                "family_api_versions.assistants: Azure's v1 API does not serve "
                "assistants (use 2024-05-01-preview or a later preview)"
            ],
        ),
        (
            {"batches": "2024-06-01"},
            [
                "family_api_versions.batches: 2024-06-01 does not serve batches "
                "(use v1, or 2024-10-21 or a later GA version, or "
                "2024-07-01-preview or a later preview)"
            ],
        ),
        (
            {"chat": "latest"},
            ["family_api_versions.chat: 'latest' is not an Azure OpenAI api-version"],
        ),
    ],
)
def test_family_version_problems(
    overrides: dict[str, str], problems: list[str]
) -> None:
    found = family_version_problems(overrides)
    assert len(found) == len(problems)
    for got, want in zip(found, problems, strict=True):
        assert got.startswith(want)


def test_the_setting_from_every_source() -> None:
    env = {"AZPROXY_FAMILY_API_VERSIONS": "responses=2025-04-01-preview"}
    assert Config.load(None, env).family_api_versions == {
        "responses": "2025-04-01-preview"
    }
    flags: dict[str, str | None] = {"family_api_versions": "speech=v1"}
    assert Config.load(flags, env).family_api_versions == {"speech": "v1"}
    table = {"family_api_versions": {"assistants": "2024-05-01-preview"}}
    assert Config.load(None, {}, table).family_api_versions == {
        "assistants": "2024-05-01-preview"
    }
    assert Config().family_api_versions == {}


def test_a_bad_override_stops_the_start() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(None, {"AZPROXY_FAMILY_API_VERSIONS": "responses=2024-10-21"})
    assert caught.value.problems == [
        "family_api_versions.responses: 2024-10-21 does not serve responses "
        "(use v1, or 2025-03-01-preview or a later preview)"
    ]
    with pytest.raises(ConfigError):
        Config(family_api_versions={"assistants": "v1"})
