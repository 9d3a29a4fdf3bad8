"""Files and batches. Uploads are read as a stream and hashed: a file larger
than KEEP_BYTES is counted, not kept, so a 500 MB upload costs no memory."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from aiohttp import BodyPartReader, web

from .common import azure_error, common_headers, dumps
from .resources import (
    STORE,
    Route,
    StoredFile,
    json_body,
    listing,
    missing,
    new_id,
    now,
    ok,
)

__all__ = ["KEEP_BYTES", "ROUTES"]

KEEP_BYTES = 1024 * 1024
READ_BYTES = 256 * 1024


async def upload(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    if request.content_type != "multipart/form-data":
        return azure_error(400, "invalid_request", "Upload a file as multipart.")
    fields: dict[str, str] = {}
    found: tuple[str, int, str, bytes | None] | None = None
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.filename is None:
            fields[part.name] = await part.text()
        elif part.name == "file":
            found = await _hash_part(part)
    if found is None or not fields.get("purpose"):
        return azure_error(
            400, "invalid_request", "Send a 'file' part and a 'purpose' field."
        )
    filename, size, digest, content = found
    file_id = new_id("file-")
    record = {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": now(),
        "filename": filename,
        "purpose": fields["purpose"],
        "status": "processed",
    }
    request.app[STORE].files[file_id] = StoredFile(record, content)
    headers = common_headers() | {"x-sim-sha256": digest}
    return web.json_response(record, headers=headers, dumps=dumps)


async def _hash_part(part: BodyPartReader) -> tuple[str, int, str, bytes | None]:
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    while chunk := await part.read_chunk(READ_BYTES):
        digest.update(chunk)
        size += len(chunk)
        if size <= KEEP_BYTES:
            kept += chunk
    return (
        part.filename or "file",
        size,
        digest.hexdigest(),
        (bytes(kept) if size <= KEEP_BYTES else None),
    )


async def list_files(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    purpose = request.query.get("purpose")
    records = [
        f.record
        for f in request.app[STORE].files.values()
        if purpose is None or f.record["purpose"] == purpose
    ]
    limit = request.query.get("limit")
    return listing(records, int(limit) if limit and limit.isdigit() else None)


async def get_file(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    stored = request.app[STORE].files.get(ids[0])
    return ok(stored.record) if stored else missing("file", ids[0])


async def delete_file(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    stored = request.app[STORE].files.pop(ids[0], None)
    if stored is None:
        return missing("file", ids[0])
    return ok({"id": ids[0], "object": "file", "deleted": True})


async def file_content(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    stored = request.app[STORE].files.get(ids[0])
    if stored is None:
        return missing("file", ids[0])
    if stored.content is None:
        return azure_error(
            400, "invalid_request", "The simulator only hashed this large file."
        )
    return web.Response(
        body=stored.content,
        content_type="application/octet-stream",
        headers=common_headers(),
    )


async def create_batch(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or file_id not in request.app[STORE].files:
        return azure_error(400, "invalid_request", "input_file_id names no file.")
    batch = {
        "id": new_id("batch_"),
        "object": "batch",
        "endpoint": body.get("endpoint", "/chat/completions"),
        "errors": None,
        "input_file_id": file_id,
        "completion_window": body.get("completion_window", "24h"),
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now(),
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
    }
    return ok(request.app[STORE].put("batch", batch))


async def get_batch(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    batch = request.app[STORE].get("batch", ids[0])
    return ok(batch) if batch else missing("batch", ids[0])


async def list_batches(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    return listing(request.app[STORE].all("batch"))


async def cancel_batch(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    batch = request.app[STORE].get("batch", ids[0])
    if batch is None:
        return missing("batch", ids[0])
    batch["status"] = "cancelling"
    return ok(batch)


ROUTES = [
    Route("POST", ("files",), upload),
    Route("GET", ("files",), list_files),
    Route("GET", ("files", "*"), get_file),
    Route("DELETE", ("files", "*"), delete_file),
    Route("GET", ("files", "*", "content"), file_content),
    Route("POST", ("batches",), create_batch),
    Route("GET", ("batches",), list_batches),
    Route("GET", ("batches", "*"), get_batch),
    Route("POST", ("batches", "*", "cancel"), cancel_batch),
]
