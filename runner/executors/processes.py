"""Sync targets with a timeout in warm child processes, so the timeout really ends the call.

Python cannot stop a thread, so a sync target past its timeout would keep its thread (and
its share of a pool) forever. Here the call runs in a child process; at its timeout, or
when its run is cancelled, the child's process group is killed (SIGKILL) and the child is
not reused.

Capacity: the pool is elastic. It takes an idle child, or starts one, for every call, so
the number of children is the number of sync calls running at once, which the scheduler
bounds per job by `max_instances`. A job that hangs holds at most `max_instances` children,
until its timeout kills them, and never one that another job needs: there is no shared
ceiling for it to fill. `warm` children are kept ready so a call rarely waits for a start;
children idle longer than `linger` beyond those exit, and each is replaced after `max_tasks`
calls so a leaking target cannot grow one process without end.

A child is a fresh interpreter (`python -P -c ...`, started off the event loop), not a fork
of the runner, whose threads and connections it must not inherit, and it never re-imports
the runner's main module as multiprocessing would. It gets the runner's `sys.path`,
resolves its target by name itself (once, then it stays imported) and runs with the
caller's environment, so it sees what a thread would. It exits when the runner does, even
mid-call (it watches a pipe only the runner holds open).

pebble's ProcessPool also kills at a timeout, but has a fixed size that as many hung jobs
fill, forks from the runner (or re-imports its main module), and completes futures from
its own threads; this pool is small and lives on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import runner
from runner import targets
from runner.executors.base import TargetRaised

log = logging.getLogger("runner.executors.processes")

_ALL: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


BOOT_TIMEOUT = 60.0
MAX_SUSPECTS = 10_000
SUSPECT_NICE = 10
"""A job whose last call was killed gets its next in a new process this much nicer (used
once), so that its restarts and its work yield the CPU to well-behaved jobs."""
_BOOT = "from runner.executors.child import main; main()"
_HOME = os.path.dirname(os.path.dirname(os.path.abspath(runner.__file__)))


def _boot_environ() -> dict[str, str]:
    """The child finds the runner where this process did; `-P` keeps the working directory
    off its path, and the parent's `sys.path` is sent to it before any target is imported."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_HOME, env.get("PYTHONPATH")) if p)
    return env


_HELPERS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="runner-sync-start")
"""Starts and reaps children off the event loop (both block for a moment)."""


def _discard(started: concurrent.futures.Future[_Child]) -> None:
    if started.exception() is None:
        child = started.result()
        child.kill()
        child.reap()


class ChildDied(TargetRaised):
    """The process running the target ended during the call (os._exit, a crash, OOM killer)."""


class _Child:
    def __init__(self, process: subprocess.Popen[bytes], conn: Connection, alive_fd: int) -> None:
        self.process = process
        self.conn = conn
        self.alive_fd = alive_fd
        self.calls = 0
        self.environ: dict[str, str] | None = None
        self.idle_since = time.monotonic()
        self.disposable = False
        """Started for a suspect job at a lower priority: used once."""

    def send(self, task: tuple[Any, ...]) -> None:
        self.conn.send(task)

    async def receive(self) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        fd = self.conn.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            if future.done():
                return
            try:
                future.set_result(self.conn.recv())
            except (EOFError, OSError):
                future.set_exception(ChildDied(self._death(), None))

        loop.add_reader(fd, readable)
        try:
            return await future
        finally:
            loop.remove_reader(fd)

    def _death(self) -> str:
        # On the loop: its socket is closed, so it is gone or nearly; do not wait long.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(0.2)
        code = self.process.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"the process running the target was killed by {signal.Signals(-code).name}"
        return f"the process running the target exited (exit code {code})"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to its process group: what the target started itself ends with it."""
        if self.process.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.conn.close()
        with contextlib.suppress(OSError):
            os.close(self.alive_fd)

    def reap(self) -> None:
        """Blocking: wait for a killed child (it takes a moment)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)


