"""Byte splices: the edited body is the original with each range replaced,
whether applied to bytes or read back piece by piece from a spool."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azproxy.relay.splice import Splice, pieces, spliced

BODY = b"0123456789"


@pytest.mark.parametrize(
    ("splices", "expected"),
    [
        ([], BODY),
        ([Splice(2, 4, b"ab")], b"01ab456789"),
        ([Splice(0, 0, b">")], b">0123456789"),
        ([Splice.insert(10, b"<")], b"0123456789<"),
        ([Splice(0, 10, b"")], b""),
        (
            [Splice(1, 2, b"xyz"), Splice.insert(5, b"-"), Splice(8, 10, b"")],
            b"0xyz234-567",
        ),
    ],
)
def test_spliced(splices: list[Splice], expected: bytes) -> None:
    assert spliced(BODY, splices) == expected
    assert len(expected) == len(BODY) + sum(s.growth for s in splices)


def test_pieces_name_ranges_of_the_original_and_new_bytes() -> None:
    assert list(pieces(10, [Splice(2, 4, b"ab"), Splice.insert(6, b"!")])) == [
        (0, 2),
        b"ab",
        (4, 6),
        b"!",
        (6, 10),
    ]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=40), st.data())
def test_pieces_and_spliced_agree_with_slice_assignment(
    body: bytes, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
    splices = [
        Splice(start, end, data.draw(st.binary(max_size=3)))
        for start, end in zip(cuts[::2], cuts[1::2], strict=False)
    ]
    expected = bytearray(body)
    for splice in reversed(splices):  # last first: earlier offsets stay valid
        expected[splice.start : splice.end] = splice.data
    assert spliced(body, splices) == expected
    joined = b"".join(
        body[p[0] : p[1]] if isinstance(p, tuple) else p
        for p in pieces(len(body), splices)
    )
    assert joined == expected
