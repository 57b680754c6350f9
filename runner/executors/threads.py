"""Threads for sync targets without a timeout, which nothing would stop: one each while it runs.

Elastic: an idle thread is reused, else one is added, so a job that hangs holds only its own
`max_instances`. Not `concurrent.futures.ThreadPoolExecutor`, because of what it costs on
the hot path: at an instant where 1,000 fires are due, the event loop starts them one after
another, so every fire waits for the hand-over of all those before it. Through
`run_in_executor` a hand-over builds a concurrent Future (with its Condition), a work item,
an asyncio wrapper chained to it, and takes a semaphore; a py-spy profile of `serve` at
1,000 fires/s put half the loop's time there. `start` costs an asyncio future and a queue
put; when no thread is idle, threads are started by a thread of the pool and then by each
other, one after another, never by the caller; the end of a run is one
`call_soon_threadsafe`. `submit` keeps the `Executor` interface for callers that want a
concurrent future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

MAX_THREADS = 4096
"""Only a bound against runaway: what bounds a job is its `max_instances`. Past it, calls
wait for a free thread."""

P = ParamSpec("P")
R = TypeVar("R")

_Future = asyncio.Future[Any] | concurrent.futures.Future[Any]
_Item = tuple[Callable[[], Any], asyncio.AbstractEventLoop | None, _Future]


class ThreadPool(concurrent.futures.Executor):
    def __init__(self, name: str = "runner-job") -> None:
        self._name = name
        self._work: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        """Threads waiting for a call that no queued call is meant for."""
        self._owed = 0
        """Queued calls that no thread is meant for yet."""
        self._spawning = False
        self._spawn_requests: queue.SimpleQueue[bool | None] | None = None
        self._busy = 0
        self._closed = False
        self._ended = threading.Condition(self._lock)

    def start(self, loop: asyncio.AbstractEventLoop, call: Callable[[], R]) -> asyncio.Future[R]:
        """Run `call` in a thread; its result or exception settles the returned future on
        `loop` (call from that loop's thread). Cancelling the future does not stop the call."""
        future: asyncio.Future[R] = loop.create_future()
        self._put((call, loop, future))
        return future

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._put((functools.partial(fn, *args, **kwargs), None, future))
        return future

    @property
    def busy(self) -> int:
        """Calls executing now."""
        with self._lock:
            return self._busy

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; idle threads end, busy ones when their call returns (`wait`: wait for
        that). With `cancel_futures`, calls not yet started are cancelled (never run)."""
        with self._lock:
            self._closed = True
            threads = self._threads
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    _cancel(item)
        for _ in range(threads):
            self._work.put(None)
        if self._spawn_requests is not None:
            self._spawn_requests.put(None)
        if wait:
            with self._ended:
                self._ended.wait_for(lambda: self._threads == 0)

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot start a run after shutdown")
            if self._idle:
                self._idle -= 1  # an idle thread will take it
            else:
                self._owed += 1
            spawn = self._spawn_needed()
        self._work.put(item)
        if spawn:
            # Not `_spawn` here: `Thread.start` waits until the new thread runs, which on a
            # busy machine is tens of milliseconds the event loop would spend waiting.
            self._spawner().put(True)

    def _spawner(self) -> queue.SimpleQueue[bool | None]:
        """The queue of the thread that starts threads for callers, started on first use."""
        with self._lock:
            if self._spawn_requests is None:
                self._spawn_requests = queue.SimpleQueue()
                threading.Thread(
                    target=self._serve_spawns,
                    args=(self._spawn_requests,),
                    name=f"{self._name}-spawner",
                    daemon=True,
                ).start()
            return self._spawn_requests

    def _serve_spawns(self, requests: queue.SimpleQueue[bool | None]) -> None:
        while requests.get():
            self._spawn()

    def _spawn_needed(self) -> bool:
        """Under the lock: whether to start a thread now. One start at a time: the spawner
        starts the first, and each new thread the next while calls are still owed one."""
        if self._owed and not (self._spawning or self._closed) and self._threads < MAX_THREADS:
            self._spawning = True
            self._threads += 1
            return True
        return False

    def _spawn(self) -> None:
        threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def _serve(self) -> None:
        with self._lock:
            self._spawning = False
            self._take_owed_or_idle()
            spawn = self._spawn_needed()
        if spawn:
            self._spawn()
        while True:
            item = self._work.get()
            if item is None:  # shutdown, after the calls queued before it
                break
            self._run(item)
            with self._lock:
                self._take_owed_or_idle()
        with self._lock:
            self._threads -= 1
            self._ended.notify_all()

    def _take_owed_or_idle(self) -> None:
        """Under the lock: a free thread takes a call that waits for one, else it is idle."""
        if self._owed:
            self._owed -= 1
        else:
            self._idle += 1

    def _run(self, item: _Item) -> None:
        call, loop, future = item
        if loop is None and not future.set_running_or_notify_cancel():  # type: ignore[union-attr]
            return  # cancelled before it started
        with self._lock:
            self._busy += 1
        try:
            result: Any = call()
            error: BaseException | None = None
        except BaseException as exc:  # settles the caller's future; the thread goes on
            result, error = None, exc
        with self._lock:
            self._busy -= 1
        _settle(loop, future, result, error)


def _settle(
    loop: asyncio.AbstractEventLoop | None,
    future: _Future,
    result: Any,
    error: BaseException | None,
) -> None:
    if loop is None:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
        return
    assert isinstance(future, asyncio.Future)
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for it any more
        loop.call_soon_threadsafe(_settle_on_loop, future, result, error)


def _settle_on_loop(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _cancel(item: _Item) -> None:
    _, loop, future = item
    if loop is None:
        future.cancel()
        return
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(future.cancel)
