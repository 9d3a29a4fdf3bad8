"""Answer bodies in Azure OpenAI's shape, deterministic so tests can compare bytes.

Azure differs from OpenAI in ways that matter to a proxy: a stream starts
with a chunk whose `choices` is empty and which carries `prompt_filter_results`;
every choice carries `content_filter_results`; asynchronous filtering adds
chunks without `delta`. The simulator reproduces these.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "ANSWER_WORDS",
    "chat_chunks",
    "chat_completion",
    "completion",
    "completion_chunks",
    "embeddings",
    "images",
    "speech_bytes",
    "words",
]

ANSWER_WORDS = (
    "Hello!",
    *("This", "is", "the", "azproxy", "simulator", "answering", "like"),
    *("Azure", "OpenAI", "would,", "one", "small", "piece", "at", "a", "time,"),
    *("so", "you", "can", "watch", "a", "stream", "arrive."),
)

_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULTS = {
    "hate": _SAFE,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
PROMPT_FILTER_RESULTS = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **CONTENT_FILTER_RESULTS,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
FINGERPRINT = "fp_azproxy_sim"


def words(count: int) -> list[str]:
    """`count` pieces of the answer, each with its leading space but the first."""
    pieces = [ANSWER_WORDS[i % len(ANSWER_WORDS)] for i in range(count)]
    return [p if i == 0 else " " + p for i, p in enumerate(pieces)]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps(body.get("messages", body.get("prompt", "")))) // 4)


def chat_completion(body: dict[str, Any], model: str, pieces: int) -> dict[str, Any]:
    text = "".join(words(pieces))
    return {
        "choices": [
            {
                "content_filter_results": CONTENT_FILTER_RESULTS,
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
                "message": {"content": text, "refusal": None, "role": "assistant"},
            }
        ],
        "created": int(time.time()),
        "id": "chatcmpl-sim" + hashlib.sha1(text.encode()).hexdigest()[:20],
        "model": model,
        "object": "chat.completion",
        "prompt_filter_results": PROMPT_FILTER_RESULTS,
        "system_fingerprint": FINGERPRINT,
        "usage": _usage(_prompt_tokens(body), pieces),
    }


def chat_chunks(
    body: dict[str, Any], model: str, pieces: int, *, async_filter: bool = False
) -> Iterator[dict[str, Any]]:
    """The events of a streamed chat completion, in the order Azure sends them.
    Asked for usage, every chunk says `"usage": null` and a last one has it."""
    created = int(time.time())
    base = {"created": created, "id": "chatcmpl-simstream", "model": model}
    base |= {"object": "chat.completion.chunk", "system_fingerprint": FINGERPRINT}
    usage = _asked_usage(body)

    def chunk(delta: dict[str, Any], finish: str | None, cfr: Any) -> dict[str, Any]:
        choice = {"content_filter_results": cfr, "delta": delta}
        choice |= {"finish_reason": finish, "index": 0, "logprobs": None}
        return {"choices": [choice], **base} | ({"usage": None} if usage else {})

    yield {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": PROMPT_FILTER_RESULTS,
    }
    yield chunk({"content": "", "refusal": None, "role": "assistant"}, None, {})
    offset = 0
    for piece in words(pieces):
        cfr = {} if async_filter else CONTENT_FILTER_RESULTS
        yield chunk({"content": piece}, None, cfr)
        offset += len(piece)
        if async_filter:
            yield _annotation_chunk(offset)
    yield chunk({}, "stop", {})
    if usage:
        yield {"choices": [], **base, "usage": _usage(_prompt_tokens(body), pieces)}


def _asked_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed request asked for its usage (stream_options)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _annotation_chunk(offset: int) -> dict[str, Any]:
    """Azure's asynchronous filter result: no delta, no id, no model."""
    return {
        "choices": [
            {
                "content_filter_offsets": {
                    "check_offset": 0,
                    "start_offset": 0,
                    "end_offset": offset,
                },
                "content_filter_results": CONTENT_FILTER_RESULTS,
                "finish_reason": None,
                "index": 0,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


def completion(body: dict[str, Any], model: str, pieces: int) -> dict[str, Any]:
    return {
        "choices": [
            {
                "content_filter_results": CONTENT_FILTER_RESULTS,
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
                "text": "".join(words(pieces)),
            }
        ],
        "created": int(time.time()),
        "id": "cmpl-sim",
        "model": model,
        "object": "text_completion",
        "prompt_filter_results": PROMPT_FILTER_RESULTS,
        "usage": _usage(_prompt_tokens(body), pieces),
    }


def completion_chunks(
    body: dict[str, Any], model: str, pieces: int
) -> Iterator[dict[str, Any]]:
    """The events of a streamed completion; usage as chat_chunks has it."""
    created = int(time.time())
    base = {"created": created, "id": "cmpl-simstream", "model": model}
    base["object"] = "text_completion"
    usage = _asked_usage(body)
    yield {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": PROMPT_FILTER_RESULTS,
    }
    texts = [*words(pieces), ""]
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        yield {
            "choices": [
                {
                    "content_filter_results": {} if last else CONTENT_FILTER_RESULTS,
                    "finish_reason": "stop" if last else None,
                    "index": 0,
                    "logprobs": None,
                    "text": text,
                }
            ],
            **base,
        } | ({"usage": None} if usage else {})
    if usage:
        yield {"choices": [], **base, "usage": _usage(_prompt_tokens(body), pieces)}


def _vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(dimensions)]


def embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    inputs = body.get("input", "")
    items = inputs if isinstance(inputs, list) else [inputs]
    dimensions = int(body.get("dimensions") or 8)
    data = []
    for index, item in enumerate(items):
        vector = _vector(json.dumps(item), dimensions)
        embedding: Any = vector
        if body.get("encoding_format") == "base64":
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding = base64.b64encode(packed).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = max(1, len(json.dumps(inputs)) // 4)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# The smallest valid PNG (1x1 transparent pixel), for b64_json answers.
_PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
    "AAAABJRU5ErkJggg=="
)


def images(body: dict[str, Any]) -> dict[str, Any]:
    count = int(body.get("n") or 1)
    as_b64 = body.get("response_format") == "b64_json"
    data = []
    for i in range(count):
        item: dict[str, Any] = {"revised_prompt": str(body.get("prompt", ""))}
        if as_b64:
            item["b64_json"] = _PNG_1X1
        else:
            item["url"] = f"https://sim.blob.core.windows.net/images/{i}.png"
        item["content_filter_results"] = CONTENT_FILTER_RESULTS
        data.append(item)
    return {"created": int(time.time()), "data": data}


SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def speech_bytes(text: str, size: int) -> bytes:
    """Deterministic stand-in audio: the same text always gives the same bytes."""
    seed = hashlib.sha256(text.encode()).digest()
    out = bytearray(b"ID3\x04\x00\x00\x00\x00\x00\x00")
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])
