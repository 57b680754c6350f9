"""A first apply builds one trigger per distinct trigger and zone, and each job's row is what
building its own would give; jitter stays each job's own draw."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from runner import jobstate, reconcile, triggers, validate
from runner.store import tables
from runner.store.engine import connect

JOBS = """\
jobs:
  - {id: a, target: sampleapp.jobs:tick, trigger: {cron: "5 4 * * *", timezone: Asia/Tokyo}}
  - {id: b, target: sampleapp.jobs:tick, trigger: {cron: "5 4 * * *", timezone: Asia/Tokyo}}
  - {id: c, target: sampleapp.jobs:tick, trigger: {cron: "5 4 * * *"}, timezone: Asia/Tokyo}
  - {id: d, target: sampleapp.jobs:tick, trigger: {cron: "5 4 * * *"}}
  - {id: e, target: sampleapp.jobs:tick, trigger: {cron: "5 4 * * *"}, paused: true}
  - {id: f, target: sampleapp.jobs:tick, trigger: {interval: 1h, jitter: 1h}}
  - {id: g, target: sampleapp.jobs:tick, trigger: {interval: 1h, jitter: 1h}}
"""
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_rows_are_those_of_each_jobs_own_trigger(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    (tmp_path / "jobs.yaml").write_text(JOBS, encoding="utf-8")
    engine = connect(db_url)
    try:
        reconcile.apply_files(engine, [str(tmp_path)], now=NOW)
        t = tables.apscheduler_jobs
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(t.c.id, t.c.next_run_time, t.c.job_state))}
    finally:
        engine.dispose()
    loaded, problems = validate.load_valid([str(tmp_path)])
    assert problems == []
    jobs = {s.job.id: s.job for s in loaded.jobs}
    for job_id in "abcd":
        job = jobs[job_id]
        local = NOW.astimezone(ZoneInfo(job.zone))
        own = triggers.build(job, now=local).get_next_fire_time(None, local)
        assert rows[job_id].next_run_time == jobstate.timestamp(own), job_id
        state = jobstate.loads(rows[job_id].job_state)
        assert str(state["trigger"].timezone) == job.zone
    assert rows["a"].next_run_time == rows["c"].next_run_time != rows["d"].next_run_time
    assert rows["e"].next_run_time is None
    assert rows["f"].next_run_time != rows["g"].next_run_time, "each job draws its own jitter"
