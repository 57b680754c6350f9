"""The store-read metrics are right and stay cheap, on a real SQLite and PostgreSQL database.

Rows are written straight into `runner_runs` so the test controls ids and commit order: a
row committed after a higher one (PostgreSQL hands out ids at insert), an attempt that was
running at one refresh and finished before the next, a job deleted from the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, update

from runner import storemetrics
from runner.store import migrate, tables
from runner.store.engine import connect

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    """Each call is one refresh period later, so every `samples()` call refreshes."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += storemetrics.MAX_AGE
        return self.now


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = connect(db_url)
    migrate.ensure(eng)
    yield eng
    eng.dispose()


def _job(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(tables.runner_jobs).values(
                id=job_id,
                spec="{}",
                spec_hash="x",
                spec_format=1,
                file="jobs.yaml",
                line=1,
                applied_at=T0,
                applied_by="test",
            )
        )


def _run(engine: Engine, run_id: int, job_id: str, status: str, minute: int) -> None:
    finished = None if status in ("queued", "running") else T0 + timedelta(minutes=minute)
    with engine.begin() as conn:
        conn.execute(
            insert(tables.runner_runs).values(
                run_id=run_id,
                job_id=job_id,
                scheduled_at=T0 + timedelta(minutes=minute),
                attempt=1,
                status=status,
                finished_at=finished,
                node="n",
            )
        )


def _values(reader: storemetrics.StoreMetrics) -> dict[tuple[str, str], float]:
    return {(name, next(iter(labels.values()))): v for name, labels, v in reader.samples()}


SUCCESS = "runner_job_last_success_timestamp_seconds"
FAILURE = "runner_job_last_failure_timestamp_seconds"


def _at(minute: int) -> float:
    return (T0 + timedelta(minutes=minute)).timestamp()


def test_last_outcome_times_follow_the_history_incrementally(engine: Engine) -> None:
    for job_id in ("a", "b", "c"):
        _job(engine, job_id)
    _run(engine, 1, "a", "succeeded", 1)
    _run(engine, 2, "a", "failed", 2)
    _run(engine, 3, "b", "running", 3)
    _run(engine, 10, "a", "succeeded", 4)
    _run(engine, 11, "c", "missed", 5)  # not an outcome of a run: no series
    reader = storemetrics.StoreMetrics(engine, workers=False, clock=Clock())
    assert _values(reader) == {(SUCCESS, "a"): _at(4), (FAILURE, "a"): _at(2)}

    # The attempt running at the first read finishes; a row commits below the highest id
    # already read; a newer failure of `a`.
    with engine.begin() as conn:
        conn.execute(
            update(tables.runner_runs)
            .where(tables.runner_runs.c.run_id == 3)
            .values(status="timed_out", finished_at=T0 + timedelta(minutes=6))
        )
    _run(engine, 7, "c", "succeeded", 7)
    _run(engine, 20, "a", "interrupted", 8)
    assert _values(reader) == {
        (SUCCESS, "a"): _at(4),
        (FAILURE, "a"): _at(8),
        (FAILURE, "b"): _at(6),
        (SUCCESS, "c"): _at(7),
    }

    # Later inversions are caught by the one-refresh overlap.
    _run(engine, 40, "b", "succeeded", 9)
    assert _values(reader)[(SUCCESS, "b")] == _at(9)
    _run(engine, 30, "c", "failed", 10)
    assert _values(reader)[(FAILURE, "c")] == _at(10)

    # A deleted job's series go at the next re-read of the stored ids.
    with engine.begin() as conn:
        conn.execute(delete(tables.runner_jobs).where(tables.runner_jobs.c.id == "a"))
    reader._forgot = -storemetrics.FORGET_EVERY
    assert {job for _name, job in _values(reader)} == {"b", "c"}


def test_a_refresh_reads_what_changed_not_the_whole_history(engine: Engine) -> None:
    _job(engine, "busy")
    rows: list[dict[str, Any]] = [
        {
            "run_id": i,
            "job_id": "busy",
            "scheduled_at": T0 + timedelta(seconds=i),
            "attempt": 1,
            "status": "succeeded",
            "finished_at": T0 + timedelta(seconds=i),
            "node": "n",
        }
        for i in range(1, 5001)
    ]
    with engine.begin() as conn:
        conn.execute(insert(tables.runner_runs), rows)
    reader = storemetrics.StoreMetrics(engine, workers=False, clock=Clock())
    reader.samples()
    assert reader.rows_read == 1  # one grouped row per job and status
    reader.samples()  # the first overlap: the last FIRST_OVERLAP ids once more
    after_overlap = reader.rows_read
    assert after_overlap - 1 <= storemetrics.FIRST_OVERLAP
    _run(engine, 5001, "busy", "failed", 100)
    _run(engine, 5002, "busy", "succeeded", 101)
    reader.samples()
    reader.samples()  # the overlap of one refresh reads the two new rows once more
    assert reader.rows_read - after_overlap == 4
    assert _values(reader)[(SUCCESS, "busy")] == _at(101)
