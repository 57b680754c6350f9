"""A trigger that misbehaves can never loop, stall or stop the scheduling pass."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .harness import Sim, write_jobs

START = datetime(2027, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)


class Stuck:
    """Answers the previous fire again (what fold loss did on the fall-back night)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.jitter = None

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        if previous is None:
            return self.real.get_next_fire_time(None, now)  # type: ignore[no-any-return]
        return previous


class Failing(Stuck):
    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        if previous is None:
            return self.real.get_next_fire_time(None, now)  # type: ignore[no-any-return]
        raise RuntimeError("trigger bug")


class Backwards(Stuck):
    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        return datetime(2000, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("kind", [Stuck, Failing, Backwards])
def test_a_misbehaving_trigger_is_logged_and_moved_on_while_others_run(
    kind: type[Stuck],
    sqlite_sim_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    jobs = [
        {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": {"cron": "* * * * *"}}
        for job_id in ("broken", "healthy")
    ]
    sim = Sim(sqlite_sim_url, [write_jobs(tmp_path / "jobs.yaml", jobs)], START)
    try:
        broken = sim.scheduler.store.lookup_job("broken")
        broken.trigger = kind(broken.trigger)
        with caplog.at_level(logging.ERROR, logger="runner.scheduler"):
            sim.run_until(START + timedelta(minutes=5), max_passes=50)
        handed = [(h.job_id, h.scheduled_at) for h in sim.executions.handed]
    finally:
        sim.close()
    healthy = [t for j, t in handed if j == "healthy"]
    assert healthy == [datetime(2027, 6, 1, 12, m, tzinfo=UTC) for m in range(1, 6)]
    broken_runs = [t for j, t in handed if j == "broken"]
    assert len(broken_runs) == len(set(broken_runs)) and broken_runs, broken_runs
    assert broken_runs == sorted(broken_runs)
    messages = [r.getMessage() for r in caplog.records if "job broken" in r.getMessage()]
    assert messages, caplog.text
    for message in messages:  # names the job, the fire and what was done
        assert "after its fire at 2027-06-01T12:0" in message, message
        done = "not scheduled again" if kind is Backwards else "skipped forward to 2027-06-01T12:0"
        assert done in message, message
