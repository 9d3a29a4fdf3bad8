"""The hostile section's load: bodies built to hurt, clients that pause or
never read (raw sockets, so nothing is read for them), a /healthz poller,
and a server's memory around them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from .fake_azure import EVENT_HEADER
from .procfs import cpu_seconds, reset_peak_rss, status_kib
from .services import LOOPBACK
from .targets import DEPLOYMENT, OPENAI_PATH

__all__ = [
    "MODEL_MAP_TOKEN",
    "Memory",
    "SilentStream",
    "close_all",
    "hold_until_idle",
    "image_chat",
    "json_bomb",
    "open_paused_body",
    "open_silent_stream",
    "post_json",
    "read_status",
    "request_head",
    "status_of",
    "with_healthz_poll",
]

T = TypeVar("T")

# A pass-through token with a model map: the model decides the deployment, so
# azproxy has to read the body's model (the costly case the issue names).
MODEL_MAP_TOKEN = f"bench:{DEPLOYMENT}|{DEPLOYMENT},other|other:bench-key"
JSON_HEADERS = {
    "Authorization": f"Bearer {MODEL_MAP_TOKEN}",
    "Content-Type": "application/json",
}
POLL_PAUSE_S = 0.02
# A server is idle once it used under 5 % of a core in each of two samples
# in a row.
IDLE_SAMPLE_S = 0.25
IDLE_CPU_SHARE = 0.05
IDLE_SAMPLES = 2
SEND_SLICE = 1024 * 1024  # raw bodies go out in slices: no copy of a 32 MB body
# A client that never reads: asyncio stops reading for it once the answer's
# head and a few KiB are in. Its socket keeps the kernel's default receive
# buffer (tcp_rmem's middle value), which does not grow while nothing is read.
SILENT_READER_LIMIT = 4096

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")


def json_bomb(size: int) -> bytes:
    """`{"model":"gpt-4o","x":[[],[],...]}` of exactly `size` bytes: about
    one container per 3 bytes, the most a JSON body can hold."""
    head = b'{"model":"' + DEPLOYMENT.encode() + b'","x":['
    tail = b"]}"
    room = size - len(head) - len(tail)
    count = (room + 1) // 3  # "[]," per item but the last: 3 * count - 1 bytes
    if count < 1:
        raise ValueError(f"a JSON bomb needs at least {len(head) + len(tail) + 2} B")
    spaces = room - (3 * count - 1)  # 0 to 2: whitespace JSON allows
    return head + b"[]," * (count - 1) + b"[]" + b" " * spaces + tail


# Base64 of every byte value: what an image's data URL looks like to a parser.
_BASE64_BLOCK = base64.b64encode(bytes(range(256)) * 3)


def image_chat(size: int) -> bytes:
    """A polite chat request of exactly `size` bytes: one message with a
    base64 image data URL that takes up nearly all of it."""
    head = (
        b'{"model":"' + DEPLOYMENT.encode() + b'","messages":[{"role":"user",'
        b'"content":[{"type":"text","text":"What is in this image?"},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,'
    )
    tail = b'"}}]}]}'
    room = size - len(head) - len(tail)
    if room < 0:
        raise ValueError(f"an image chat needs at least {len(head) + len(tail)} B")
    data_len = room - room % 4  # whole base64 quanta; the rest is whitespace
    repeats = data_len // len(_BASE64_BLOCK) + 1
    data = (_BASE64_BLOCK * repeats)[:data_len]
    return head + data + tail + b" " * (room - data_len)


def request_head(port: int, headers: Mapping[str, str], length: int) -> bytes:
    """An HTTP/1.1 POST head to azproxy's chat completions route."""
    lines = [
        f"POST {OPENAI_PATH} HTTP/1.1",
        f"Host: {LOOPBACK}:{port}",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"Content-Length: {length}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def status_of(data: bytes) -> int | None:
    """The status code of an HTTP/1.x answer's first bytes, if they are one."""
    found = _STATUS_LINE.match(data)
    return None if found is None else int(found.group(1))


class Memory:
    """A server's memory from now on: its peak (VmHWM, reset here where
    Linux allows) and current RSS, as growth over the RSS at the start."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_reset = reset_peak_rss(pids)
        self.before_kib = status_kib(pids, "VmRSS")

    def peak_growth_mib(self) -> float:
        return (status_kib(self.pids, "VmHWM") - self.before_kib) / 1024

    def growth_mib(self) -> float:
        return (status_kib(self.pids, "VmRSS") - self.before_kib) / 1024


async def hold_until_idle(pids: list[int], max_s: float) -> None:
    """Wait until the processes are idle (IDLE_SAMPLES samples in a row),
    at most max_s."""
    deadline = time.monotonic() + max_s
    previous, idle = cpu_seconds(pids), 0
    while idle < IDLE_SAMPLES and time.monotonic() < deadline:
        await asyncio.sleep(IDLE_SAMPLE_S)
        used = cpu_seconds(pids)
        idle = idle + 1 if used - previous < IDLE_CPU_SHARE * IDLE_SAMPLE_S else 0
        previous = used


async def with_healthz_poll(port: int, work: Awaitable[T]) -> tuple[T, float | None]:
    """`work`'s result, and the slowest /healthz answer (ms) from a client
    asking again and again while it ran: how long the server stalled."""
    url = f"http://{LOOPBACK}:{port}/healthz"
    done = asyncio.Event()
    latencies: list[float] = []

    async def run() -> T:
        try:
            return await work
        finally:
            done.set()

    async def poll() -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not done.is_set():
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                latencies.append((time.perf_counter() - started) * 1e3)
                # A pause, or none once the work is done.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_PAUSE_S):
                        await done.wait()

    result, _ = await asyncio.gather(run(), poll())
    return result, max(latencies, default=None)


async def post_json(
    session: aiohttp.ClientSession, port: int, body: bytes
) -> tuple[int, float]:
    """The status azproxy answered a JSON body with, and the seconds it took."""
    started = time.perf_counter()
    url = f"http://{LOOPBACK}:{port}{OPENAI_PATH}"
    async with session.post(url, data=body, headers=JSON_HEADERS) as response:
        await response.read()
        return response.status, time.perf_counter() - started


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_paused_body(port: int, body: bytes, timeout_s: float) -> Connection:
    """A client that sends a JSON request but the last byte of its body,
    then pauses; its connection, to read the answer from or close. A server
    that answers early and closes, or stops reading for timeout_s, ends the
    sending, not the client."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    view = memoryview(body)[:-1]
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            writer.write(request_head(port, JSON_HEADERS, len(body)))
            for start in range(0, len(view), SEND_SLICE):
                writer.write(view[start : start + SEND_SLICE])
                await writer.drain()
    return reader, writer


async def read_status(reader: asyncio.StreamReader, timeout_s: float) -> int | None:
    """The status of the answer that arrives within timeout_s, if any."""
    try:
        async with asyncio.timeout(timeout_s):
            return status_of(await reader.readline())
    except (TimeoutError, ConnectionError, ValueError):
        return None


@dataclass
class SilentStream:
    """A client that asked for a stream and reads nothing past its head."""

    writer: asyncio.StreamWriter
    status: int | None  # the answer's status, None if none came in time


async def open_silent_stream(
    port: int, event_bytes: int, timeout_s: float
) -> SilentStream:
    """Ask for a stream of `event_bytes` events, read its status line and
    then nothing more."""
    reader, writer = await asyncio.open_connection(
        LOOPBACK, port, limit=SILENT_READER_LIMIT
    )
    body = (
        b'{"model":"' + DEPLOYMENT.encode() + b'","stream":true,'
        b'"messages":[{"role":"user","content":"Say hello"}]}'
    )
    headers = {**JSON_HEADERS, EVENT_HEADER: str(event_bytes)}
    writer.write(request_head(port, headers, len(body)) + body)
    await writer.drain()
    return SilentStream(writer, await read_status(reader, timeout_s))


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    """Drop the clients' connections at once (a reset, as a client that
    goes away leaves them), and wait until their sockets are closed: the
    loop closes them later, and a server stopped before that (the loop
    blocked meanwhile) would wait for their streams."""
    for writer in writers:
        writer.transport.abort()
    await asyncio.gather(
        *(writer.wait_closed() for writer in writers), return_exceptions=True
    )
