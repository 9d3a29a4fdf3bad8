"""A value made once per key and remembered, within a bound.

The hot path turns the same few inputs into the same outputs again and again
(an upstream URL's text into a yarl URL, a log field into its JSON); a dict
lookup costs a fraction of the making. What a client sends decides the keys,
so the memory has a bound: at most `kept` entries, and when full it starts
over (a client varying its input churns it, and holds nothing more).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["Remembered"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _always(key: object) -> bool:
    return True


class Remembered(dict[K, V]):
    """`remembered[key]` is `make(key)`, made once for a key `keeps` accepts."""

    __slots__ = ("_keeps", "_kept", "_make")

    def __init__(
        self,
        make: Callable[[K], V],
        kept: int,
        keeps: Callable[[K], bool] = _always,
    ) -> None:
        super().__init__()
        self._make, self._kept, self._keeps = make, kept, keeps

    def __missing__(self, key: K) -> V:
        value = self._make(key)
        if self._keeps(key):
            if len(self) >= self._kept:
                self.clear()
            self[key] = value
        return value