class ProcessPool:
    """Implements `SyncCalls`. Used from one event loop; `close` from any thread."""

    def __init__(self, warm: int = 2, linger: float = 300.0, max_tasks: int = 1000) -> None:
        self.warm = warm
        self.linger = linger
        self.max_tasks = max_tasks
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._warming: set[asyncio.Task[None]] = set()
        """Children being started to wait idle (not those a call starts for itself)."""
        self._booting: set[_Child] = set()
        """Started, not yet ready: `close` must find them too."""
        self._suspects: dict[str, None] = {}
        """Callers whose last call was killed, oldest first."""
        self._closed = False
        self._cull_handle: asyncio.TimerHandle | None = None
        self._cull_loop: asyncio.AbstractEventLoop | None = None
        _ALL.add(self)

    @property
    def busy(self) -> int:
        """Sync calls running now."""
        return len(self._busy)

    @property
    def size(self) -> int:
        return len(self._idle) + len(self._busy)

    def pids(self) -> list[int]:
        return [c.process.pid for c in [*self._idle, *self._busy]]

    # --- starting children -------------------------------------------------------------
    def _start_blocking(self, nice: int = 0) -> _Child:
        parent_end, child_end = socket.socketpair()
        alive_r, alive_w = os.pipe()
        fds = (child_end.fileno(), alive_r)
        try:
            process = subprocess.Popen(
                [sys.executable, "-P", "-c", _BOOT, *map(str, (*fds, nice))],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as one
                env=_boot_environ(),
            )
        except BaseException:
            parent_end.close()
            os.close(alive_w)
            raise
        finally:
            child_end.close()
            os.close(alive_r)
        child = _Child(process, Connection(parent_end.detach()), alive_w)
        child.disposable = nice > 0
        try:
            child.send(tuple(sys.path))
        except OSError:
            child.kill()
            child.reap()
            raise
        return child

    async def _start(self, nice: int = 0) -> _Child:
        """A child that has booted: its start never counts against a call's timeout. Only
        the fork and exec use a helper thread; children boot in parallel."""
        started = _HELPERS.submit(self._start_blocking, nice)
        try:
            child = await asyncio.wrap_future(started)
        except asyncio.CancelledError:
            started.add_done_callback(_discard)  # in the helper thread, loop or no loop
            raise
        if self._closed:
            self._retire(child)
            raise RuntimeError("the process pool is closed")
        self._booting.add(child)
        try:
            async with asyncio.timeout(BOOT_TIMEOUT):
                ready = await child.receive()
            if ready != ("ready",):
                raise ChildDied(f"unexpected first message {ready!r}", None)
        except BaseException as exc:
            self._booting.discard(child)
            self._retire(child)
            if isinstance(exc, Exception):
                raise RuntimeError(f"a process for sync targets did not start: {exc}") from None
            raise
        self._booting.discard(child)
        if self._closed:
            self._retire(child)
            raise RuntimeError("the process pool is closed")
        return child

    def prewarm(self) -> None:
        """On the loop: start children until `warm` are idle or being started to be.

        Counted by the warming tasks, which exist from the moment they are made: calls that
        each take a child in one burst must not each start `warm` more (10 calls at once
        left 19 children), and a child a call starts for itself goes to that call."""
        if self._closed:
            return
        for _ in range(self.warm - len(self._idle) - len(self._warming)):
            task = asyncio.get_running_loop().create_task(self._add_idle())
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)

    async def shutdown(self) -> None:
        """On the loop, before it stops: stop warming up, then kill every child."""
        self._closed = True
        for task in list(self._warming):
            task.cancel()
        if self._warming:
            await asyncio.wait(list(self._warming), timeout=5)
        self.close()

    async def _add_idle(self) -> None:
        try:
            child = await self._start()
        except Exception as exc:
            if not self._closed:
                log.warning("could not start a process for sync targets: %r", exc)
            return
        if self._closed:
            self._retire(child)
        else:
            self._idle.append(child)

    async def _take(self, fresh: bool = False) -> _Child:
        while self._idle and not fresh:
            child = self._idle.pop()
            if child.alive():
                break
            self._retire(child)
        else:
            child = await self._start(SUSPECT_NICE if fresh else 0)
        self._busy.add(child)
        if not self._closed:
            self.prewarm()
        return child

    def _give_back(self, child: _Child) -> None:
        self._busy.discard(child)
        if self._closed or child.disposable or child.calls >= self.max_tasks:
            self._retire(child)
            return
        child.idle_since = time.monotonic()
        self._idle.append(child)
        loop = asyncio.get_running_loop()
        if len(self._idle) > self.warm and (
            self._cull_handle is None or self._cull_loop is not loop
        ):
            self._cull_loop = loop
            self._cull_handle = loop.call_later(self.linger, self._cull)

    def _cull(self) -> None:
        self._cull_handle = None
        cutoff = time.monotonic() - self.linger
        keep = [c for c in self._idle if c.idle_since > cutoff]
        old = sorted((c for c in self._idle if c.idle_since <= cutoff), key=lambda c: c.idle_since)
        # The most recently used stay, up to `warm`; the rest have lingered long enough.
        spare = max(0, self.warm - len(keep))
        keep.extend(old[len(old) - spare :] if spare else [])
        for c in old[: len(old) - spare]:
            self._retire(c)
        self._idle = keep
        if len(self._idle) > self.warm:
            self._cull_handle = asyncio.get_running_loop().call_later(self.linger, self._cull)

    def _retire(self, child: _Child) -> None:
        self._busy.discard(child)
        child.kill()
        _HELPERS.submit(child.reap)

    # --- calls -------------------------------------------------------------------------
    async def call(
        self,
        target: str,
        prefixes: tuple[str, ...],
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
        environ: Mapping[str, str],
        key: str | None = None,
    ) -> None:
        """`key` names the caller (the job): a job whose last call had to be killed starts
        its next one in a new, lower-priority process of its own, so its hangs never use up
        the warm children nor the CPU that others need."""
        if self._closed:
            raise RuntimeError("the process pool is closed")
        child = await self._take(fresh=key is not None and key in self._suspects)
        wanted = dict(environ)
        sent_environ = None if child.environ == wanted else wanted
        reply: tuple[Any, ...] | None = None
        try:
            child.send((target, prefixes, args, kwargs, sent_environ))
            # Importing the target (once per child) and running it each get the timeout.
            async with asyncio.timeout(timeout):
                reply = await child.receive()
            if reply[0] == "started":
                reply = None
                async with asyncio.timeout(timeout):
                    reply = await child.receive()
        finally:
            if reply is None:  # timed out, cancelled, or the child died: it must not go on
                self._retire(child)
                if key is not None:
                    self._suspects[key] = None
                    while len(self._suspects) > MAX_SUSPECTS:
                        del self._suspects[next(iter(self._suspects))]
            else:
                if key is not None:
                    self._suspects.pop(key, None)
                child.environ = wanted
                child.calls += 1
                self._give_back(child)
        kind = reply[0]
        if kind == "target_error":
            raise targets.TargetError(reply[1])
        if kind == "raised":
            raise TargetRaised(reply[1], reply[2])

    def close(self) -> None:
        """Kill every child now (their calls are over or abandoned)."""
        self._closed = True
        children = [*self._idle, *self._busy, *self._booting]
        self._idle, self._busy, self._booting = [], set(), set()
        if self._cull_handle is not None:
            self._cull_handle.cancel()
            self._cull_handle = None
        for c in children:
            c.kill()
        for c in children:
            c.reap()


@atexit.register
def _close_all() -> None:
    # Children ignore SIGTERM (the runner decides when a call ends); do not leave them idle.
    for pool in list(_ALL):
        pool.close()
