"""Where Azure OpenAI serves each endpoint family, and with which api-version.

A dated api-version serves only the families it was published with: the
default 2024-10-21 (the latest dated GA) has no Responses, Assistants, vector
stores, speech, image edits or realtime. So each family is routed on its own:

- a family that Azure's v1 API serves GA and that no dated GA version serves
  (responses, vector stores) goes to `/openai/v1/...` from any dated setting:
  v1 needs no version and is not retired like a pinned preview;
- any other family takes the classic path with the configured version when
  that version serves it, else with its documented `fallback` version
  (2024-10-21 for GA families, LATEST_PREVIEW for preview-only ones);
- with api version `v1`, families on v1 go there (those v1 serves only in
  preview with `api-version=preview`); assistants and threads, which v1 does
  not serve, take the classic path with LATEST_PREVIEW;
- realtime is the exception to the first rule: its v1 path speaks another
  protocol (GA events, not the beta ones), so only `v1` selects it;
- `family_api_versions` overrides a family: `v1` or a dated version that
  serves it (checked when the settings load).

Facts, as Microsoft publishes them (checked against each other):
- azure-rest-api-specs, specification/cognitiveservices/data-plane/AzureOpenAI/
  inference/stable/2024-10-21/inference.json: deployments/{id}/completions,
  embeddings, chat/completions, audio/transcriptions, audio/translations,
  images/generations, and nothing else (no speech, no image edits);
  authoring/stable/2024-10-21/azureopenai.json: batches, files, fine_tuning/
  jobs, models, uploads; authoring/stable/2024-02-01: files, fine_tuning/jobs.
- the same repository, inference/preview/2025-04-01-preview/inference.yaml
  (the last dated preview): adds audio/speech, images/edits, assistants,
  threads, vector_stores, responses and realtime sessions.
- "API version lifecycle" (learn.microsoft.com/azure/ai-foundry/openai/
  api-version-lifecycle): the v1 API's GA paths are chat/completions,
  embeddings, files, fine_tuning, models, responses and vector_stores (evals
  and graders in preview); when each preview gained a family: Whisper in
  2023-09-01-preview, DALL-E 3 in 2023-12-01-preview, speech and Assistants
  in 2024-02-15-preview, Assistants v2 with vector stores in
  2024-05-01-preview, Batch in 2024-07-01-preview, Responses in
  2025-03-01-preview, gpt-image-1 (image edits) in 2025-04-01-preview,
  large file uploads in 2024-08-01-preview.
- "v1 preview" REST reference (learn.microsoft.com/azure/ai-foundry/openai/
  reference-preview-latest): audio/speech, audio/transcriptions,
  audio/translations, images/generations, images/edits and completions on
  `/openai/v1/...?api-version=preview`; no assistants or threads on v1.
- "GPT Realtime API via WebSockets": `/openai/realtime?api-version=<preview>`
  (from 2024-10-01-preview) speaks the beta protocol, `/openai/v1/realtime`
  the GA one.
Pure: no I/O; tested from tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from azproxy.remembered import Remembered
from azproxy.settings.patterns import API_VERSION_RE

__all__ = [
    "DEPLOYMENT_FAMILIES",
    "LATEST_GA",
    "LATEST_PREVIEW",
    "NO_OVERRIDES",
    "RESOURCE_ROOTS",
    "SUPPORT",
    "Family",
    "OnV1",
    "Route",
    "Support",
    "Versioned",
    "family_of",
    "family_version_problems",
    "parse_family_versions",
    "route",
    "route_for",
    "sends_deployments_to_v1",
]

LATEST_GA = "2024-10-21"
LATEST_PREVIEW = "2025-04-01-preview"


class Family(StrEnum):
    """An endpoint family: the unit a version override names."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    IMAGE_GENERATIONS = "image_generations"
    IMAGE_EDITS = "image_edits"
    TRANSCRIPTIONS = "transcriptions"
    TRANSLATIONS = "translations"
    SPEECH = "speech"
    FILES = "files"
    UPLOADS = "uploads"  # large files in parts
    BATCHES = "batches"
    FINE_TUNING = "fine_tuning"
    ASSISTANTS = "assistants"  # threads too
    VECTOR_STORES = "vector_stores"
    RESPONSES = "responses"
    REALTIME = "realtime"


