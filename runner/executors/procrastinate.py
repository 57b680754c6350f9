"""The procrastinate executor: the leader runs nothing, it hands each attempt to workers.

The scheduler still decides every fire (triggers, misfire grace, coalescing,
`max_instances`, retries). A fire it will run is claimed as usual, by inserting its attempt
row into `runner_runs` under the unique key (job, scheduled time, attempt), but `queued`,
and in the same transaction deferred to procrastinate through procrastinate's own SQL defer
function, with the key as the job's queueing lock. The claim and the deferral commit or
vanish together: a leader killed before the commit leaves neither, one killed after leaves
both, and a second leader's claim of the same attempt inserts nothing, so defers nothing.

Each pass the leader also sweeps what only it decides:

- attempts `running` on a worker whose heartbeat stopped are closed `interrupted`;
- fires still `queued` past their misfire grace are recorded `missed` (a worker that picks
  one up later sees it is no longer `queued` and does not start it);
- a failed, timed-out or interrupted attempt of a worker whose job has attempts left gets its
  next attempt claimed and deferred once its retry delay has passed, unless the worker
  recorded it as permanent (target not allowed or not importable, a variable unset), which
  no retry can fix: its error then starts with `PERMANENT`;
- `max_instances` counts the job's `queued` and `running` rows, across all workers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from runner.executors.base import Fire
from runner.leadership import NODE_STALE_SECONDS
from runner.store.engine import end_if_frozen

log = logging.getLogger("runner.executors.procrastinate")

TASK_NAME = "runner.run_attempt"
WORKER_SUFFIX = ":worker"
"""Ends every worker's node name (`host:pid:worker`), so runs and nodes show what ran where."""
RETRY_WINDOW = timedelta(hours=6)
"""Failed attempts older than this are not looked at for a retry any more."""
PERMANENT = "not retried, no retry can fix this: "
"""Starts the recorded error of an attempt that failed for good. No other error can start so:
a target's exception is recorded as `TypeName: message`, the runner's own errors are fixed
sentences."""
FIRST_SCAN_OVERLAP = 1000
"""Run ids below the highest at a leader's first retry scan that its next scan reads again
(a claim may commit after a higher id was visible)."""
_SCHEMA_LOCK = 0x72756E6E  # pg_advisory_xact_lock key: one process applies the schema


def queueing_lock(job_id: str, scheduled_at: datetime, attempt: int) -> str:
    """The attempt's key, also procrastinate's queueing lock of its deferral."""
    return f"{job_id}@{scheduled_at.astimezone(UTC).isoformat()}#{attempt}"


def ensure_schema(engine: Engine) -> None:
    """Apply procrastinate's schema once, if the database does not have it yet."""
    from procrastinate.schema import SchemaManager

    with engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
        present = conn.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar()
        if present is None:
            log.info("applying procrastinate's schema")
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cursor = raw.cursor()  # the schema is many statements: the driver runs them as one
            try:
                cursor.execute(SchemaManager.get_schema())
            finally:
                cursor.close()


@dataclass(frozen=True, slots=True)
class Handover:
    """One attempt to defer: its key, its job's spec, and when it is due."""

    fire: Fire
    attempt: int
    due: datetime
    grace: float | None


_DEFER = """
SELECT procrastinate_defer_jobs_v1(array_agg(
    ROW(u.queue, %(task)s, 0, NULL, u.qlock, u.args::jsonb, u.due)::procrastinate_job_to_defer_v1
))
FROM unnest(%(queue)s::varchar[], %(qlock)s::text[], %(args)s::text[], %(due)s::timestamptz[])
     AS u(queue, qlock, args, due)
"""

_CLAIM_RETRY = """
INSERT INTO runner_runs (job_id, scheduled_at, attempt, status, node)
VALUES (%(job_id)s, %(scheduled_at)s, %(attempt)s, 'queued', %(node)s)
ON CONFLICT (job_id, scheduled_at, attempt) DO NOTHING
RETURNING job_id
"""

_CLOSE_DEAD = f"""
UPDATE runner_runs SET status = 'interrupted', finished_at = %(now)s,
    error = 'the worker running it stopped or died'
WHERE status = 'running' AND node LIKE '%%{WORKER_SUFFIX}'
  AND node NOT IN (SELECT node FROM runner_nodes
                   WHERE stopped_at IS NULL AND heartbeat_at > %(cutoff)s)
RETURNING job_id, scheduled_at, attempt
"""

