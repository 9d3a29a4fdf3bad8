"""Script calls that need an answer, from all the requests of one loop tick,
written to Redis at once and their answers read back in order.

Admission (counters.py) makes one EVALSHA per limited request, and through
redis-py's client each cost about 120 us of CPU here at 50 in flight (a
profile: packing the command, taking and giving back a pooled connection, a
send() per call, a timeout object per read). Here the calls made in the same
loop tick go as one batch: one pooled connection, one write, the replies read
from what one or two recv() brought, and one redis_timeout_ms deadline (the
breaker's) for the whole batch. Callers pack their command themselves
(`command()`), most of it once per key (the script's SHA-1, the key names,
the limits), so only what changes per request is encoded per request.

Redis runs the calls of a batch one after the other, each atomically, in the
order they were made: exactness is the same as one call at a time. A batch
that fails (a timeout, a broken connection, an error reply other than
NOSCRIPT) fails each of its callers with SharedStateDown, and the breaker
counts it once. While Redis is away a batch is only started when the breaker
allows a call (one per back-off): the requests of that tick are its probe.

Single-node Redis only: on a cluster each key may live on another shard, so
counters.py calls one at a time through the cluster client there.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from azproxy.errors import SharedStateDown

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

    from azproxy.fleet.breaker import RedisBreaker
    from azproxy.fleet.connection import Link
    from azproxy.fleet.scripts import Script

__all__ = ["Coalescer", "bulk", "command"]


def bulk(value: bytes) -> bytes:
    """One argument of a command, as RESP sends it."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(count: int, head: bytes, *tail: bytes) -> bytes:
    """A command of `count` arguments: `head` those packed already (bulk()
    each), then the rest."""
    return b"*%d\r\n%b%b" % (count, head, b"".join(map(bulk, tail)))


def evalsha_head(script: Script, keys: Sequence[str], args: Sequence[Any]) -> bytes:
    """The packed start of EVALSHA script KEYS ARGS: the constant part of a
    call, made once per key."""
    parts = [b"EVALSHA", script.sha.encode(), b"%d" % len(keys)]
    parts += [key.encode() for key in keys]
    parts += [repr(a).encode() if isinstance(a, float) else b"%d" % a for a in args]
    return b"".join(map(bulk, parts))


Pending = tuple[bytes, "asyncio.Future[Any]"]


class Coalescer:
    def __init__(self, link: Link, breaker: RedisBreaker, script: Script) -> None:
        self._link = link
        self._breaker = breaker
        self._script = script  # the one script called (loaded on NOSCRIPT)
        self._pending: list[Pending] | None = None  # this tick's batch
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, packed: bytes) -> Any:
        """The reply to one packed call, sent with the others of this tick.
        SharedStateDown if Redis is away or the batch failed."""
        pending = self._pending
        if pending is None:
            if not self._breaker.allowed():
                raise SharedStateDown("Redis is away")
            # The task runs once the callbacks already due this tick have
            # run: the requests they resume join this batch.
            pending = self._pending = []
            task = asyncio.get_running_loop().create_task(self._flush())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending.append((packed, future))
        return await future

    async def _flush(self) -> None:
        pending, self._pending = self._pending or [], None
        try:
            replies = await self._breaker.run(lambda: self._send(pending))
        except BaseException as exc:
            # Whatever ended the batch ends each of its calls: none may hang.
            for _, future in pending:
                if future.done():
                    continue
                if isinstance(exc, SharedStateDown):
                    future.set_exception(SharedStateDown(str(exc)))
                elif isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if isinstance(exc, SharedStateDown):
                return
            raise
        for (_, future), reply in zip(pending, replies, strict=True):
            if not future.done():  # its request may have been cancelled
                future.set_result(reply)

    async def _send(self, pending: list[Pending]) -> list[Any]:
        client = await self._link.ready()
        assert isinstance(client, Redis)  # counters.py: single node only
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            replies = await _exchange(connection, [packed for packed, _ in pending])
            lost = [i for i, reply in enumerate(replies) if _noscript(reply)]
            if lost:
                # A Redis that lost its scripts (restarted, flushed): load it,
                # then send those calls again.
                await connection.send_packed_command(
                    command(
                        3, bulk(b"SCRIPT") + bulk(b"LOAD"), self._script.source.encode()
                    )
                )
                await connection.read_response(timeout=math.inf)
                again = await _exchange(connection, [pending[i][0] for i in lost])
                for i, reply in zip(lost, again, strict=True):
                    replies[i] = reply
        except BaseException:
            # Cut short (the deadline, a broken socket): replies may be left
            # unread on it, so it must not serve another call.
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies


async def _exchange(connection: AbstractConnection, commands: list[bytes]) -> list[Any]:
    """Write the commands at once and read their replies, error replies
    returned rather than raised. No timeout per read: the breaker's deadline
    covers the batch."""
    await connection.send_packed_command(b"".join(commands), check_health=False)
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await connection.read_response(timeout=math.inf))
        except ResponseError as error:
            replies.append(error)
    return replies


def _noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)
