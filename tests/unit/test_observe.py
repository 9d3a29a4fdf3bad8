from __future__ import annotations

import json
import logging

import pytest

from azproxy.log import JsonFormatter
from azproxy.observe import usage_of

KEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (
            b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,'
            b'"total_tokens":12}}',
            (5, 7, 12),
        ),
        (
            # nested details, and "usage" mentioned inside the answer text
            b'{"choices":[{"message":{"content":"\\"usage\\": 99"}}],"usage":'
            b'{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,'
            b'"prompt_tokens_details":{"cached_tokens":0}}}',
            (1, 2, 3),
        ),
        (
            # the Responses API's names
            b'{"usage":{"input_tokens":4,"output_tokens":6,"total_tokens":10}}',
            (4, 6, 10),
        ),
        (
            # a stream's last events
            b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":'
            b'9,"total_tokens":17}}\n\ndata: [DONE]\n\n',
            (8, 9, 17),
        ),
        (b'{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":3}}', (3, 0, 3)),
        (b'{"choices":[]}', None),
        (b'{"usage": broken', None),
        (b"\x00\x01binary", None),
    ],
)
def test_usage_of(body: bytes, usage: tuple[int, int, int] | None) -> None:
    assert usage_of(body) == usage


def test_json_log_lines_are_objects_and_redacted() -> None:
    record = logging.LogRecord(
        "azproxy.relay", logging.WARNING, __file__, 1, "key %s", (KEY,), None
    )
    line = JsonFormatter().format(record)
    document = json.loads(line)
    assert document["level"] == "warning"
    assert document["logger"] == "azproxy.relay"
    assert document["message"] == "key [redacted]"
    assert document["time"].endswith("+00:00")
