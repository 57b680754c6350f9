"""The hand-over to procrastinate is exactly once per attempt, on a real PostgreSQL.

Two schedulers that both believe they lead (a split brain, or a new leader that read the
schedule before the old one flushed it) run their passes over the same due fire; a
hand-over whose transaction dies before its commit leaves nothing behind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from runner import history, reconcile
from runner.executors.base import Fire
from runner.executors.procrastinate import (
    TASK_NAME,
    Handover,
    ProcrastinateExecutor,
    ensure_schema,
    queueing_lock,
)
from runner.fileset import FileSet
from runner.scheduler import RunnerScheduler
from runner.store import migrate
from runner.store.engine import connect

pytestmark = pytest.mark.postgres

START = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
JOBS = """jobs:
  - {id: a, target: 'sampleapp.jobs:tick', trigger: {interval: 60}, queue: reports}
  - {id: b, target: 'sampleapp.jobs:tick', trigger: {interval: 60}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _deferred(engine: Any) -> list[tuple[str, str, str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT queueing_lock, queue_name, task_name, args FROM procrastinate_jobs"
                " ORDER BY queueing_lock"
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _runs(engine: Any) -> list[tuple[str, int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT job_id, attempt, status FROM runner_runs ORDER BY job_id, attempt")
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _scheduler(url: str, node: str, clock: Clock) -> RunnerScheduler:
    engine = connect(url)
    scheduler = RunnerScheduler(
        engine, ProcrastinateExecutor(node), node, lookahead=0.0, clock=clock
    )
    scheduler.store.start(scheduler, "default")
    return scheduler


def test_two_leaders_defer_each_attempt_once(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    (tmp_path / "jobs.yaml").write_text(JOBS)
    engine = connect(pg_url)
    migrate.ensure(engine)
    ensure_schema(engine)
    ensure_schema(engine)  # idempotent
    files = FileSet([str(tmp_path)])
    files.refresh(None)
    desired, problems = files.desired()
    assert not problems
    reconcile.apply(engine, desired, now=START)
    clock = Clock()
    one = _scheduler(pg_url, "node-1", clock)
    two = _scheduler(pg_url, "node-2", clock)  # read the schedule before one advanced it
    clock.now = START + timedelta(seconds=60)
    for scheduler in (one, two, one, two):
        scheduler._process_jobs()
        assert scheduler.last_pass_error is None, scheduler.last_pass_error
    deferred = _deferred(engine)
    fire = START + timedelta(seconds=60)
    assert [d[0] for d in deferred] == [queueing_lock("a", fire, 1), queueing_lock("b", fire, 1)]
    assert [d[1] for d in deferred] == ["reports", "default"]
    assert {d[2] for d in deferred} == {TASK_NAME}
    assert deferred[0][3]["job_id"] == "a" and deferred[0][3]["attempt"] == 1
    assert _runs(engine) == [("a", 1, "queued"), ("b", 1, "queued")]
    # max_instances (1) counts queued attempts: the next fire of a still-queued job is skipped.
    clock.now = START + timedelta(seconds=120)
    one._process_jobs()
    assert len(_deferred(engine)) == 2
    assert [r for r in _runs(engine) if r[2] == "skipped"] == [
        ("a", 1, "skipped"),
        ("b", 1, "skipped"),
    ]
    for scheduler in (one, two):
        scheduler.engine.dispose()
    engine.dispose()


def test_a_hand_over_whose_transaction_dies_leaves_neither_claim_nor_job(pg_url: str) -> None:
    engine = connect(pg_url)
    migrate.ensure(engine)
    ensure_schema(engine)
    executor = ProcrastinateExecutor("node-1")
    fire = Fire("a", {"target": "sampleapp.jobs:tick"}, START)
    with engine.connect() as conn, pytest.raises(RuntimeError), conn.begin():
        won = history.claim(conn, [("a", START)], "node-1", "queued")
        assert won
        executor.hand_over(conn, [Handover(fire, 1, START, 600)])
        raise RuntimeError("the leader dies before its commit")
    assert _runs(engine) == []
    assert _deferred(engine) == []
    # The next leader decides the fire again: claimed and deferred once.
    for _ in range(2):
        with engine.connect() as conn, conn.begin():
            if history.claim(conn, [("a", START)], "node-2", "queued"):
                executor.hand_over(conn, [Handover(fire, 1, START, 600)])
    assert _runs(engine) == [("a", 1, "queued")]
    assert len(_deferred(engine)) == 1
    engine.dispose()
