"""The leader's retry scan of worker attempts is incremental and stays right across failover.

A real PostgreSQL with procrastinate's schema, a real scheduler's job store for the lookup,
history rows written as workers write them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from runner import reconcile
from runner.executors.procrastinate import PERMANENT, ProcrastinateExecutor, ensure_schema
from runner.fileset import FileSet
from runner.scheduler import RunnerScheduler
from runner.store import migrate, tables
from runner.store.engine import connect

pytestmark = pytest.mark.postgres

START = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
JOBS = """jobs:
  - {id: a, target: 'sampleapp.jobs:tick', trigger: {interval: 1h},
     retries: {max_attempts: 3, delay: 60}}
  - {id: old, target: 'sampleapp.jobs:tick', trigger: {interval: 1h}}
"""
WORKER = "host:1:worker"


@pytest.fixture
def store(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    (tmp_path / "jobs.yaml").write_text(JOBS)
    engine = connect(pg_url)
    migrate.ensure(engine)
    ensure_schema(engine)
    files = FileSet([str(tmp_path)])
    files.refresh(None)
    desired, problems = files.desired()
    assert not problems
    reconcile.apply(engine, desired, now=START)
    scheduler = RunnerScheduler(
        engine, ProcrastinateExecutor("leader"), "leader", lookahead=0.0, clock=lambda: START
    )
    scheduler.store.start(scheduler, "default")
    yield engine, scheduler.store.lookup_job
    scheduler.engine.dispose()
    engine.dispose()


def _row(job_id: str, minute: int, attempt: int, status: str, **extra: Any) -> dict[str, Any]:
    at = START + timedelta(minutes=minute)
    return {
        "job_id": job_id,
        "scheduled_at": at,
        "attempt": attempt,
        "status": status,
        "started_at": at,
        "finished_at": at if status not in ("queued", "running") else None,
        "node": WORKER,
        "error": extra.get("error"),
    }


def _write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(tables.runner_runs), rows)


def _attempts(engine: Engine, job_id: str) -> list[tuple[datetime, int, str]]:
    runs = tables.runner_runs
    with engine.connect() as conn:
        rows = conn.execute(
            select(runs.c.scheduled_at, runs.c.attempt, runs.c.status)
            .where(runs.c.job_id == job_id)
            .order_by(runs.c.scheduled_at, runs.c.attempt)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _sweep(engine: Engine, executor: ProcrastinateExecutor, lookup: Any, minute: float) -> None:
    with engine.connect() as conn:
        executor.sweep(conn, lookup, START + timedelta(minutes=minute))


def test_retries_are_claimed_once_when_due_and_old_history_is_not_read_again(store: Any) -> None:
    engine, lookup = store
    # History that no retry concerns: finished, out of attempts.
    _write(engine, [_row("old", m, 1, "failed") for m in range(-300, 0)])
    leader = ProcrastinateExecutor("leader")
    _sweep(engine, leader, lookup, 0)
    runs = tables.runner_runs
    with engine.connect() as conn:
        top = conn.execute(select(runs.c.run_id).order_by(runs.c.run_id.desc())).scalar()
    assert top is not None
    _sweep(engine, leader, lookup, 0.5)
    assert leader.retry_from > top, "the next scans start after the old history"

    # A worker attempt fails (retry after 60 s), one fails for good, another is still running
    # on a worker that is alive (heartbeats) throughout.
    with engine.begin() as conn:
        alive = START + timedelta(days=1)
        conn.execute(
            insert(tables.runner_nodes).values(node=WORKER, started_at=START, heartbeat_at=alive)
        )
    _write(
        engine,
        [
            _row("a", 1, 1, "failed"),
            _row("a", 2, 1, "failed", error=f"{PERMANENT}environment variable X is not set"),
            _row("a", 3, 1, "running"),
        ],
    )
    for minute in (1.2, 1.5, 1.9):  # before its delay: nothing, however many passes
        _sweep(engine, leader, lookup, minute)
    assert [a for a in _attempts(engine, "a") if a[1] > 1] == []
    assert leader.retry_from <= top + 1, "the waiting candidate is scanned again"
    _sweep(engine, leader, lookup, 2.1)
    assert (START + timedelta(minutes=1), 2, "queued") in _attempts(engine, "a")

    # The running attempt fails much later, after many passes moved the mark on.
    for minute in range(3, 30):
        _sweep(engine, leader, lookup, minute)
    with engine.begin() as conn:
        conn.execute(
            runs.update()
            .where(runs.c.job_id == "a", runs.c.attempt == 1, runs.c.status == "running")
            .values(status="timed_out", finished_at=START + timedelta(minutes=30))
        )
    _sweep(engine, leader, lookup, 31.5)
    # A new leader (failover) starts without marks: it claims nothing twice.
    successor = ProcrastinateExecutor("successor")
    _sweep(engine, successor, lookup, 32)
    _sweep(engine, leader, lookup, 33)
    assert _attempts(engine, "a") == [
        (START + timedelta(minutes=1), 1, "failed"),
        (START + timedelta(minutes=1), 2, "queued"),
        (START + timedelta(minutes=2), 1, "failed"),  # permanent: never retried
        (START + timedelta(minutes=3), 1, "timed_out"),
        (START + timedelta(minutes=3), 2, "queued"),
    ]
