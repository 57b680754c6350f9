"""Focused tier: what the job store holds in memory, and when a change overrides it.

The store keeps the later of two next run times only while the trigger is the same (the
fires before it were decided here); a new trigger brings its own next run time, even when
the job is held in memory and the old one is later. A job that fired stays held for a
minute after its last use (README, "Memory and passes"), and is let go after that.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner import reconcile

from .harness import Sim, write_jobs

NOON = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _allow_sampleapp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def _cron(job_id: str, cron: str) -> dict[str, object]:
    return {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": {"cron": cron}}


def _fires(sim: Sim, job_id: str) -> list[datetime]:
    return [h.scheduled_at.astimezone(UTC) for h in sim.executions.handed if h.job_id == job_id]


def _reconcile_as_serve_does(sim: Sim) -> list[str]:
    """`Server.reconcile`: apply the files, then reload only the jobs the apply touched (the
    harness's `apply` reloads everything, a path that reads every row anew)."""
    sim.files.refresh(None)
    desired, problems = sim.files.desired()
    assert not problems, problems
    plan, _ = reconcile.apply(sim.engine, desired, now=sim.clock())
    touched = [*plan.create, *(u.id for u in plan.update), *plan.delete]
    sim.scheduler.refresh(ids=touched)
    return touched


def test_a_held_job_given_a_sooner_schedule_runs_on_it(sim_url: str, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    write_jobs(jobs, [_cron("report", "0 12 * * *")])
    sim = Sim(sim_url, [jobs], NOON - timedelta(seconds=30))
    try:
        sim.run_until(NOON)
        assert _fires(sim, "report") == [NOON]
        held = sim.scheduler.store.lookup_job("report")
        assert held is not None and held.next_run_time == NOON + timedelta(days=1)
        assert sim.scheduler.store.held() == 1, "the job that just fired is held"
        # Daily at noon becomes every five minutes: the next fire is 12:05, not tomorrow.
        sim.clock.set(NOON + timedelta(minutes=1))
        write_jobs(jobs, [_cron("report", "*/5 * * * *")])
        assert _reconcile_as_serve_does(sim) == ["report"]
        assert sim.next_run_time() == NOON + timedelta(minutes=5)
        sim.run_until(NOON + timedelta(minutes=30))
        assert _fires(sim, "report") == [NOON + timedelta(minutes=m) for m in range(0, 31, 5)]
        assert sim.next_run_time() == NOON + timedelta(minutes=35)
    finally:
        sim.stop()


def test_a_fired_job_is_let_go_only_after_its_keep_time(sim_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.yaml", [_cron("tick", "*/5 * * * *")])
    sim = Sim(sim_url, [jobs], NOON - timedelta(seconds=30))
    store = sim.scheduler.store
    try:
        assert store.keep_for == 60.0, "a minute, as the README says"
        sim.run_until(NOON)
        assert _fires(sim, "tick") == [NOON]
        sim.scheduler.flush()
        assert store.held() == 1, "used a moment ago: kept although its progress is written"
        store.keep_for = 0.0
        sim.scheduler.flush()
        assert store.held() == 0, "not used within the keep time: let go"
        sim.run_until(NOON + timedelta(minutes=5))
        assert _fires(sim, "tick") == [NOON, NOON + timedelta(minutes=5)]
    finally:
        sim.stop()