_RETRY_CANDIDATES = f"""
SELECT r.run_id, r.job_id, r.scheduled_at, r.attempt, r.finished_at FROM runner_runs AS r
WHERE r.run_id >= %(low)s
  AND r.status IN ('failed', 'timed_out', 'interrupted') AND r.finished_at > %(since)s
  AND r.node LIKE '%%{WORKER_SUFFIX}'
  AND (r.error IS NULL OR r.error NOT LIKE %(permanent)s)
  AND NOT EXISTS (SELECT 1 FROM runner_runs AS n WHERE n.job_id = r.job_id
                  AND n.scheduled_at = r.scheduled_at AND n.attempt = r.attempt + 1)
"""

_RUN_MARKS = """
SELECT (SELECT min(run_id) FROM runner_runs WHERE status IN ('queued', 'running')),
       (SELECT max(run_id) FROM runner_runs)
"""

_QUEUED = """
SELECT job_id, scheduled_at, attempt FROM runner_runs
WHERE status = 'queued' AND attempt = 1 AND scheduled_at < %(before)s
"""

_MISS = """
UPDATE runner_runs SET status = 'missed', finished_at = %(now)s, error = %(error)s
WHERE job_id = %(job_id)s AND scheduled_at = %(scheduled_at)s AND attempt = %(attempt)s
  AND status = 'queued'
"""

_CANCEL = """
UPDATE procrastinate_jobs SET status = 'cancelled'
WHERE queueing_lock = %(qlock)s AND status = 'todo'
"""

_IN_FLIGHT = """
SELECT job_id, count(*) FROM runner_runs WHERE status IN ('queued', 'running') GROUP BY job_id
"""


def defer(conn: Connection, items: Sequence[Handover]) -> None:
    """Defer these attempts to procrastinate in the caller's transaction."""
    if not items:
        return
    queues, locks, args = [], [], []
    dues: list[datetime | None] = []
    now = datetime.now(UTC)
    for item in items:
        spec = item.fire.spec
        queues.append(str(spec.get("queue") or "default"))
        locks.append(queueing_lock(item.fire.job_id, item.fire.scheduled_at, item.attempt))
        args.append(
            json.dumps(
                {
                    "job_id": item.fire.job_id,
                    "scheduled_at": item.fire.scheduled_at.astimezone(UTC).isoformat(),
                    "attempt": item.attempt,
                    "due": item.due.astimezone(UTC).isoformat(),
                    "grace": item.grace,
                    "spec": dict(spec),
                },
                separators=(",", ":"),
            )
        )
        # Not before its time, but a fire due now goes without `scheduled_at`: procrastinate
        # then wakes a worker at once (LISTEN/NOTIFY) instead of at its next poll.
        dues.append(item.due.astimezone(UTC) if item.due > now else None)
    conn.exec_driver_sql(
        _DEFER, {"task": TASK_NAME, "queue": queues, "qlock": locks, "args": args, "due": dues}
    )


JobLookup = Callable[[str], Any]
"""The scheduler's view of a stored job (APScheduler Job; `args[1]` is its spec), or None."""


