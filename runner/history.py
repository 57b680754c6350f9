"""Run history: claims, attempts and outcomes, written in batches off the hot path.

Every fire is claimed by inserting its first attempt row under the unique key
(job_id, scheduled_at, attempt) before it starts, so two nodes can never both run one fire
and a restarted node never repeats a fire that already ran.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from runner.execute import Fire, Outcome, Status
from runner.store import tables

log = logging.getLogger("runner.history")
runs = tables.runner_runs


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


def claim(
    conn: Connection, fires: Sequence[tuple[str, datetime]], node: str
) -> set[tuple[str, datetime]]:
    """Insert the first-attempt row of each fire; return the fires this node won."""
    if not fires:
        return set()
    rows = [
        {
            "job_id": job_id,
            "scheduled_at": as_utc(at),
            "attempt": 1,
            "status": Status.RUNNING,
            "node": node,
        }
        for job_id, at in fires
    ]
    won: set[tuple[str, datetime]] = set()
    for start in range(0, len(rows), 500):
        statement = (
            _insert(conn)
            .values(rows[start : start + 500])
            .on_conflict_do_nothing(index_elements=["job_id", "scheduled_at", "attempt"])
            .returning(runs.c.job_id, runs.c.scheduled_at)
        )
        won.update((row.job_id, as_utc(row.scheduled_at)) for row in conn.execute(statement))
    return won


def mark(conn: Connection, marks: Sequence[Mark], node: str) -> None:
    """Record fires that did not run; a fire already recorded keeps its row."""
    if not marks:
        return
    now = datetime.now(UTC)
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
    for start in range(0, len(rows), 500):
        conn.execute(
            _insert(conn)
            .values(rows[start : start + 500])
            .on_conflict_do_nothing(index_elements=["job_id", "scheduled_at", "attempt"])
        )


def _key(fire_job: str, scheduled: datetime, attempt: int) -> Any:
    return and_(
        runs.c.job_id == fire_job,
        runs.c.scheduled_at == as_utc(scheduled),
        runs.c.attempt == attempt,
    )


class Writer:
    """Queues attempt updates and writes them in batches from one thread.

    When the database is away, updates wait in memory and are retried, so no history is lost
    while the process lives.
    """

    def __init__(self, engine: Engine, node: str, flush_every: float = 0.05) -> None:
        self.engine = engine
        self.node = node
        self.flush_every = flush_every
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name="runner-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def started(self, fire: Fire, attempt: int, at: datetime) -> None:
        self._idle.clear()
        self._queue.put(
            (
                "start",
                {
                    "job_id": fire.job_id,
                    "scheduled_at": as_utc(fire.scheduled_at),
                    "attempt": attempt,
                    "started_at": at,
                },
            )
        )

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None:
        self._idle.clear()
        self._queue.put(
            (
                "finish",
                {
                    "b_job": fire.job_id,
                    "b_at": as_utc(fire.scheduled_at),
                    "b_attempt": attempt,
                    "finished_at": at,
                    "duration": duration,
                    "status": outcome.status,
                    "error": outcome.error,
                    "traceback": outcome.traceback,
                },
            )
        )

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued is written; False if the database stayed away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        self._stop.set()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        pending: list[tuple[str, dict[str, Any]]] = []
        backoff = 0.1
        while not (self._stop.is_set() and self._queue.empty() and not pending):
            try:
                pending.append(self._queue.get(timeout=self.flush_every))
            except queue.Empty:
                pass
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not pending:
                self._idle.set()
                continue
            try:
                with self.engine.begin() as conn:
                    self._write(conn, pending)
                pending = []
                backoff = 0.1
                if self._queue.empty():
                    self._idle.set()
            except (DBAPIError, SQLAlchemyError) as exc:
                log.warning(
                    "history write failed, will retry in %.1fs: %s",
                    backoff,
                    str(exc).splitlines()[0],
                )
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)

    def _write(self, conn: Connection, ops: Iterable[tuple[str, dict[str, Any]]]) -> None:
        starts: list[dict[str, Any]] = []
        finishes: list[dict[str, Any]] = []

        def flush() -> None:
            if starts:
                statement = _insert(conn)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["job_id", "scheduled_at", "attempt"],
                        set_={
                            "started_at": statement.excluded.started_at,
                            "status": Status.RUNNING,
                            "node": self.node,
                        },
                    ),
                    [{**s, "status": Status.RUNNING, "node": self.node} for s in starts],
                )
                starts.clear()
            if finishes:
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
                    finishes,
                )
                finishes.clear()

        for kind, values in ops:
            if kind == "start":
                if finishes:
                    flush()
                starts.append(values)
            else:
                finishes.append(values)
        flush()


def _key_params() -> Any:
    return and_(
        runs.c.job_id == bindparam("b_job"),
        runs.c.scheduled_at == bindparam("b_at"),
        runs.c.attempt == bindparam("b_attempt"),
    )


def close_interrupted(
    conn: Connection, nodes: Sequence[str] | None = None, reason: str = "node stopped"
) -> int:
    """Close runs left `running` by nodes that are gone (all nodes when None)."""
    statement = update(runs).where(runs.c.status == Status.RUNNING)
    if nodes is not None:
        statement = statement.where(runs.c.node.in_(nodes))
    result = conn.execute(
        statement.values(status=Status.INTERRUPTED, error=reason, finished_at=datetime.now(UTC))
    )
    return int(result.rowcount or 0)


def prune(engine: Engine, cutoff: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            delete(runs).where(
                runs.c.status != Status.RUNNING, runs.c.scheduled_at < as_utc(cutoff)
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
