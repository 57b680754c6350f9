"""The loop of one warm child process: run sync targets one at a time, report each outcome.

The child resolves the target by name with the same allowlist as its parent, so nothing but
JSON values and text crosses the socket. Whatever a target raises (SystemExit, a custom
BaseException) is reported as text; a target that kills its process is seen by the parent
as a dead child. SIGINT and SIGTERM are ignored: the parent decides when a call stops (at
its timeout, or when its runs are cancelled after the shutdown grace) and then kills it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from runner import targets

MAX_TEXT = 64 * 1024
"""Error and traceback text sent back is cut to this many characters (the tail is kept)."""


def _die_with_parent(alive_fd: int) -> None:
    """A hung call must not outlive the runner: its end of this pipe closes when it exits."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            os.read(alive_fd, 1)
        os._exit(0)

    threading.Thread(target=watch, name="runner-parent-watch", daemon=True).start()


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else "..." + text[-MAX_TEXT:]


def _run(conn: Connection, task: tuple[Any, ...]) -> tuple[Any, ...]:
    target, prefixes, args, kwargs, environ = task
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    try:
        func = targets.resolve(target, prefixes)
    except targets.TargetError as exc:
        return ("target_error", str(exc))
    conn.send(("started",))  # the import is done: the call's own time starts now
    try:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            import asyncio  # only then: it takes most of a child's start-up

            async def wait() -> None:
                await result

            asyncio.run(wait())
    except BaseException as exc:  # the child's own exit is decided by the parent
        return ("raised", _cut(_describe(exc)), _cut(traceback.format_exc()))
    return ("ok",)


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # a __str__ that raises
        return f"{type(exc).__name__}: <unprintable>"


def main() -> None:
    """Entry point of `python -P -c`: argv: the socket to the runner, the alive pipe, a niceness."""
    if int(sys.argv[3]):
        os.nice(int(sys.argv[3]))
    conn = Connection(int(sys.argv[1]))
    _die_with_parent(int(sys.argv[2]))
    sys.path[:] = list(conn.recv())
    conn.send(("ready",))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_run(conn, task))