class OnV1(Enum):
    GA = "ga"
    PREVIEW = "preview"  # only with api-version=preview
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Support:
    """Which api-versions serve a family on the classic path, and on v1."""

    ga_since: str | None  # the first dated GA version serving it
    preview_since: str  # the first dated preview serving it
    v1: OnV1
    fallback: str  # the classic version when the configured one does not serve it
    v1_by_default: bool = False  # routed to v1 from any dated setting

    def serves(self, version: str) -> bool:
        """Whether a dated (GA or -preview) version serves the family."""
        if version.endswith("-preview"):
            return version[:10] >= self.preview_since[:10]
        return self.ga_since is not None and version >= self.ga_since


_GA, _PREVIEW, _ABSENT = OnV1.GA, OnV1.PREVIEW, OnV1.ABSENT
SUPPORT: Mapping[Family, Support] = MappingProxyType(
    _SUPPORT := {
        Family.CHAT: Support("2023-05-15", "2023-03-15-preview", _GA, LATEST_GA),
        Family.COMPLETIONS: Support(
            "2022-12-01", "2022-03-01-preview", _PREVIEW, LATEST_GA
        ),
        Family.EMBEDDINGS: Support("2022-12-01", "2022-03-01-preview", _GA, LATEST_GA),
        Family.IMAGE_GENERATIONS: Support(
            "2024-02-01", "2023-12-01-preview", _PREVIEW, LATEST_GA
        ),
        Family.IMAGE_EDITS: Support(None, LATEST_PREVIEW, _PREVIEW, LATEST_PREVIEW),
        Family.TRANSCRIPTIONS: Support(
            "2024-02-01", "2023-09-01-preview", _PREVIEW, LATEST_GA
        ),
        Family.TRANSLATIONS: Support(
            "2024-02-01", "2023-09-01-preview", _PREVIEW, LATEST_GA
        ),
        Family.SPEECH: Support(None, "2024-02-15-preview", _PREVIEW, LATEST_PREVIEW),
        Family.FILES: Support("2022-12-01", "2022-03-01-preview", _GA, LATEST_GA),
        Family.UPLOADS: Support(LATEST_GA, "2024-08-01-preview", _PREVIEW, LATEST_GA),
        Family.BATCHES: Support(LATEST_GA, "2024-07-01-preview", _PREVIEW, LATEST_GA),
        Family.FINE_TUNING: Support("2024-02-01", "2023-10-01-preview", _GA, LATEST_GA),
        # v2, which the openai SDKs speak (OpenAI-Beta: assistants=v2).
        Family.ASSISTANTS: Support(None, "2024-05-01-preview", _ABSENT, LATEST_PREVIEW),
        Family.VECTOR_STORES: Support(
            None, "2024-05-01-preview", _GA, LATEST_PREVIEW, v1_by_default=True
        ),
        Family.RESPONSES: Support(
            None, "2025-03-01-preview", _GA, LATEST_PREVIEW, v1_by_default=True
        ),
        Family.REALTIME: Support(None, "2024-10-01-preview", _GA, LATEST_PREVIEW),
    }
)

# OpenAI paths after /v1/ (resource paths by their first segment). The
# resource roots are where mapping.py gets its RESOURCE_ROOTS: a root added
# here is served, with its family, in one edit.
_BY_PATH = {
    "chat/completions": Family.CHAT,
    "completions": Family.COMPLETIONS,
    "embeddings": Family.EMBEDDINGS,
    "images/generations": Family.IMAGE_GENERATIONS,
    "images/edits": Family.IMAGE_EDITS,
    "audio/transcriptions": Family.TRANSCRIPTIONS,
    "audio/translations": Family.TRANSLATIONS,
    "audio/speech": Family.SPEECH,
}
_BY_ROOT = {
    "files": Family.FILES,
    "uploads": Family.UPLOADS,
    "batches": Family.BATCHES,
    "fine_tuning": Family.FINE_TUNING,
    "assistants": Family.ASSISTANTS,
    "threads": Family.ASSISTANTS,
    "vector_stores": Family.VECTOR_STORES,
    "responses": Family.RESPONSES,
}
# The families whose deployment comes from the request (not a resource call).
DEPLOYMENT_FAMILIES = frozenset(_BY_PATH.values())
RESOURCE_ROOTS = frozenset(_BY_ROOT)
NO_OVERRIDES: Mapping[str, str] = MappingProxyType({})
_FAMILY_NAMES = frozenset(f.value for f in Family)


class Route(NamedTuple):
    """Where one family goes: v1 or classic, and the api-version to send
    (a dated one on the classic path; on v1 None, or `preview`). A tuple:
    one is made per request, and a frozen dataclass costs 3x to build."""

    v1: bool
    version: str | None


_V1 = Route(True, None)
_V1_PREVIEW = Route(True, "preview")


