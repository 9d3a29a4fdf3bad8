"""Multipart uploads: audio transcriptions and translations, image edits.

The simulator checks the form the way Azure does (a file part, the fields it
needs) and echoes what it received, so a test can check every field and the
file bytes arrived intact: the transcript text names the file, its size and
its SHA-256, and the `x-sim-form` header lists the plain fields as JSON.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import MultiDictProxy

from . import answers
from .common import azure_error, common_headers, dumps

__all__ = ["OPERATIONS", "describe_file"]

TEXT_FORMATS = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]


def describe_file(upload: web.FileField) -> str:
    data = upload.file.read()
    digest = hashlib.sha256(data).hexdigest()
    return f"{upload.filename} ({len(data)} bytes, sha256 {digest})"


def _fields(form: Form) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _form(request: web.Request) -> Form | web.Response:
    if request.content_type != "multipart/form-data":
        return azure_error(
            400, "invalid_request", "The request must be multipart/form-data."
        )
    try:
        return await request.post()
    except ValueError as exc:
        return azure_error(400, "invalid_request", f"Malformed multipart body: {exc}")


async def audio(request: web.Request, deployment: str) -> web.StreamResponse:
    form = await _form(request)
    if isinstance(form, web.Response):
        return form
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return azure_error(400, "invalid_request", "The 'file' part is required.")
    verb = "translated" if request.path.endswith("translations") else "transcribed"
    text = f"{verb} by {deployment}: {describe_file(upload)}"
    fields = _fields(form)
    headers = common_headers() | {"x-sim-form": dumps(fields)}
    kind = fields.get("response_format", "json")
    if kind in TEXT_FORMATS:
        return web.Response(
            text=text + "\n", content_type=TEXT_FORMATS[kind], headers=headers
        )
    document: dict[str, object] = {"text": text}
    if kind == "verbose_json":
        document |= {"task": verb, "language": fields.get("language", "english")}
        document |= {"duration": 1.0, "segments": []}
    return web.json_response(document, headers=headers, dumps=dumps)


async def image_edits(request: web.Request, deployment: str) -> web.StreamResponse:
    form = await _form(request)
    if isinstance(form, web.Response):
        return form
    images = [v for k, v in form.items() if k in ("image", "image[]")]
    files = [v for v in images if isinstance(v, web.FileField)]
    if not files or len(files) != len(images):
        return azure_error(400, "invalid_request", "The 'image' part is required.")
    fields = _fields(form)
    if not fields.get("prompt"):
        return azure_error(400, "invalid_request", "The 'prompt' field is required.")
    described = "; ".join(describe_file(f) for f in files)
    document = answers.images(
        {"prompt": f"{fields['prompt']} [{described}]", "n": fields.get("n") or 1}
        | {"response_format": fields.get("response_format", "b64_json")}
    )
    document["created"] = int(time.time())
    headers = common_headers() | {"x-sim-form": dumps(fields)}
    return web.json_response(document, headers=headers, dumps=dumps)


Upload = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
OPERATIONS: dict[str, Upload] = {
    "audio/transcriptions": audio,
    "audio/translations": audio,
    "images/edits": image_edits,
}
