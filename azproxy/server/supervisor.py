"""Forked worker processes, supervised: started, replaced, stopped together.

The parent forks one worker per slot (a slot is the sockets that worker
serves), before it has started any event loop or thread, and then only
watches: signals and exits arrive through a wakeup pipe, a worker reports
that it serves through another.

- `announce` runs once, when every worker serves.
- SIGTERM or SIGINT to the parent: it sends SIGTERM to each worker and closes
  its own copies of the sockets; each worker drains exactly as a single
  process does (lifecycle.drain, shutdown_grace_s). Workers ignore SIGINT, so
  Ctrl-C in a terminal, which signals the whole process group, is one
  graceful stop. A worker holds SIGTERM back until it can drain; workers
  still running `stop_timeout_s` after it are killed, and the exit is 1.
- A worker that dies after it was ready is replaced on the same socket. One
  that dies before it is ready (at start, or as a replacement) stops azproxy:
  the others drain and the parent exits 1, so a broken setup cannot restart
  in a loop.
- The parent reaps every child (no zombies), and on Linux a worker gets
  SIGTERM when the parent dies (PR_SET_PDEATHSIG), so it drains and exits
  rather than living on as an orphan that holds the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

__all__ = ["Sockets", "Supervisor", "Work"]

log = logging.getLogger("azproxy")

Sockets = list[socket.socket]
# work(slot, its sockets, ready): serve until SIGTERM; call ready() once serving.
Work = Callable[[int, Sockets, Callable[[], None]], None]

SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
PR_SET_PDEATHSIG = 1
READY = struct.Struct("!I")  # a worker's slot, written when it serves


def _wake(signum: int, frame: FrameType | None) -> None:
    """The handler behind the wakeup fd: the main loop does the work."""


class Supervisor:
    """Forks one worker per slot, replaces those that die, stops them all."""

    def __init__(
        self, slots: Sequence[Sockets], work: Work, stop_timeout_s: float
    ) -> None:
        self.slots = list(slots)
        self.work = work
        self.stop_timeout_s = stop_timeout_s
        self.workers: dict[int, int] = {}  # pid -> slot
        self.ready: set[int] = set()  # slots whose worker serves
        self.stopping = False
        self.failed = False
        self.deadline = 0.0
        self.wake_r, self.wake_w = os.pipe()
        self.ready_r, self.ready_w = os.pipe()
        for fd in (self.wake_r, self.wake_w, self.ready_r):
            os.set_blocking(fd, False)
        self.pending = b""

    def run(self, announce: Callable[[], None]) -> int:
        """Supervise until every worker has exited; 0 after a clean stop."""
        previous = {sig: signal.signal(sig, _wake) for sig in SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            for slot in range(len(self.slots)):
                self.spawn(slot)
            announced = False
            while self.workers:
                timeout = None
                if self.stopping:
                    timeout = self.deadline - time.monotonic()
                    if timeout <= 0:
                        self.kill_all()
                        break
                select.select([self.wake_r, self.ready_r], [], [], timeout)
                self.read_ready(announced)
                if not (announced or self.stopping) and len(self.ready) == len(
                    self.slots
                ):
                    announced = True
                    announce()
                with contextlib.suppress(BlockingIOError):
                    if {signal.SIGTERM, signal.SIGINT} & set(os.read(self.wake_r, 64)):
                        self.stop()
                self.reap()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close_sockets()
            for fd in (self.wake_r, self.wake_w, self.ready_r, self.ready_w):
                os.close(fd)
        return 1 if self.failed else 0

    def spawn(self, slot: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the worker would write the parent's buffer again
        # Blocked across fork: the worker handles SIGTERM only once it can drain.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            log.error("cannot start worker %d: %s", slot, exc)
            self.failed = True
            self.stop()
            return
        if pid == 0:
            self.become_worker(slot)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.workers[pid] = slot
        log.debug("worker %d started (pid %d)", slot, pid)

    def become_worker(self, slot: int) -> NoReturn:
        code = 1
        try:
            parent = os.getppid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (self.wake_r, self.wake_w, self.ready_r):
                os.close(fd)
            own = self.slots[slot]
            for sockets in self.slots:
                for sock in sockets:
                    if sock not in own:
                        sock.close()
            die_with_parent(parent)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGCHLD})
            ready_w = self.ready_w

            def ready() -> None:
                with contextlib.suppress(OSError):  # the parent is gone
                    os.write(ready_w, READY.pack(slot))

            self.work(slot, own, ready)
            code = 0
        except SystemExit as exc:
            code = (
                0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
            )
        except BaseException:
            log.exception("worker %d failed", slot)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)  # never back into the parent's code

    def read_ready(self, announced: bool) -> None:
        with contextlib.suppress(BlockingIOError):
            self.pending += os.read(self.ready_r, 4096)
        while len(self.pending) >= READY.size:
            (slot,) = READY.unpack_from(self.pending)
            self.pending = self.pending[READY.size :]
            self.ready.add(slot)
            if announced:
                log.info("worker %d serves again", slot)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue  # an orphan the parent adopted as a container's PID 1
            was_ready = slot in self.ready
            self.ready.discard(slot)
            self.ended(slot, pid, os.waitstatus_to_exitcode(status), was_ready)

    def ended(self, slot: int, pid: int, code: int, was_ready: bool) -> None:
        how = exit_text(code)
        if self.stopping:
            if code:
                self.failed = True
                log.warning("worker %d (pid %d) %s while stopping", slot, pid, how)
            return
        if not was_ready:
            log.error(
                "worker %d (pid %d) %s before it was ready: stopping azproxy",
                slot,
                pid,
                how,
            )
            self.failed = True
            self.stop()
            return
        log.warning("worker %d (pid %d) %s; starting a new one", slot, pid, how)
        self.spawn(slot)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.deadline = time.monotonic() + self.stop_timeout_s
        log.info("stopping %d worker(s)", len(self.workers))
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # The workers hold their own copies: the port closes when they stop.
        self.close_sockets()

    def kill_all(self) -> None:
        log.warning(
            "%d worker(s) still running %g s after SIGTERM: killing them",
            len(self.workers),
            self.stop_timeout_s,
        )
        self.failed = True
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.workers.clear()

    def close_sockets(self) -> None:
        for sockets in self.slots:
            for sock in sockets:
                sock.close()


def die_with_parent(parent: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when the parent dies."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl: stop as if signalled
        os.kill(os.getpid(), signal.SIGTERM)


def exit_text(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
