"""Built-in job targets, so the demo and common housekeeping need no user code.

They are always allowed, so they must never be a way around the allowlist: they write only
inside the folder the operator named in `RUNNER_TASK_DIR`, never a line the author shaped,
and touch only the database the runner itself uses.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runner.durations import format_duration, parse_duration

log = logging.getLogger("runner.tasks")

ENV_TASK_DIR = "RUNNER_TASK_DIR"
MAX_MESSAGE = 200
MIN_KEEP = 86400
"""`prune_history` keeps at least a day, so a typo (`older_than: 1`) cannot wipe the history."""


def _message(text: str) -> str:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        raise ValueError(f"message must be a string of at most {MAX_MESSAGE} characters")
    if not text.isprintable():
        raise ValueError("message must be one line of printable characters")
    return text


def task_file(name: str, environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    """`name` inside the operator's task folder; anything that would leave it is refused."""
    folder = environ.get(ENV_TASK_DIR)
    if not folder:
        raise PermissionError(
            f"path {name!r} refused: built-in tasks write only inside {ENV_TASK_DIR}, "
            "which is not set"
        )
    base = Path(folder).resolve()
    if not name or Path(name).is_absolute() or not name.isprintable():
        raise PermissionError(f"path {name!r} refused: give a file name inside {ENV_TASK_DIR}")
    target = (base / name).resolve()
    if target.parent != base and base not in target.parents:
        raise PermissionError(f"path {name!r} refused: it leaves {ENV_TASK_DIR} ({base})")
    return target


def heartbeat(message: str = "alive", path: str | None = None) -> str:
    """Logs a line, and appends one to `path` when given, so monitors can alert on staleness.

    `path` is a file name inside `RUNNER_TASK_DIR`; the line is the time and the message.
    """
    text = _message(message)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    if path:
        target = task_file(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {text}\n")
    log.info("heartbeat: %s", text)
    return f"{stamp} {text}"


def sleep(seconds: float = 1.0) -> None:
    """Waits; useful to try timeouts, overlap and graceful shutdown."""
    time.sleep(seconds)


def fail(message: str = "failed on purpose") -> None:
    """Raises; useful to try retries and alerting."""
    raise RuntimeError(message)


def prune_history(older_than: str | int = "30d") -> int:
    """Deletes run history older than `older_than` (at least 1d) from the runner's database."""
    from runner.history import prune
    from runner.store.engine import connect, database_in_use

    keep = parse_duration(older_than)
    if keep < MIN_KEEP:
        raise ValueError(f"older_than {format_duration(keep)} is below the minimum of 1d")
    cutoff = datetime.now(UTC) - timedelta(seconds=keep)
    engine = connect(database_in_use())
    try:
        removed = prune(engine, cutoff)
    finally:
        engine.dispose()
    log.info("pruned %d run(s) older than %s", removed, cutoff.isoformat(timespec="seconds"))
    return removed
