"""Focused tier: a fire claimed ahead runs with its job as it is at its time, or not at all;
claims given back are decided again; history keeps what it recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import insert

from runner import history
from runner.execute import Fire, Outcome, Status
from runner.scheduler import RunnerScheduler
from runner.store import tables

from .harness import FLUSH_EVERY, NODE, Sim, write_jobs

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
NOON = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def _job(cron: str = "* * * * *", **fields: object) -> dict[str, object]:
    return {"id": "soon", "target": "sampleapp.jobs:tick", "trigger": {"cron": cron}, **fields}


def _claimed_ahead(sim_url: str, path: Path) -> tuple[Sim, Fire]:
    """A sim whose pass claims fires 0.3 s ahead, having just claimed the noon fire."""
    sim = Sim(sim_url, [path.parent], NOON - 10 * SECOND)
    scheduler = RunnerScheduler(
        sim.engine,
        cast(Any, sim.executions),
        NODE,
        lookahead=0.3,
        clock=sim.clock,
        flush_every=FLUSH_EVERY,
    )
    scheduler.store.start(scheduler, "default")
    sim.scheduler = scheduler
    sim.clock.set(NOON - timedelta(seconds=0.1))
    sim.run_pass()
    assert [(h.job_id, h.scheduled_at) for h in sim.executions.handed] == [("soon", NOON)]
    job = scheduler.store.lookup_job("soon")
    assert job is not None and job.next_run_time == NOON + MINUTE
    return sim, Fire("soon", job.args[1], NOON)


def test_a_fire_claimed_ahead_runs_as_claimed_when_nothing_changed(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job()])
    sim, fire = _claimed_ahead(sim_url, path)
    try:
        assert sim.scheduler._vet(fire) is fire
    finally:
        sim.close()


def test_a_fire_claimed_ahead_runs_with_the_jobs_new_arguments(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job()])
    sim, fire = _claimed_ahead(sim_url, path)
    try:
        write_jobs(path, [_job(kwargs={"label": "changed"})])
        sim.apply()
        vetted = sim.scheduler._vet(fire)
    finally:
        sim.close()
    assert vetted is not None and vetted is not fire
    assert (vetted.job_id, vetted.scheduled_at) == ("soon", NOON)
    assert vetted.spec["kwargs"] == {"label": "changed"}


@pytest.mark.parametrize(
    "change",
    [
        {"paused": True},
        {"cron": "*/2 * * * *"},
        None,  # deleted
    ],
    ids=["paused", "rescheduled", "deleted"],
)
def test_a_fire_claimed_ahead_does_not_run_once_its_job_changed_so(
    sim_url: str, tmp_path: Path, change: dict[str, object] | None
) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job()])
    write_jobs(tmp_path / "other.yaml", [{**_job("30 * * * *"), "id": "other"}])
    sim, fire = _claimed_ahead(sim_url, path)
    try:
        if change is None:
            path.unlink()
            sim.files.gone_grace = 0.0
        elif "cron" in change:
            write_jobs(path, [_job(str(change["cron"]))])
        else:
            write_jobs(path, [_job(paused=True)])
        sim.apply()
        assert sim.scheduler._vet(fire) is None
        # Given back at shutdown: nothing to redo for it.
        sim.scheduler.rewind([fire])
        job = sim.scheduler.store.lookup_job("soon")
    finally:
        sim.close()
    if change is None:
        assert job is None
    elif "paused" in change:
        assert job is not None and job.next_run_time is None, "a paused job was rewound"


def test_a_fire_claimed_ahead_and_given_back_is_decided_again(sim_url: str, tmp_path: Path) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job()])
    sim, fire = _claimed_ahead(sim_url, path)
    try:
        sim.scheduler.rewind([fire])  # shutdown before its time
        job = sim.scheduler.store.lookup_job("soon")
        assert job is not None and job.next_run_time == NOON
    finally:
        sim.close()


# --- history keeps what it recorded ---------------------------------------------------------
def test_a_mark_never_overwrites_a_recorded_fire_and_release_only_drops_unstarted_claims(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job()])
    sim = Sim(sim_url, [path], NOON, real_runtime=True)
    writer = sim.writer
    assert writer is not None
    try:
        with sim.engine.begin() as conn:
            won = history.claim(conn, [("soon", NOON), ("soon", NOON + MINUTE)], "a")
            again = history.claim(conn, [("soon", NOON), ("soon", NOON + 2 * MINUTE)], "b")
            history.mark(
                conn,
                [
                    history.Mark("soon", NOON, Status.MISSED, "late"),
                    history.Mark("soon", NOON + 3 * MINUTE, Status.SKIPPED, "busy"),
                ],
                "b",
            )
        writer.started(Fire("soon", {}, NOON), 1, NOON)
        writer.release(Fire("soon", {}, NOON))  # started: kept
        writer.release(Fire("soon", {}, NOON + MINUTE))  # never started: given back
        rows = {(r["scheduled_at"], r["attempt"]): r for r in sim.rows()}
    finally:
        sim.close()
    assert won == {("soon", NOON), ("soon", NOON + MINUTE)}
    assert again == {("soon", NOON + 2 * MINUTE)}, "a fire is claimed once"
    assert rows[(NOON, 1)]["status"] == Status.RUNNING
    assert rows[(NOON, 1)]["node"] == NODE, "the node that started it"
    assert rows[(NOON, 1)]["started_at"] is not None
    assert (NOON + MINUTE, 1) not in rows
    assert rows[(NOON + 2 * MINUTE, 1)]["node"] == "b"
    skipped = rows[(NOON + 3 * MINUTE, 1)]
    assert (skipped["status"], skipped["error"]) == (Status.SKIPPED, "busy")
    assert skipped["finished_at"] is not None
    assert len(rows) == 3


def test_prune_drops_finished_runs_before_the_cutoff_and_keeps_running_ones(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job()])
    sim = Sim(sim_url, [path], NOON)
    runs = tables.runner_runs
    try:
        with sim.engine.begin() as conn:
            conn.execute(
                insert(runs),
                [
                    {
                        "job_id": "soon",
                        "scheduled_at": NOON + n * MINUTE,
                        "attempt": 1,
                        "status": Status.RUNNING if n % 2 else Status.SUCCEEDED,
                        "node": "n",
                    }
                    for n in range(6)
                ],
            )
        pruned = history.prune(sim.engine, NOON + 4 * MINUTE)
        left = [(r["scheduled_at"], r["status"]) for r in sim.rows()]
    finally:
        sim.close()
    assert pruned == 2
    assert left == [
        (NOON + MINUTE, Status.RUNNING),
        (NOON + 3 * MINUTE, Status.RUNNING),
        (NOON + 4 * MINUTE, Status.SUCCEEDED),
        (NOON + 5 * MINUTE, Status.RUNNING),
    ]


@pytest.mark.parametrize("together", [True, False], ids=["one-batch", "two-batches"])
def test_an_attempts_end_is_recorded_as_it_ended(
    sim_url: str, tmp_path: Path, together: bool
) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job()])
    sim = Sim(sim_url, [path], NOON, real_runtime=True)
    writer = sim.writer
    assert writer is not None
    fire = Fire("soon", {}, NOON)
    try:
        with sim.engine.begin() as conn:
            assert history.claim(conn, [("soon", NOON)], NODE) == {("soon", NOON)}
        writer.started(fire, 1, NOON + SECOND)
        if not together:
            assert writer.drain(30.0)
        writer.finished(
            fire, 1, NOON + 3 * SECOND, 2.5, Outcome(Status.FAILED, "it broke", "Traceback...")
        )
        [row] = sim.rows()
    finally:
        sim.close()
    assert history.as_utc(row["started_at"]) == NOON + SECOND
    assert history.as_utc(row["finished_at"]) == NOON + 3 * SECOND
    assert row["duration"] == 2.5
    assert (row["status"], row["error"], row["traceback"]) == (
        Status.FAILED,
        "it broke",
        "Traceback...",
    )
