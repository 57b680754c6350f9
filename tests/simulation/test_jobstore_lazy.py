"""Focused tier: the job store holds only what is due, and stays right about everything else.

Each test lets the store drop every job it is not using (`keep_for = 0`, a write of next run
times after each stretch of passes), so every fire goes through loading the job's row again:
changes made by another process (an apply, a pause) reach the schedule, a row that cannot be
unpickled is skipped and kept, and every fire is still handed over exactly once.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from runner import overrides, reconcile
from runner.fileset import FileSet
from runner.store import tables
from runner.store.engine import connect

from .harness import Sim, write_jobs

NOON = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


def _cron(job_id: str, cron: str) -> dict[str, object]:
    return {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": {"cron": cron}}


def _fires(sim: Sim, job_id: str, after: datetime | None = None) -> list[datetime]:
    return [
        h.scheduled_at.astimezone(UTC)
        for h in sim.executions.handed
        if h.job_id == job_id and (after is None or h.scheduled_at > after)
    ]


def _minutes(start: datetime, end: datetime, every: int) -> list[datetime]:
    """Fire times of `*/every * * * *` in (start, end]."""
    moment = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    found = []
    while moment <= end:
        if moment.minute % every == 0:
            found.append(moment)
        moment += timedelta(minutes=1)
    return found


def _run_dropping(sim: Sim, end: datetime, stretch: timedelta = timedelta(minutes=10)) -> None:
    """Run to `end`, writing next run times and dropping idle jobs after every stretch."""
    while sim.clock.now < end:
        sim.run_until(min(sim.clock.now + stretch, end))
        sim.scheduler.flush()


def _apply_elsewhere(url: str, folder: Path, now: datetime) -> list[str]:
    """What another process's `runner apply` does; returns the ids it touched."""
    engine = connect(url)
    try:
        files = FileSet([str(folder)])
        files.refresh()
        desired, problems = files.desired()
        assert not problems, problems
        plan, _ = reconcile.apply(engine, desired, now=now)
        return [*plan.create, *(u.id for u in plan.update), *plan.delete]
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def _allow_sampleapp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def test_changes_made_elsewhere_reach_jobs_not_held(sim_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    jobs = folder / "jobs.yaml"
    write_jobs(jobs, [_cron("edited", "*/5 * * * *"), _cron("paused", "*/5 * * * *")])
    write_jobs(folder / "gone.yaml", [_cron("removed", "*/5 * * * *")])
    sim = Sim(sim_url, [folder], NOON)
    sim.scheduler.store.keep_for = 0.0
    try:
        changed_at = NOON + timedelta(minutes=30)
        _run_dropping(sim, changed_at)
        assert sim.scheduler.store.held() == 0, "idle jobs are let go once written"
        # Another process: a new trigger, a new job, a deleted file, an operator's pause.
        write_jobs(jobs, [_cron("edited", "*/7 * * * *"), _cron("paused", "*/5 * * * *")])
        write_jobs(folder / "new.yaml", [_cron("added", "*/3 * * * *")])
        (folder / "gone.yaml").unlink()
        _apply_elsewhere(sim_url, folder, changed_at)
        engine = connect(sim_url)
        try:
            assert overrides.set_paused(engine, "paused", True, now=changed_at)
        finally:
            engine.dispose()
        sim.scheduler.refresh()  # as serve's change loop does on the notification
        end = NOON + timedelta(hours=2)
        _run_dropping(sim, end)

        assert _fires(sim, "edited", changed_at) == _minutes(changed_at, end, 7)
        assert _fires(sim, "added", changed_at) == _minutes(changed_at, end, 3)
        assert _fires(sim, "paused", changed_at) == []
        assert _fires(sim, "removed", changed_at) == []
        assert _fires(sim, "removed") == _minutes(NOON - timedelta(minutes=1), changed_at, 5)
        assert sim.scheduler.store.count() == 3
        assert sim.scheduler.store.paused("paused")
    finally:
        sim.stop()


def test_a_row_that_cannot_be_loaded_is_skipped_and_kept(
    sim_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml", [_cron("healthy", "*/5 * * * *"), _cron("broken", "*/5 * * * *")]
    )
    sim = Sim(sim_url, [path], NOON)
    sim.scheduler.store.keep_for = 0.0
    aps = tables.apscheduler_jobs
    garbage = pickle.dumps(["not", "a", "job state"])
    try:
        broken_at = NOON + timedelta(minutes=12)
        _run_dropping(sim, broken_at)
        with sim.engine.begin() as conn:
            conn.execute(update(aps).where(aps.c.id == "broken").values(job_state=garbage))
        end = NOON + timedelta(hours=1)
        with caplog.at_level(logging.ERROR, logger="runner.jobstore"):
            _run_dropping(sim, end)

        assert _fires(sim, "broken", broken_at) == []
        assert _fires(sim, "healthy", broken_at) == _minutes(broken_at, end, 5)
        assert sum("job broken: cannot load its stored row" in m for m in caplog.messages) == 1
        with sim.engine.connect() as conn:
            kept = conn.execute(select(aps.c.job_state).where(aps.c.id == "broken")).scalar()
        assert kept == garbage, "the row is left in place, never deleted"
        assert sim.scheduler.store.lookup_job("broken") is None
        assert sim.scheduler.store.count() == 1
    finally:
        sim.stop()


def test_one_changed_job_among_many_is_reloaded_alone(sim_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    many = [_cron(f"idle-{n:03d}", f"{n % 60} 3 1 1 *") for n in range(300)]
    write_jobs(folder / "many.yaml", many)
    sim = Sim(sim_url, [folder], NOON)
    sim.scheduler.store.keep_for = 0.0
    try:
        sim.run_until(NOON + timedelta(minutes=1))
        sim.scheduler.flush()
        assert sim.scheduler.store.held() == 0
        changed = [*many[:150], _cron("idle-150", "*/5 * * * *"), *many[151:]]
        write_jobs(folder / "many.yaml", changed)
        touched = _apply_elsewhere(sim_url, folder, sim.clock())
        assert touched == ["idle-150"]
        sim.scheduler.refresh(ids=touched)  # as serve does after its own apply
        end = NOON + timedelta(minutes=31)
        sim.run_until(end)

        assert _fires(sim, "idle-150") == _minutes(NOON + timedelta(minutes=1), end, 5)
        assert {h.job_id for h in sim.executions.handed} == {"idle-150"}
        assert sim.scheduler.store.held() == 1, "only the job that came due was loaded"
    finally:
        sim.stop()


def test_every_fire_once_while_jobs_are_dropped_and_loaded_again(
    sim_url: str, tmp_path: Path
) -> None:
    jobs = [_cron(f"every-{n}", f"*/{n} * * * *") for n in (1, 2, 3, 5, 7, 11)]
    path = write_jobs(tmp_path / "jobs.yaml", jobs)
    sim = Sim(sim_url, [path], NOON)
    sim.scheduler.store.keep_for = 0.0
    try:
        end = NOON + timedelta(hours=3)
        _run_dropping(sim, end, stretch=timedelta(minutes=4))
        counts = Counter((h.job_id, h.scheduled_at) for h in sim.executions.handed)
        assert max(counts.values()) == 1, "no fire handed over twice"
        for n in (1, 2, 3, 5, 7, 11):
            start = NOON - timedelta(minutes=1)
            assert _fires(sim, f"every-{n}") == _minutes(start, end, n), n
    finally:
        sim.stop()
