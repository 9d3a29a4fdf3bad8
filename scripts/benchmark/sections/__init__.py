"""The benchmark's sections, by name, in the order they run.

A section is an async function `(Bench) -> list[Row]` (see context.py): it
measures, keeps its details in `bench.raw` for --json, and returns its rows of
the table; it raises `Skip` when it cannot run here. The runner times it and
reads how busy the machine was around it. To add one, write it in a module of
its own here and name it below: `--only NAME` selects it.
"""

from __future__ import annotations

from ..context import Section
from .fleet import fleet
from .floor import relay_floor
from .hostile import hostile
from .limits import limits_cost
from .memory import streams_200_rss
from .nonstream import nonstream_c1, nonstream_c50
from .sse_compat import sse_compat_cost
from .storm import storm_429
from .streams import streams_c50
from .uploads import upload_rss
from .workers import workers_c50

__all__ = ["SECTIONS"]

SECTIONS: dict[str, Section] = {
    "nonstream_c1": nonstream_c1,
    "nonstream_c50": nonstream_c50,
    "relay_floor": relay_floor,
    "streams_c50": streams_c50,
    "streams_200_rss": streams_200_rss,
    "upload_rss": upload_rss,
    "sse_compat_cost": sse_compat_cost,
    "storm_429": storm_429,
    "workers_c50": workers_c50,
    "limits": limits_cost,
    "fleet": fleet,
    "hostile": hostile,
}
