"""A first apply's bulk write (COPY on PostgreSQL) stores exactly the rows row-by-row inserts
stored, and they load and come due in APScheduler's own job store and in the runner's."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import select

from runner import reconcile
from runner import validate as validating
from runner.jobstore import RunnerJobStore
from runner.plan import Desired
from runner.store import bulk, migrate, tables
from runner.store.engine import connect

# Quotes, commas, newlines, backslashes and non-ASCII text: what CSV must carry unchanged.
JOBS = """\
defaults:
  timezone: Europe/Berlin
jobs:
  - id: report
    target: sampleapp.jobs:send_report
    kwargs:
      recipients: [ops@example.com, "", "a,b"]
      subject: "d\\"aily, \\\\ \\n\\u00e9t\\u00e9 \\u2603"
    trigger: {cron: "0 9 * * mon-fri"}
  - id: ticker
    target: sampleapp.jobs:tick
    kwargs: {label: "a,b \\"q\\""}
    trigger: {interval: 1h, start: "2026-01-01T00:00:07+00:00"}
  - id: fresh-interval
    target: sampleapp.jobs:tick
    trigger: {interval: 15m}
  - id: sleeper
    target: sampleapp.jobs:tick
    trigger: {interval: 15m}
    paused: true
  - id: once
    target: sampleapp.jobs:tick
    trigger: {at: "2030-01-01T09:00:00+01:00"}
"""
NOW = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def desired(tmp_path: Path) -> list[Desired]:
    path = tmp_path / "jobs.yaml"
    path.write_text(textwrap.dedent(JOBS), encoding="utf-8")
    loaded, problems = validating.load_valid([str(path)])
    assert problems == []
    return [Desired.of(s) for s in loaded.jobs]


def rows(url: str, table: Any) -> list[tuple[Any, ...]]:
    engine = connect(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(table).order_by(table.c.id)).all()
    finally:
        engine.dispose()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in found]


def test_bulk_rows_equal_row_by_row_rows(db_url: str, tmp_path: Path) -> None:
    wants = desired(tmp_path)
    own = [reconcile.owned_row(w, NOW, "ops@host") for w in wants]
    aps = [reconcile.fresh_row(w, NOW, None) for w in wants]
    engine = connect(db_url)
    try:
        migrate.ensure(engine)
        with engine.begin() as conn:
            bulk.insert(conn, tables.runner_jobs, own)
            bulk.insert(conn, tables.apscheduler_jobs, aps)
    finally:
        engine.dispose()
    key = "id"
    assert rows(db_url, tables.apscheduler_jobs) == [
        (r["id"], r["next_run_time"], r["job_state"]) for r in sorted(aps, key=lambda r: r[key])
    ]
    stored_own = rows(db_url, tables.runner_jobs)
    columns = [c.name for c in tables.runner_jobs.columns]
    expected = [tuple(r.get(name) for name in columns) for r in sorted(own, key=lambda r: r[key])]

    # SQLite hands timestamps back without their zone; compare them as UTC instants.
    def instant(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
            for v in row
        )

    assert [instant(r) for r in stored_own] == [instant(r) for r in expected]
    assert any('d\\"aily, \\\\ \\nété ☃' in r[1] for r in stored_own)


def test_applied_rows_load_and_come_due(db_url: str, tmp_path: Path) -> None:
    wants = desired(tmp_path)
    engine = connect(db_url)
    try:
        plan, written = reconcile.apply(engine, wants, now=NOW)
        assert written and len(plan.create) == len(wants)
        stock = SQLAlchemyJobStore(engine=engine)
        jobs = {job.id: job for job in stock.get_all_jobs()}
        assert sorted(jobs) == sorted(w.id for w in wants)
        by_id = {w.id: w for w in wants}
        for job_id, job in jobs.items():
            expected = reconcile.fresh_row(by_id[job_id], NOW, None)
            when = job.next_run_time.timestamp() if job.next_run_time else None
            assert when == expected["next_run_time"], job_id
            assert job.args == (job_id, by_id[job_id].spec)
            assert str(job.trigger) == str(expected_trigger(expected))
        assert jobs["ticker"].args[1]["kwargs"] == {"label": 'a,b "q"'}
        assert jobs["sleeper"].next_run_time is None
        assert jobs["ticker"].next_run_time == datetime(2026, 6, 1, 12, 0, 7, tzinfo=UTC)

        store = RunnerJobStore(engine)
        store.reload()
        due = store.get_due_jobs(NOW + timedelta(hours=1))
        assert sorted(j.id for j in due) == ["fresh-interval", "ticker"]
    finally:
        engine.dispose()


def expected_trigger(row: dict[str, Any]) -> Any:
    import pickle

    return pickle.loads(row["job_state"])["trigger"]
