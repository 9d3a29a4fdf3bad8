"""The simulator serves a path only with the api-versions Azure serves it with,
and answers Azure's 404 otherwise, so a wrong routing table in azproxy fails."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy.simulator import SimSettings, create_simulator
from tests.forms import CONTENT_TYPE, field, file_part, form

KEY = {"api-key": "sim-key"}
NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
DEP = "/openai/deployments/dep"


@pytest.fixture
async def sim(aiohttp_client: AiohttpClient) -> Any:
    settings = SimSettings(api_key="sim-key", chunks=2, chunk_delay_ms=0)
    return await aiohttp_client(create_simulator(settings))


@pytest.mark.parametrize(
    ("path", "body", "served"),
    [
        # Responses: never with a dated GA version; previews from 2025-03-01.
        ("/openai/responses?api-version=2024-10-21", {"model": "dep"}, False),
        ("/openai/responses?api-version=2025-01-01-preview", {"model": "dep"}, False),
        ("/openai/responses?api-version=2025-03-01-preview", {"model": "dep"}, True),
        ("/openai/v1/responses", {"model": "dep", "input": "hi"}, True),
        # Speech: preview-only; on v1 only with api-version=preview.
        (f"{DEP}/audio/speech?api-version=2024-10-21", {"input": "x"}, False),
        (f"{DEP}/audio/speech?api-version=2024-02-15-preview", {"input": "x"}, True),
        ("/openai/v1/audio/speech", {"model": "dep", "input": "x"}, False),
        ("/openai/v1/audio/speech?api-version=preview", {"model": "dep"}, True),
        # Chat: GA since 2023-05-15, everywhere on v1.
        (f"{DEP}/chat/completions?api-version=2023-05-15", {"messages": []}, True),
        (f"{DEP}/chat/completions?api-version=2022-12-01", {"messages": []}, False),
        (f"{DEP}/chat/completions?api-version=2024-10-22", {"messages": []}, False),
        (f"{DEP}/chat/completions?api-version=1999-01-01-preview", {}, False),
        (f"{DEP}/chat/completions", {"messages": []}, False),
        ("/openai/v1/chat/completions", {"model": "dep", "messages": []}, True),
        # Completions: GA since 2022-12-01; on v1 only in preview.
        (f"{DEP}/completions?api-version=2022-12-01", {"prompt": "x"}, True),
        ("/openai/v1/completions", {"model": "dep", "prompt": "x"}, False),
        # Assistants and threads: previews only, and never on v1.
        ("/openai/assistants?api-version=2024-10-21", {"model": "dep"}, False),
        ("/openai/assistants?api-version=2024-05-01-preview", {"model": "d"}, True),
        ("/openai/v1/assistants", {"model": "dep"}, False),
        ("/openai/v1/threads?api-version=preview", {}, False),
        # Vector stores: previews, or v1 GA.
        ("/openai/vector_stores?api-version=2024-10-21", {"name": "kb"}, False),
        ("/openai/vector_stores?api-version=2024-05-01-preview", {}, True),
        ("/openai/v1/vector_stores", {"name": "kb"}, True),
    ],
)
async def test_json_paths(sim: Any, path: str, body: Any, served: bool) -> None:
    response = await sim.post(path, json=body, headers=KEY)
    if served:
        assert response.status == 200, await response.text()
    else:
        assert response.status == 404
        assert await response.json() == NOT_FOUND


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("/openai/batches?api-version=2024-06-01", False),
        ("/openai/batches?api-version=2024-10-21", True),
        ("/openai/batches?api-version=2024-07-01-preview", True),
        ("/openai/v1/batches", False),
        ("/openai/v1/batches?api-version=preview", True),
        ("/openai/files?api-version=2022-12-01", True),
        ("/openai/v1/files", True),
        ("/openai/threads/thread_1/messages?api-version=2024-10-21", False),
    ],
)
async def test_listings(sim: Any, path: str, served: bool) -> None:
    response = await sim.get(path, headers=KEY)
    assert response.status == (200 if served else 404)
    if not served:
        assert await response.json() == NOT_FOUND


@pytest.mark.parametrize(
    ("path", "served"),
    [
        (f"{DEP}/images/edits?api-version=2024-10-21", False),
        (f"{DEP}/images/edits?api-version=2025-04-01-preview", True),
        ("/openai/v1/images/edits", False),
        ("/openai/v1/images/edits?api-version=preview", True),
        (f"{DEP}/audio/transcriptions?api-version=2024-02-01", True),
        (f"{DEP}/audio/transcriptions?api-version=2023-05-15", False),
        ("/openai/v1/audio/transcriptions", False),
    ],
)
async def test_uploads(sim: Any, path: str, served: bool) -> None:
    image = file_part(b"\x89PNG", name="image", filename="i.png")
    upload = image if "images" in path else file_part()
    body = form(field("model", "dep"), field("prompt", "p"), upload)
    response = await sim.post(
        path, data=body, headers=KEY | {"Content-Type": CONTENT_TYPE}
    )
    assert response.status == (200 if served else 404), await response.text()


@pytest.mark.parametrize(
    ("version", "status"),
    [
        ("2024-08-01-preview", 404),  # a preview from before realtime
        ("2024-10-21", 404),
        ("2024-10-01-preview", 400),  # served: then it wants an upgrade
    ],
)
async def test_classic_realtime(sim: Any, version: str, status: int) -> None:
    path = f"/openai/realtime?api-version={version}&deployment=rt"
    response = await sim.get(path, headers=KEY)
    assert response.status == status
