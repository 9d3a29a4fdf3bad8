"""Which paths Azure OpenAI serves with which api-version, as Microsoft publishes it.

The simulator answers Azure's 404 ("Resource not found") to a path and
api-version that Azure does not serve together. This is written from the
published specifications on its own, deliberately not from azproxy's routing
table (azproxy/relay/families.py): a wrong table there then fails the tests that
run azproxy against the simulator.

- Dated GA releases, per release: azure-rest-api-specs,
  specification/cognitiveservices/data-plane/AzureOpenAI/{inference,authoring}/
  stable/<version>/ (inference.json lists the deployment operations,
  azureopenai.json the resource ones). 2024-06-01 and 2024-10-21 list the
  same inference operations; 2024-10-21 adds batches and uploads.
- Previews: the first preview that published an operation, from the same
  repository's preview folders and the "API version lifecycle" page
  (learn.microsoft.com/azure/ai-foundry/openai/api-version-lifecycle);
  every later preview keeps it (2025-04-01-preview, the last, has them all).
- The v1 API (/openai/v1/...): the lifecycle page's status table lists its GA
  paths; the "v1 preview" reference (reference-preview-latest) shows the rest
  only with `api-version=preview`; it has no assistants or threads.
- `stream_options` (a stream's usage): in the request of inference/stable/
  2024-10-21 and of previews from 2024-09-01-preview (2024-08-01-preview
  only declares its schema); on v1. Older versions answer 400
  "Unknown parameter: 'stream_options'" (Microsoft Q&A 2007680).
"""

from __future__ import annotations

import re

__all__ = ["classic_serves", "stream_options_served", "v1_serves"]

# Operations are OpenAI paths for deployment calls (audio/speech) and first
# path segments for resource calls (files, threads).
_INFERENCE_2022 = frozenset({"completions", "embeddings"})
_INFERENCE_2023 = _INFERENCE_2022 | {"chat/completions"}
_INFERENCE_2024 = _INFERENCE_2023 | {
    "audio/transcriptions",
    "audio/translations",
    "images/generations",
}
GA_RELEASES: dict[str, frozenset[str]] = {
    "2022-12-01": _INFERENCE_2022 | {"files"},
    "2023-05-15": _INFERENCE_2023 | {"files"},
    "2024-02-01": _INFERENCE_2024 | {"files", "fine_tuning"},
    "2024-06-01": _INFERENCE_2024 | {"files", "fine_tuning"},
    "2024-10-21": _INFERENCE_2024 | {"files", "fine_tuning", "batches", "uploads"},
}
FIRST_PREVIEW = {
    "completions": "2022-03-01-preview",
    "embeddings": "2022-03-01-preview",
    "files": "2022-03-01-preview",
    "chat/completions": "2023-03-15-preview",
    "audio/transcriptions": "2023-09-01-preview",
    "audio/translations": "2023-09-01-preview",
    "fine_tuning": "2023-10-01-preview",
    "images/generations": "2023-12-01-preview",  # DALL-E 3's synchronous API
    "audio/speech": "2024-02-15-preview",
    "assistants": "2024-02-15-preview",
    "threads": "2024-02-15-preview",
    "vector_stores": "2024-05-01-preview",
    "batches": "2024-07-01-preview",
    "uploads": "2024-08-01-preview",
    "realtime": "2024-10-01-preview",
    "responses": "2025-03-01-preview",
    "images/edits": "2025-04-01-preview",  # gpt-image-1
}
V1_GA = frozenset(
    {
        "chat/completions",
        "embeddings",
        "files",
        "fine_tuning",
        "models",
        "responses",
        "vector_stores",
        "realtime",
    }
)
V1_PREVIEW_ONLY = frozenset(
    {
        "completions",
        "images/generations",
        "images/edits",
        "audio/speech",
        "audio/transcriptions",
        "audio/translations",
        "batches",
        "uploads",
    }
)
PREVIEW_RE = re.compile(r"\d{4}-\d{2}-\d{2}-preview")


def classic_serves(operation: str, version: str | None) -> bool:
    """Whether `/openai/...?api-version=VERSION` serves the operation."""
    if version is None:
        return False
    if PREVIEW_RE.fullmatch(version):
        first = FIRST_PREVIEW.get(operation)
        # Same-length dates compare in order as text.
        return first is not None and version >= first
    return operation in GA_RELEASES.get(version, ())


def v1_serves(operation: str, version: str | None) -> bool:
    """Whether `/openai/v1/...` serves the operation with this api-version
    (None, `preview` or `latest`: dated ones are refused before)."""
    if operation in V1_GA:
        return True
    return operation in V1_PREVIEW_ONLY and version in ("preview", "latest")


STREAM_OPTIONS_GA = "2024-10-21"
STREAM_OPTIONS_PREVIEW = "2024-09-01-preview"


def stream_options_served(v1: bool, version: str | None) -> bool:
    """Whether a chat or completions request may carry `stream_options`."""
    if v1:
        return True
    if version is None:
        return False
    if PREVIEW_RE.fullmatch(version):
        return version >= STREAM_OPTIONS_PREVIEW
    return version in GA_RELEASES and version >= STREAM_OPTIONS_GA
