"""Run history: claims, attempts and outcomes, written in batches off the hot path.

Every fire is claimed by inserting its first attempt row under the unique key
(job_id, scheduled_at, attempt) before it starts, so two nodes can never both run one fire
and a restarted node never repeats a fire that already ran.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from runner import interpolate, metrics
from runner.errors import printable
from runner.execute import Fire, Outcome, Status
from runner.store import tables
from runner.store.engine import end_if_frozen

log = logging.getLogger("runner.history")
runs = tables.runner_runs


MAX_ERROR = 2000
"""Characters kept of a run's error: one line, as `runner runs`, the API and the page show it."""
MAX_TRACEBACK = 16384
"""Characters kept of a traceback: its start and its end (where the exception is)."""


def recorded_error(text: str | None) -> str | None:
    """What is stored of an error: redacted, on one line, at most MAX_ERROR characters.

    A job controls its exception's message, which must neither fill the database nor forge
    lines where the history is shown.
    """
    if text is None:
        return None
    text = printable(_redacted(text)[: MAX_ERROR * 2])
    return text if len(text) <= MAX_ERROR else f"{text[: MAX_ERROR - 24]}... (cut at {MAX_ERROR})"


def recorded_traceback(text: str | None) -> str | None:
    if text is None:
        return None
    text = _redacted(text)
    if len(text) > MAX_TRACEBACK:
        half = MAX_TRACEBACK // 2
        cut = len(text) - 2 * half
        text = f"{text[:half]}\n... ({cut} characters cut) ...\n{text[-half:]}"
    return text