class Versioned(Protocol):
    """An endpoint, as far as routing is concerned."""

    @property
    def api_version(self) -> str: ...

    @property
    def family_versions(self) -> Mapping[str, str]: ...


def family_of(subpath: str) -> Family:
    """The family of an OpenAI path after /v1/ that mapping.classify accepted."""
    found = _BY_PATH.get(subpath)
    return found if found is not None else _BY_ROOT[subpath.partition("/")[0]]


def route(
    family: Family, api_version: str, overrides: Mapping[str, str] = NO_OVERRIDES
) -> Route:
    """Where a family goes for an endpoint's api-version and the overrides
    (already checked by family_version_problems)."""
    support = _SUPPORT[family]
    override = overrides.get(family) if overrides else None
    if (override or api_version) == "v1":
        if support.v1 is OnV1.GA:
            return _V1
        if support.v1 is OnV1.PREVIEW:
            return _V1_PREVIEW
        return Route(False, support.fallback)  # not on v1: assistants
    if override is not None:
        return Route(False, override)
    if support.v1_by_default:
        return _V1
    if support.serves(api_version):
        return Route(False, api_version)
    return Route(False, support.fallback)


def route_for(subpath: str, endpoint: Versioned) -> Route:
    """Where a request for an OpenAI path goes on an endpoint. On v1, Azure
    reads the deployment from the body's `model`: build_target must put it
    there whenever `.v1` is true, whatever the endpoint's api_version."""
    family, overrides = family_of(subpath), endpoint.family_versions
    if overrides:
        return route(family, endpoint.api_version, overrides)
    return _ROUTES[family, endpoint.api_version]


# The route of each (family, api-version) without overrides, decided once:
# a request pays a lookup. A pass-through token names its own api-version,
# so the bound.
_ROUTES: Remembered[tuple[Family, str], Route] = Remembered(
    lambda key: route(*key), 256
)


def sends_deployments_to_v1(endpoint: Versioned) -> bool:
    """Whether any deployment-scoped family goes to v1, where the body's
    `model` must become the deployment (so the body has to be read)."""
    if endpoint.api_version == "v1":
        return True
    overrides = endpoint.family_versions
    return bool(overrides) and any(
        version == "v1" and family in DEPLOYMENT_FAMILIES
        for family, version in overrides.items()
    )


def parse_family_versions(raw: Any) -> dict[str, str]:
    """From a TOML table or the form `family=version,...`; values are checked
    by family_version_problems."""
    if isinstance(raw, str):
        table: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in raw.split(","))):
            family, sep, version = pair.partition("=")
            if not sep:
                raise ValueError(
                    f"family_api_versions: {pair!r} is not family=version "
                    "(e.g. responses=v1,assistants=2025-04-01-preview)"
                )
            table[family.strip()] = version.strip()
        raw = table
    if not isinstance(raw, Mapping):
        raise ValueError("family_api_versions: expected a table of family = version")
    for family, version in raw.items():
        if not isinstance(version, str):
            raise ValueError(
                f"family_api_versions.{family}: {version!r} is not text; "
                f'quote it: {family} = "{version}"'
            )
    return {str(family): version for family, version in raw.items()}


def family_version_problems(overrides: Mapping[str, str]) -> list[str]:
    """Every override that names no family or a version not serving it."""
    found = []
    names = ", ".join(f.value for f in Family)
    for name, version in overrides.items():
        where = f"family_api_versions.{name}"
        if name not in _FAMILY_NAMES:
            found.append(f"{where}: no such family (families: {names})")
        elif not API_VERSION_RE.fullmatch(version):
            found.append(
                f"{where}: {version!r} is not an Azure OpenAI api-version "
                "(use v1 or a date like 2024-10-21, optionally with -preview)"
            )
        else:
            problem = _unserved(Family(name), version)
            if problem:
                found.append(f"{where}: {problem}")
    return found


def _unserved(family: Family, version: str) -> str:
    support = SUPPORT[family]
    if version == "v1":
        if support.v1 is OnV1.ABSENT:
            return f"Azure's v1 API does not serve {family} ({_serving(support)})"
        return ""
    if support.serves(version):
        return ""
    return f"{version} does not serve {family} ({_serving(support)})"


def _serving(support: Support) -> str:
    choices = []
    if support.v1 is not OnV1.ABSENT:
        choices.append("v1")
    if support.ga_since is not None:
        choices.append(f"{support.ga_since} or a later GA version")
    choices.append(f"{support.preview_since} or a later preview")
    return "use " + ", or ".join(choices)
