"""Built-in job targets, so the demo and common housekeeping need no user code."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

from runner.durations import parse_duration

log = logging.getLogger("runner.tasks")


def heartbeat(message: str = "alive", path: str | None = None) -> str:
    """Logs a line, and touches `path` when given, so external monitors can alert on staleness."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    log.info("heartbeat: %s", message)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")
    return f"{stamp} {message}"


def sleep(seconds: float = 1.0) -> None:
    """Waits; useful to try timeouts, overlap and graceful shutdown."""
    time.sleep(seconds)


def fail(message: str = "failed on purpose") -> None:
    """Raises; useful to try retries and alerting."""
    raise RuntimeError(message)


def prune_history(older_than: str | int = "30d", database_url: str | None = None) -> int:
    """Deletes run history older than `older_than`; returns the number of rows removed."""
    from runner.history import prune
    from runner.store.engine import connect, database_url_from_env

    cutoff = datetime.now(UTC) - timedelta(seconds=parse_duration(older_than))
    url = database_url or database_url_from_env(os.environ)
    engine = connect(url)
    try:
        removed = prune(engine, cutoff)
    finally:
        engine.dispose()
    log.info("pruned %d run(s) older than %s", removed, cutoff.isoformat(timespec="seconds"))
    return removed