def _redacted(text: str) -> str:
    return interpolate.redact(text, interpolate.resolved_values()) or text


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _insert(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(runs)


@dataclass(frozen=True, slots=True)
class Mark:
    """A fire that will not run, and why: `missed` or `skipped`."""

    job_id: str
    scheduled_at: datetime
    status: str
    reason: str


_CLAIM_PG = """
INSERT INTO runner_runs (job_id, scheduled_at, attempt, status, node)
SELECT u.job_id, u.scheduled_at, 1, %(status)s, %(node)s
FROM unnest(%(job_id)s::text[], %(scheduled_at)s::timestamptz[]) AS u(job_id, scheduled_at)
ON CONFLICT (job_id, scheduled_at, attempt) DO NOTHING
RETURNING job_id, scheduled_at
"""

_MARK_PG = """
INSERT INTO runner_runs (job_id, scheduled_at, attempt, status, error, node, finished_at)
SELECT u.job_id, u.scheduled_at, 1, u.status, u.error, %(node)s, %(now)s
FROM unnest(%(job_id)s::text[], %(scheduled_at)s::timestamptz[], %(status)s::text[],
            %(error)s::text[]) AS u(job_id, scheduled_at, status, error)
ON CONFLICT (job_id, scheduled_at, attempt) DO NOTHING
"""

_ATTEMPT_COLUMNS = (
    "job_id",
    "scheduled_at",
    "attempt",
    "started_at",
    "finished_at",
    "duration",
    "status",
    "error",
    "traceback",
)

_UPSERT_PG = """
INSERT INTO runner_runs (job_id, scheduled_at, attempt, started_at, finished_at, duration,
                         status, error, traceback, node)
SELECT u.job_id, u.scheduled_at, u.attempt, u.started_at, u.finished_at, u.duration,
       u.status, u.error, u.traceback, %(node)s
FROM unnest(%(job_id)s::text[], %(scheduled_at)s::timestamptz[], %(attempt)s::int[],
            %(started_at)s::timestamptz[], %(finished_at)s::timestamptz[],
            %(duration)s::float8[], %(status)s::text[], %(error)s::text[],
            %(traceback)s::text[])
     AS u(job_id, scheduled_at, attempt, started_at, finished_at, duration, status, error,
          traceback)
ON CONFLICT (job_id, scheduled_at, attempt) DO UPDATE SET
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    duration = EXCLUDED.duration, status = EXCLUDED.status, error = EXCLUDED.error,
    traceback = EXCLUDED.traceback, node = EXCLUDED.node
"""

_FINISH_PG = """
UPDATE runner_runs AS r SET finished_at = u.finished_at, duration = u.duration,
    status = u.status, error = u.error, traceback = u.traceback
FROM unnest(%(job_id)s::text[], %(scheduled_at)s::timestamptz[], %(attempt)s::int[],
            %(finished_at)s::timestamptz[], %(duration)s::float8[], %(status)s::text[],
            %(error)s::text[], %(traceback)s::text[])
     AS u(job_id, scheduled_at, attempt, finished_at, duration, status, error, traceback)
WHERE r.job_id = u.job_id AND r.scheduled_at = u.scheduled_at AND r.attempt = u.attempt
"""


def _columns(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """Rows as one list per column: PostgreSQL takes them as arrays and unnests them, which
    costs a fraction of binding every value of every row separately."""
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def claim(
    conn: Connection,
    fires: Sequence[tuple[str, datetime]],
    node: str,
    status: str = Status.RUNNING,
) -> set[tuple[str, datetime]]:
    """Insert the first-attempt row of each fire; return the fires this node won.

    `queued` instead of `running` when the fires are handed to workers."""
    if not fires:
        return set()
    if conn.dialect.name == "postgresql":
        params = _columns(("job_id", "scheduled_at"), [(j, as_utc(at)) for j, at in fires])
        result = conn.exec_driver_sql(_CLAIM_PG, {**params, "node": node, "status": status})
        return {(job_id, as_utc(at)) for job_id, at in result}
    rows = [
        {
            "job_id": job_id,
            "scheduled_at": as_utc(at),
            "attempt": 1,
            "status": status,
            "node": node,
        }
        for job_id, at in fires
    ]
    statement = (
        _insert(conn)
        .on_conflict_do_nothing(index_elements=["job_id", "scheduled_at", "attempt"])
        .returning(runs.c.job_id, runs.c.scheduled_at)
    )
    result = conn.execute(statement, rows if len(rows) > 1 else rows[0])
    return {(job_id, as_utc(at)) for job_id, at in result}


def mark(conn: Connection, marks: Sequence[Mark], node: str) -> None:
    """Record fires that did not run; a fire already recorded keeps its row."""
    if not marks:
        return
    now = datetime.now(UTC)
    if conn.dialect.name == "postgresql":
        params = _columns(
            ("job_id", "scheduled_at", "status", "error"),
            [(m.job_id, as_utc(m.scheduled_at), m.status, m.reason) for m in marks],
        )
        conn.exec_driver_sql(_MARK_PG, {**params, "node": node, "now": now})
        return
    rows = [
        {
            "job_id": m.job_id,
            "scheduled_at": as_utc(m.scheduled_at),
            "attempt": 1,
            "status": m.status,
            "error": m.reason,
            "node": node,
            "finished_at": now,
        }
        for m in marks
    ]
    statement = _insert(conn).on_conflict_do_nothing(
        index_elements=["job_id", "scheduled_at", "attempt"]
    )
    conn.execute(statement, rows)


def _key(fire_job: str, scheduled: datetime, attempt: int) -> Any:
    return and_(
        runs.c.job_id == fire_job,
        runs.c.scheduled_at == as_utc(scheduled),
        runs.c.attempt == attempt,
    )


BURST = 50
_Op = tuple[Any, ...]
"""("start", job_id, scheduled_at, attempt, started_at),
("finish", job_id, scheduled_at, attempt, finished_at, duration, status, error, traceback) or
("release", job_id, scheduled_at, 1)."""


class Writer:
    """Collects attempt starts and ends and writes them in batches from one thread.

    Producers append to a deque and wake the writer once per writing cycle, not once per item:
    starting a thousand runs at once must not hand the GIL to this thread a thousand times.
    A lone update is written at once; a burst (BURST items or more) is left to go quiet (up to
    `max_delay`) before it is written, so writing does not compete with the runs starting.
    When the database is away, updates wait in memory and are retried, so no history is lost
    while the process lives.
    """

    def __init__(
        self,
        engine: Engine,
        node: str,
        flush_every: float = 0.05,
        quiet: float = 0.02,
        max_delay: float = 0.5,
    ) -> None:
        self.engine = engine
        self.node = node
        self.flush_every = flush_every
        self.quiet = quiet
        self.max_delay = max_delay
        self._ops: collections.deque[_Op] = collections.deque()
        self._last_put = 0.0
        self._inflight = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runner-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def started(self, fire: Fire, attempt: int, at: datetime) -> None:
        metrics.run_started(fire.job_id, attempt, fire.scheduled_at, at)
        self._ops.append(("start", fire.job_id, as_utc(fire.scheduled_at), attempt, at))
        self._poke()

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None:
        # Bounded in place: what the caller logs and prints afterwards is what was recorded.
        outcome.error = recorded_error(outcome.error)
        outcome.traceback = recorded_traceback(outcome.traceback)
        if outcome.status in (Status.MISSED, Status.SKIPPED):
            metrics.fire_marked(fire.job_id, outcome.status)
        else:
            metrics.run_finished(fire.job_id, attempt, outcome.status, duration)
        self._ops.append(
            (
                "finish",
                fire.job_id,
                as_utc(fire.scheduled_at),
                attempt,
                at,
                duration,
                outcome.status,
                outcome.error,
                outcome.traceback,
            )
        )
        self._poke()

    def release(self, fire: Fire) -> None:
        """Give back the claim of a fire that was claimed ahead of its time and never started,
        so that it is decided again."""
        self._ops.append(("release", fire.job_id, as_utc(fire.scheduled_at), 1))
        self._poke()

    def _poke(self) -> None:
        self._last_put = time.monotonic()
        if not self._wake.is_set():  # one wake-up per writing cycle, not one per item
            self._wake.set()

    def pending(self) -> int:
        return len(self._ops)

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued is written; False if the database stayed away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # `_inflight` is raised before the writer takes items and lowered once they are
            # written, so "no items and nothing in flight" means all were written.
            if not self._inflight and not self._ops:
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        pending: list[_Op] = []
        backoff = 0.1
        while True:
            if self._stop.is_set() and not self._ops and not pending:
                return
            if not self._stop.is_set():
                self._wake.wait(self.flush_every)
                self._wake.clear()
            if not self._ops and not pending:
                continue
            # Many runs starting at once: let the burst pass before competing with it.
            began = time.monotonic()
            while (
                len(self._ops) >= BURST
                and time.monotonic() - self._last_put < self.quiet
                and time.monotonic() - began < self.max_delay
                and not self._stop.is_set()
            ):
                time.sleep(self.quiet)
            self._inflight = True
            while self._ops:
                pending.append(self._ops.popleft())
            try:
                with self.engine.begin() as conn:
                    end_if_frozen(conn)
                    self._write(conn, pending)
                pending = []
                backoff = 0.1
                self._inflight = False
            except (DBAPIError, SQLAlchemyError) as exc:
                log.warning(
                    "history write failed, will retry in %.1fs: %s",
                    backoff,
                    str(exc).splitlines()[0],
                )
                if self._stop.wait(backoff):  # stop() already waited for the database
                    return
                backoff = min(backoff * 2, 5.0)

    def _write(self, conn: Connection, ops: Iterable[_Op]) -> None:
        """Write a batch: an attempt that started and ended within it becomes one row write."""
        attempts: dict[tuple[str, datetime, int], list[Any]] = {}
        finishes: list[_Op] = []
        releases: list[_Op] = []
        for op in ops:
            key = (op[1], op[2], op[3])
            if op[0] == "release":
                releases.append(op)
                continue
            if op[0] == "start":
                attempts[key] = [op[1], op[2], op[3], op[4], None, None, Status.RUNNING, None, None]
                continue
            row = attempts.get(key)
            if row is not None:
                row[4:] = op[4:]
            else:
                finishes.append(op)
        postgres = conn.dialect.name == "postgresql"
        if attempts:
            rows = list(attempts.values())
            if postgres:
                conn.exec_driver_sql(
                    _UPSERT_PG, {**_columns(_ATTEMPT_COLUMNS, rows), "node": self.node}
                )
            else:
                statement = _insert(conn)
                excluded = statement.excluded
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["job_id", "scheduled_at", "attempt"],
                        set_={name: getattr(excluded, name) for name in _ATTEMPT_COLUMNS[3:]}
                        | {"node": excluded.node},
                    ),
                    [
                        {**dict(zip(_ATTEMPT_COLUMNS, r, strict=True)), "node": self.node}
                        for r in rows
                    ],
                )
        if finishes:
            # After the starts: a finish is only ever queued after its own start.
            names = ("job_id", "scheduled_at", "attempt", *_ATTEMPT_COLUMNS[4:])
            if postgres:
                conn.exec_driver_sql(_FINISH_PG, _columns(names, [op[1:] for op in finishes]))
            else:
                conn.execute(
                    update(runs)
                    .where(_key_params())
                    .values(
                        finished_at=bindparam("finished_at"),
                        duration=bindparam("duration"),
                        status=bindparam("status"),
                        error=bindparam("error"),
                        traceback=bindparam("traceback"),
                    ),
                    [
                        {
                            "b_job": op[1],
                            "b_at": op[2],
                            "b_attempt": op[3],
                            "finished_at": op[4],
                            "duration": op[5],
                            "status": op[6],
                            "error": op[7],
                            "traceback": op[8],
                        }
                        for op in finishes
                    ],
                )
        for op in releases:
            conn.execute(
                delete(runs).where(
                    _key(op[1], op[2], op[3]),
                    runs.c.started_at.is_(None),
                    runs.c.status == Status.RUNNING,
                )
            )


