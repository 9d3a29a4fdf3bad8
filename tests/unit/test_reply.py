"""What the relay reads of every answer, decided once (relay/send.py)."""

from __future__ import annotations

import pytest

from azproxy.relay.send import is_event_stream


@pytest.mark.parametrize(
    ("content_type", "sse"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        ("Text/Event-Stream ;charset=utf-8", True),
        (" text/event-stream", True),
        ("application/json", False),
        ("text/event-streams", False),
        ("text/plain; x=text/event-stream", False),
        ("", False),
        (None, False),
    ],
)
def test_an_event_stream_is_known_by_its_media_type(
    content_type: str | None, sse: bool
) -> None:
    assert is_event_stream(content_type) is sse
