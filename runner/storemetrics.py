"""Metrics read from the store when Prometheus scrapes: what every node can tell, leader or not.

Per job, when it last succeeded and last failed; with workers, how many fires wait in each
procrastinate queue and how many attempts each live worker runs. Counters in `metrics.py`
count what this process saw; these come from the shared database, so every replica shows the
same values, and a replica that just took over knows the whole story.

A scrape must stay cheap with 100,000 jobs and months of history, so the last-outcome times
are kept in memory and brought up to date incrementally: the first refresh reads the history
once (one grouped query); each later one reads only the rows added since the refresh before
last (PostgreSQL allocates `run_id` at insert, so a row may commit after a higher one: one
refresh of overlap) and the attempts that were still queued or running then. A refresh costs
what happened since the previous one, not the size of the history. Refreshes are at most one
per `MAX_AGE` seconds; scrapes in between get the cached values. The stored job ids are read
every `FORGET_EVERY` seconds to drop the series of deleted jobs, so memory and series stay
bounded by the jobs stored: two series per job that has finished an attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from runner.history import as_utc
from runner.store import tables
from runner.store.engine import READ_ONLY

log = logging.getLogger("runner.metrics")

MAX_AGE = 5.0
"""Seconds a refresh stays good; Prometheus scrapes every 15 s or more by default."""
FORGET_EVERY = 300.0
"""Seconds between re-reads of the stored job ids, to drop the series of deleted jobs."""
FIRST_OVERLAP = 1000
"""Run ids below the first refresh's highest that the next one reads again, for rows that
commit after a higher one (PostgreSQL allocates ids at insert, not at commit)."""
CHUNK = 900
"""Run ids per `IN (...)` when re-reading open attempts (below SQLite's variable limit)."""

SUCCESS = ("succeeded",)
FAILURE = ("failed", "timed_out", "interrupted")
OPEN = ("queued", "running")
WORKER_SUFFIX = ":worker"
WORKER_STALE = timedelta(seconds=5.0)
"""As `leadership.NODE_STALE_SECONDS`: a worker silent longer is not counted as live."""


@dataclass(slots=True)
class Snapshot:
    """What one refresh found; the collector turns it into samples."""

    last_success: dict[str, float] = field(default_factory=dict)
    last_failure: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)
    worker_running: dict[str, int] = field(default_factory=dict)
    workers: bool = False


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else as_utc(moment).timestamp()