class ProcrastinateExecutor:
    """Implements `base.Executor` for the scheduler: nothing runs here."""

    hands_over = True
    """The scheduler claims this executor's fires `queued` and calls `hand_over` in the
    claim's transaction."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.may_start: Callable[[], bool] = lambda: True
        self.vet: Callable[[Fire], Fire | None] | None = None
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.handed_over = 0
        self.retry_from = 0
        """Lowest run id the next retry scan reads: below it every attempt is retried, not
        retriable, or older than RETRY_WINDOW. 0 until this leader's first scan."""
        self._scan_high: int | None = None

    # --- the Executor interface -----------------------------------------------------------
    def start(self) -> None:
        return None

    def running(self, job_id: str) -> int:
        """The job's attempts queued or running anywhere (as of this pass)."""
        with self._lock:
            return self._in_flight[job_id]

    def active(self) -> int:
        return 0

    def busy_threads(self) -> int:
        return 0

    def try_submit(self, fire: Fire, max_instances: int, first_attempt: int = 1) -> bool:
        return True  # retries of interrupted attempts are deferred by `sweep`

    def submit_batch(
        self, batch: Sequence[tuple[Sequence[Fire], int]], first_attempt: int = 1
    ) -> list[bool]:
        return [True] * len(batch)  # already deferred in the claim's transaction

    def submit_at(self, when: datetime, batch: Sequence[tuple[Fire, int]]) -> None:
        return None  # deferred with procrastinate's `scheduled_at` = the fire's time

    def cancel_pending(self) -> list[Fire]:
        return []

    def stop(self, grace: float, abort: Any = None) -> int:
        return 0

    # --- hand-over --------------------------------------------------------------------------
    def hand_over(self, conn: Connection, items: Sequence[Handover]) -> None:
        defer(conn, items)
        with self._lock:
            for item in items:
                self._in_flight[item.fire.job_id] += 1
        self.handed_over += len(items)

    def sweep(self, conn: Connection, lookup: JobLookup, now: datetime | None = None) -> None:
        """What the leader decides about handed-over attempts; one transaction."""
        now = now or datetime.now(UTC)
        with conn.begin():
            end_if_frozen(conn)
            self._close_dead(conn, now)
            self._miss_late(conn, lookup, now)
            marks = self._retry(conn, lookup, now)
            counts = Counter({row[0]: int(row[1]) for row in conn.exec_driver_sql(_IN_FLIGHT)})
        # Only after the commit: a pass that rolled back is scanned again from the old mark.
        self.retry_from, self._scan_high = marks
        with self._lock:
            self._in_flight = counts

    def _close_dead(self, conn: Connection, now: datetime) -> None:
        cutoff = now - timedelta(seconds=NODE_STALE_SECONDS)
        closed = conn.exec_driver_sql(_CLOSE_DEAD, {"now": now, "cutoff": cutoff}).all()
        if closed:
            log.warning("closed %d attempt(s) of dead worker(s) as interrupted", len(closed))

    def _miss_late(self, conn: Connection, lookup: JobLookup, now: datetime) -> None:
        rows = conn.exec_driver_sql(_QUEUED, {"before": now - timedelta(seconds=1)}).all()
        for job_id, scheduled_at, attempt in rows:
            job = lookup(job_id)
            grace = None if job is None else job.misfire_grace_time
            late = (now - scheduled_at).total_seconds()
            if job is not None and (grace is None or late <= grace):
                continue
            reason = (
                "its job was removed while it waited for a worker"
                if job is None
                else f"no worker started it within its misfire grace ({grace}s)"
            )
            key = {"job_id": job_id, "scheduled_at": scheduled_at, "attempt": attempt}
            conn.exec_driver_sql(_MISS, {**key, "now": now, "error": reason})
            conn.exec_driver_sql(_CANCEL, {"qlock": queueing_lock(job_id, scheduled_at, attempt)})
            log.warning("fire of %s at %s missed: %s", job_id, scheduled_at, reason)

    def _retry(self, conn: Connection, lookup: JobLookup, now: datetime) -> tuple[int, int | None]:
        """Claim and defer the retries that are due; returns where the next scan starts.

        The scan is incremental: an attempt can only become a retry candidate while it is
        queued or running, or after it, so the next scan starts at the lowest of the oldest
        attempt still in flight, the oldest candidate still waiting for its delay, and the
        highest id of the previous scan (one scan of overlap for late commits). A new leader
        has no marks and scans the whole RETRY_WINDOW once, through the status index.
        """
        from runner.executors.attempt import retries_of

        open_low, high = conn.exec_driver_sql(_RUN_MARKS).one()
        high = high or 0
        params = {
            "low": self.retry_from,
            "since": now - RETRY_WINDOW,
            "permanent": PERMANENT + "%",  # no LIKE wildcard in it
        }
        rows = conn.exec_driver_sql(_RETRY_CANDIDATES, params).all()
        previous = self._scan_high if self._scan_high is not None else high - FIRST_SCAN_OVERLAP
        lows = [max(0, previous + 1)]
        if open_low is not None:
            lows.append(open_low)
        items: list[Handover] = []
        for run_id, job_id, scheduled_at, attempt, finished_at in rows:
            job = lookup(job_id)
            if job is None:
                continue
            spec: Mapping[str, Any] = job.args[1]
            retries = retries_of(spec)
            if attempt >= retries.max_attempts:
                continue
            due = finished_at + timedelta(seconds=retries.wait_before(attempt + 1))
            if due > now:
                lows.append(run_id)  # scanned again until its delay has passed
                continue
            won = conn.exec_driver_sql(
                _CLAIM_RETRY,
                {
                    "job_id": job_id,
                    "scheduled_at": scheduled_at,
                    "attempt": attempt + 1,
                    "node": self.node,
                },
            ).first()
            if won is not None:
                log.info("retrying %s (fire %s) as attempt %d", job_id, scheduled_at, attempt + 1)
                items.append(Handover(Fire(job_id, spec, scheduled_at), attempt + 1, due, None))
        self.hand_over(conn, items)
        return min(lows), high