def _key_params() -> Any:
    return and_(
        runs.c.job_id == bindparam("b_job"),
        runs.c.scheduled_at == bindparam("b_at"),
        runs.c.attempt == bindparam("b_attempt"),
    )


def close_interrupted(
    conn: Connection, nodes: Sequence[str] | None = None, reason: str = "node stopped"
) -> list[tuple[str, datetime, int]]:
    """Close runs left `running` by nodes that are gone (all nodes when None).

    Returns the (job_id, scheduled_at, attempt) of each run closed, so the job's retry
    policy can decide whether it runs again.
    """
    statement = update(runs).where(runs.c.status == Status.RUNNING)
    if nodes is not None:
        statement = statement.where(runs.c.node.in_(nodes))
    result = conn.execute(
        statement.values(
            status=Status.INTERRUPTED, error=reason, finished_at=datetime.now(UTC)
        ).returning(runs.c.job_id, runs.c.scheduled_at, runs.c.attempt)
    )
    return [(row.job_id, as_utc(row.scheduled_at), row.attempt) for row in result]


def prune(engine: Engine, cutoff: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            delete(runs).where(
                runs.c.status.not_in((Status.RUNNING, Status.QUEUED)),
                runs.c.scheduled_at < as_utc(cutoff),
            )
        )
    return int(result.rowcount or 0)


def recent(conn: Connection, job_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    statement = select(runs).order_by(runs.c.run_id.desc()).limit(limit)
    if job_id is not None:
        statement = statement.where(runs.c.job_id == job_id)
    return [dict(row._mapping) for row in conn.execute(statement)]


def run_as_json(row: dict[str, Any]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return as_utc(value).isoformat() if value is not None else None

    return {
        "run_id": row["run_id"],
        "job_id": row["job_id"],
        "scheduled_at": iso(row["scheduled_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "status": row["status"],
        "attempt": row["attempt"],
        "error": row["error"],
        "node": row["node"],
    }