class StoreMetrics:
    """The incremental reader; one per serving node (`watch` installs it)."""

    def __init__(self, engine: Engine, workers: bool, clock: Any = time.monotonic) -> None:
        self.engine = engine
        self.workers = workers
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = Snapshot(workers=workers)
        self._refreshed: float | None = None
        self._forgot: float | None = None
        self._high: int | None = None
        """Highest run id read as of the refresh before last: later rows are read again."""
        self._next_high: int | None = None
        self._open: set[int] = set()
        self.refreshes = 0
        self.rows_read = 0
        """Rows read from `runner_runs` so far (for tests and the benchmark)."""

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """(metric name, labels, value) of every sample, refreshed if older than `MAX_AGE`;
        the last good values if the database is away (logged), so a scrape never fails."""
        with self._lock:
            now = self._clock()
            if self._refreshed is None or now - self._refreshed >= MAX_AGE:
                try:
                    self._refresh(now)
                    self._refreshed = now
                except SQLAlchemyError as exc:
                    log.warning("metrics: cannot read the store: %s", str(exc).splitlines()[0])
            return list(samples(self._snapshot))

    # --- refresh --------------------------------------------------------------------------
    def _refresh(self, now: float) -> None:
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            if self._high is None:
                self._first_read(conn)
            else:
                self._read_since(conn)
            if self._forgot is None or now - self._forgot >= FORGET_EVERY:
                self._forget_deleted(conn)
                self._forgot = now
            if self.workers:
                self._snapshot.queue_depth = _queue_depth(conn)
                self._snapshot.worker_running = _worker_running(conn)
        self.refreshes += 1

    def _first_read(self, conn: Any) -> None:
        runs = tables.runner_runs
        # The high mark first: a row that opens after it is read by the next refresh, one
        # that closes after it is read by the grouped query below.
        high = conn.execute(select(func.max(runs.c.run_id))).scalar() or 0
        self._open = set(
            conn.execute(
                select(runs.c.run_id).where(runs.c.status.in_(OPEN), runs.c.run_id <= high)
            ).scalars()
        )
        grouped = (
            select(runs.c.job_id, runs.c.status, func.max(runs.c.finished_at))
            .where(runs.c.status.in_(SUCCESS + FAILURE), runs.c.run_id <= high)
            .group_by(runs.c.job_id, runs.c.status)
        )
        for job_id, status, finished in conn.execute(grouped):
            self._note(job_id, status, finished)
            self.rows_read += 1
        self._high, self._next_high = max(0, high - FIRST_OVERLAP), high

    def _read_since(self, conn: Any) -> None:
        runs = tables.runner_runs
        columns = (runs.c.run_id, runs.c.job_id, runs.c.status, runs.c.finished_at)
        assert self._high is not None and self._next_high is not None
        rows = list(conn.execute(select(*columns).where(runs.c.run_id > self._high)))
        recent = {row[0] for row in rows}
        reopen = sorted(self._open - recent)
        for start in range(0, len(reopen), CHUNK):
            chunk = reopen[start : start + CHUNK]
            rows.extend(conn.execute(select(*columns).where(runs.c.run_id.in_(chunk))))
        still_open: set[int] = set()
        highest = self._next_high
        for run_id, job_id, status, finished in rows:
            self.rows_read += 1
            highest = max(highest, run_id)
            if status in OPEN:
                still_open.add(run_id)
            else:
                self._note(job_id, status, finished)
        # Rows above the previous mark are read once more next time (a row may commit
        # after a higher one that was already visible).
        self._high, self._next_high = self._next_high, highest
        self._open = still_open

    def _note(self, job_id: str, status: str, finished: datetime | None) -> None:
        stamp = _ts(finished)
        if stamp is None:
            return
        into = (
            self._snapshot.last_success
            if status in SUCCESS
            else self._snapshot.last_failure
            if status in FAILURE
            else None
        )
        if into is not None and stamp > into.get(job_id, 0.0):
            into[job_id] = stamp

    def _forget_deleted(self, conn: Any) -> None:
        stored = set(conn.execute(select(tables.runner_jobs.c.id)).scalars())
        for values in (self._snapshot.last_success, self._snapshot.last_failure):
            for job_id in [j for j in values if j not in stored]:
                del values[job_id]


_QUEUE_DEPTH = """
SELECT queue_name, count(*) FROM procrastinate_jobs
WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
GROUP BY queue_name
"""


def _queue_depth(conn: Any) -> dict[str, int]:
    """Fires handed over and due, that no worker has taken yet, per queue."""
    present = conn.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar()
    if present is None:
        return {}
    return {str(q): int(n) for q, n in conn.exec_driver_sql(_QUEUE_DEPTH)}


def _worker_running(conn: Any) -> dict[str, int]:
    """Every live worker (heartbeat within the stale limit), with its running attempts."""
    nodes, runs = tables.runner_nodes, tables.runner_runs
    cutoff = datetime.now(UTC) - WORKER_STALE
    live = conn.execute(
        select(nodes.c.node).where(
            nodes.c.node.like(f"%{WORKER_SUFFIX}"),
            nodes.c.stopped_at.is_(None),
            nodes.c.heartbeat_at > cutoff,
        )
    ).scalars()
    counts = {str(node): 0 for node in live}
    running = (
        select(runs.c.node, func.count())
        .where(runs.c.status == "running", runs.c.node.like(f"%{WORKER_SUFFIX}"))
        .group_by(runs.c.node)
    )
    for node, count in conn.execute(running):
        if node in counts:
            counts[node] = int(count)
    return counts


def samples(snapshot: Snapshot) -> Iterator[tuple[str, dict[str, str], float]]:
    """(metric name, labels, value) for every sample of a snapshot."""
    yield from _each("runner_job_last_success_timestamp_seconds", "job_id", snapshot.last_success)
    yield from _each("runner_job_last_failure_timestamp_seconds", "job_id", snapshot.last_failure)
    if snapshot.workers:
        yield from _each("runner_queue_depth", "queue", snapshot.queue_depth)
        yield from _each("runner_worker_attempts_running", "worker", snapshot.worker_running)


def _each(
    name: str, label: str, values: dict[str, float] | dict[str, int]
) -> Iterable[tuple[str, dict[str, str], float]]:
    for key, value in values.items():
        yield name, {label: key}, float(value)
