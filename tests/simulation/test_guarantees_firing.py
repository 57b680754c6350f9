"""Focused tier: what the scheduling pass promises about each fire, one guarantee per test.

Each test here fails when the guarantee it names is broken: misfire grace at its edge,
coalesce on and off, `max_instances` at the limit, jitter and start/end taken from the YAML
into the trigger, and a stored row that cannot be loaded (skipped, logged, kept).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from runner.execute import Status
from runner.runtime import SKIP_REASON
from runner.scheduler import CHUNK
from runner.store import tables

from .harness import Sim, write_jobs

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
NOON = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def _job(job_id: str, trigger: Mapping[str, object], **fields: object) -> dict[str, object]:
    return {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": trigger, **fields}


def _by_fire(sim: Sim) -> dict[tuple[str, datetime], dict[str, object]]:
    return {(r["job_id"], r["scheduled_at"]): r for r in sim.rows()}


# --- misfire grace ------------------------------------------------------------------------
def test_misfire_grace_runs_a_fire_exactly_at_the_grace_and_misses_it_just_past(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [_job("graced", {"cron": "* * * * *"}, misfire_grace_time="30s", coalesce=False)],
    )
    sim = Sim(sim_url, [path], NOON - SECOND)
    try:
        assert sim.next_run_time() == NOON
        sim.clock.set(NOON + 30 * SECOND)  # late by exactly the grace: runs
        sim.run_pass()
        sim.clock.set(NOON + MINUTE + 30 * SECOND + timedelta(milliseconds=1))  # just past it
        sim.run_pass()
        handed = [(h.job_id, h.scheduled_at) for h in sim.executions.handed]
        rows = _by_fire(sim)
    finally:
        sim.close()
    assert handed == [("graced", NOON)]
    assert rows[("graced", NOON)]["status"] == Status.RUNNING
    missed = rows[("graced", NOON + MINUTE)]
    assert missed["status"] == Status.MISSED
    assert "misfire grace 30s" in str(missed["error"]), missed
    assert len(rows) == 2


# --- coalesce -----------------------------------------------------------------------------
@pytest.mark.parametrize("coalesce", [True, False])
def test_coalesce_runs_once_after_a_gap_and_without_it_every_fire_runs(
    sim_url: str, tmp_path: Path, coalesce: bool
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [_job("gap", {"cron": "* * * * *"}, misfire_grace_time="10m", coalesce=coalesce)],
    )
    sim = Sim(sim_url, [path], NOON - SECOND)
    try:
        sim.clock.set(NOON + 4 * MINUTE + 5 * SECOND)  # the pass was away for four fires
        sim.run_pass()
        handed = [h.scheduled_at for h in sim.executions.handed]
        rows = _by_fire(sim)
        after = sim.next_run_time()
    finally:
        sim.close()
    fires = [NOON + n * MINUTE for n in range(5)]
    assert sorted(t for _, t in rows) == fires, "every fire of the gap is recorded"
    assert after == NOON + 5 * MINUTE
    if coalesce:
        assert handed == [fires[-1]]
        for moment in fires[:-1]:
            row = rows[("gap", moment)]
            assert row["status"] == Status.MISSED
            assert f"coalesced into the run scheduled at {fires[-1].isoformat()}" in str(
                row["error"]
            )
        assert rows[("gap", fires[-1])]["status"] == Status.RUNNING
    else:
        assert handed == fires, "each fire runs, oldest first"
        assert {rows[("gap", t)]["status"] for t in fires} == {Status.RUNNING}


# --- max_instances ------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2])
def test_max_instances_runs_below_the_limit_and_skips_at_it(
    sim_url: str, tmp_path: Path, limit: int
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [
            _job("busy", {"cron": "* * * * *"}, max_instances=limit, coalesce=False),
            # Decided in the same passes, after the busy one: never held up by its skip.
            _job("free", {"cron": "* * * * *"}, coalesce=False),
        ],
    )
    sim = Sim(sim_url, [path], NOON - SECOND)
    try:
        sim.executions.going["busy"] = limit - 1  # one below the limit: the fire runs
        sim.clock.set(NOON)
        sim.run_pass()
        sim.executions.going["busy"] = limit  # at the limit: skipped, and recorded as such
        sim.clock.set(NOON + MINUTE)
        sim.run_pass()
        sim.executions.going["busy"] = limit + 1  # above it (a retry in flight): skipped too
        sim.clock.set(NOON + 2 * MINUTE)
        sim.run_pass()
        handed = [h.scheduled_at for h in sim.executions.handed if h.job_id == "busy"]
        free = [h.scheduled_at for h in sim.executions.handed if h.job_id == "free"]
        rows = _by_fire(sim)
    finally:
        sim.close()
    assert handed == [NOON]
    assert free == [NOON + n * MINUTE for n in range(3)]
    assert rows[("busy", NOON)]["status"] == Status.RUNNING
    for moment in (NOON + MINUTE, NOON + 2 * MINUTE):
        row = rows[("busy", moment)]
        assert row["status"] == Status.SKIPPED
        assert row["error"] == SKIP_REASON


def test_a_pass_with_more_jobs_due_than_one_chunk_hands_every_one_over(
    sim_url: str, tmp_path: Path
) -> None:
    count = CHUNK * 2 + 7
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [_job(f"job{n:04d}", {"cron": "* * * * *"}) for n in range(count)],
    )
    sim = Sim(sim_url, [path], NOON - SECOND)
    try:
        sim.clock.set(NOON)
        sim.run_pass()
        handed = sorted(h.job_id for h in sim.executions.handed)
        rows = sim.rows()
    finally:
        sim.close()
    assert handed == [f"job{n:04d}" for n in range(count)]
    assert len(rows) == count
    assert {r["status"] for r in rows} == {Status.RUNNING}


# --- jitter, start and end ----------------------------------------------------------------
def test_cron_jitter_start_and_end_from_the_file_shape_the_fires(
    sim_url: str, tmp_path: Path
) -> None:
    # In Berlin (UTC+2 in June): 14:10 local is 12:10 UTC.
    trigger = {
        "cron": "* * * * *",
        "jitter": "20s",
        "start": "2027-06-01T14:10:00",
        "end": "2027-06-01T15:10:00",
    }
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [_job("jittered", trigger, coalesce=False)],
        timezone="Europe/Berlin",
    )
    sim = Sim(sim_url, [path], NOON)
    try:
        sim.run_until(NOON + 3 * 60 * MINUTE)
        fires = [h.scheduled_at for h in sim.executions.handed]
        lags = [(h.at - h.scheduled_at).total_seconds() for h in sim.executions.handed]
        rows = sim.rows()
    finally:
        sim.close()
    assert len(fires) == 61, "12:10 to 13:10 UTC, each minute once"
    nominal = [f.replace(second=0, microsecond=0) for f in fires]
    assert nominal == [NOON + (10 + n) * MINUTE for n in range(61)], "start and end, in Berlin"
    delays = [(f - n).total_seconds() for f, n in zip(fires, nominal, strict=True)]
    assert all(0 <= d <= 20 for d in delays), delays
    assert len({round(d, 3) for d in delays}) > 30, "each fire has its own delay"
    assert max(delays) > 10, "the delays spread over the jitter window"
    assert lags == [0.0] * 61, "each fire handed over at its (jittered) time"
    assert [r["scheduled_at"] for r in rows] == fires


def test_interval_jitter_from_the_file_delays_each_fire_within_its_bound(
    sim_url: str, tmp_path: Path
) -> None:
    trigger = {"interval": "5m", "jitter": "40s", "start": "2027-06-01T12:00:00+00:00"}
    path = write_jobs(tmp_path / "jobs.yaml", [_job("every5", trigger, coalesce=False)])
    sim = Sim(sim_url, [path], NOON - SECOND)
    try:
        sim.run_until(NOON + 5 * 60 * MINUTE)
        fires = [h.scheduled_at for h in sim.executions.handed]
    finally:
        sim.close()
    # APScheduler 3's interval jitter delays each fire after the previous (jittered) one.
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
    assert len(fires) > 50
    assert 0 <= (fires[0] - NOON).total_seconds() <= 40
    assert all(300 <= g <= 340 for g in gaps), gaps
    assert len({round(g, 3) for g in gaps}) > 30, "jitter is applied"


# --- a row that cannot be loaded ----------------------------------------------------------
def test_a_stored_row_that_cannot_be_loaded_is_skipped_logged_and_kept(
    sim_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [_job("good", {"cron": "* * * * *"}), _job("broken", {"cron": "* * * * *"})],
    )
    first = Sim(sim_url, [path], NOON - SECOND)
    first.stop()
    aps = tables.apscheduler_jobs
    with first.engine.begin() as conn:
        conn.execute(update(aps).where(aps.c.id == "broken").values(job_state=b"not a job"))
    caplog.set_level(logging.ERROR, logger="runner.jobstore")
    sim = Sim(sim_url, [path], NOON - SECOND)
    try:
        sim.run_until(NOON + 10 * MINUTE)
        sim.scheduler.flush()
        sim.apply()  # a reload with the files unchanged: the row is still not deleted
        sim.run_until(NOON + 12 * MINUTE)
        sim.scheduler.flush()
        handed = {h.job_id for h in sim.executions.handed}
        count = len(sim.executions.handed)
        with sim.engine.connect() as conn:
            kept = conn.execute(select(aps.c.job_state).where(aps.c.id == "broken")).scalar()
    finally:
        sim.close()
    assert handed == {"good"}
    assert count == 13, "the good job runs on as if nothing happened"
    assert kept == b"not a job", "the unloadable row is left in place"
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("broken" in m and "cannot load its stored row" in m for m in logged), logged
