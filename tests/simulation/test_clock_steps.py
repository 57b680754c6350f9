"""Clock steps and downtime on the real scheduling pass: nothing twice, nothing lost silently.

An NTP correction can step the host clock back or forward; a server can be down across a
DST change. Lateness is measured in elapsed (UTC) time, never on the local wall clock.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner.execute import Status

from .expected import cron_fires
from .harness import Sim, write_jobs

MINUTES = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def _allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def _job(job_id: str, cron: str, **fields: object) -> dict[str, object]:
    return {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": {"cron": cron}, **fields}


def test_clock_stepped_back_an_hour_runs_no_fire_twice(sim_url: str, tmp_path: Path) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [_job("five", "*/5 * * * *"), _job("seconds", "*/20 * * * * *")],
        timezone="Europe/Berlin",
    )
    start = datetime(2027, 6, 1, 12, 0, 1, tzinfo=UTC)
    url = sim_url
    sim = Sim(url, [path], start)
    sim.run_for(30 * MINUTES, tick=timedelta(seconds=5))
    sim.clock.step(-3600)  # NTP steps the clock back by an hour
    sim.run_for(40 * MINUTES, tick=timedelta(seconds=5))
    sim.apply()  # a reload while the clock is behind keeps every next run time
    sim.run_for(40 * MINUTES, tick=timedelta(seconds=5))
    sim.stop()
    # A restart while the clock is still behind: what the first process claimed stays claimed.
    again = Sim(url, [path], sim.clock.now)
    try:
        again.run_for(10 * MINUTES, tick=timedelta(seconds=5))
        rows = again.rows()
    finally:
        again.close()
    handed = Counter((h.job_id, h.scheduled_at) for h in sim.executions.handed)
    handed.update((h.job_id, h.scheduled_at) for h in again.executions.handed)
    assert handed and max(handed.values()) == 1, "a fire was handed over twice"
    # The clock reads start + 30 min - 1 h + 90 min = start + 60 min at the end.
    end = again.clock.now
    assert end == start + 60 * MINUTES
    for job_id, cron in (("five", "*/5 * * * *"), ("seconds", "*/20 * * * * *")):
        want = cron_fires(cron, "Europe/Berlin", start, end)
        got = [r["scheduled_at"] for r in rows if r["job_id"] == job_id]
        assert got == want, job_id
        assert {r["status"] for r in rows if r["job_id"] == job_id} == {Status.RUNNING}


def test_clock_stepped_forward_an_hour_follows_misfire_grace_and_coalesce(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [
            _job("coalesced", "*/5 * * * *", misfire_grace_time="10m", coalesce=True),
            _job("each", "*/5 * * * *", misfire_grace_time="30m", coalesce=False),
        ],
    )
    start = datetime(2027, 6, 1, 12, 0, 30, tzinfo=UTC)
    sim = Sim(sim_url, [path], start)
    try:
        sim.run_for(10 * MINUTES, tick=timedelta(seconds=10))
        before = len(sim.executions.handed)
        sim.clock.step(3600)
        sim.run_pass()
        jumped = sim.executions.handed[before:]
        rows = {(r["job_id"], r["scheduled_at"]): r for r in sim.rows()}
    finally:
        sim.close()
    base = datetime(2027, 6, 1, 12, 10, tzinfo=UTC)
    skipped = [base + 5 * n * MINUTES for n in range(1, 13)]  # 12:15 ... 13:10
    now = start + 70 * MINUTES
    for job_id in ("coalesced", "each"):
        for moment in skipped:  # every fire jumped over is recorded, run or not
            assert (job_id, moment) in rows, (job_id, moment)
    ran = {(h.job_id, h.scheduled_at) for h in jumped}
    # coalesce: of the fires within 10 minutes, only the last runs; the rest are missed.
    assert [t for j, t in sorted(ran) if j == "coalesced"] == [skipped[-1]]
    for moment in skipped[:-1]:
        row = rows[("coalesced", moment)]
        assert row["status"] == Status.MISSED
        reason = "coalesced" if now - moment <= 10 * MINUTES else "misfire grace"
        assert reason in row["error"], row
    # no coalesce: every fire within 30 minutes runs, in order; older ones are missed.
    within = [t for t in skipped if now - t <= 30 * MINUTES]
    assert [t for j, t in sorted(ran) if j == "each"] == within
    assert [h.scheduled_at for h in jumped if h.job_id == "each"] == within
    for moment in skipped:
        if moment not in within:
            assert rows[("each", moment)]["status"] == Status.MISSED


def test_downtime_across_the_fall_back_is_measured_in_elapsed_time(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [
            _job("tens", "*/10 * * * *", misfire_grace_time="30m", coalesce=False),
            _job("fixed", "30 2 * * *"),
        ],
        timezone="Europe/Berlin",
    )
    url = sim_url
    # Down at 02:31 CEST (00:31Z), back at 02:40 CET (01:40Z): 69 minutes later, though the
    # wall clock reads only nine minutes on.
    start = datetime(2027, 10, 30, 23, 55, 30, tzinfo=UTC)
    down, back = (
        datetime(2027, 10, 31, 0, 31, tzinfo=UTC),
        datetime(2027, 10, 31, 1, 40, tzinfo=UTC),
    )
    first = Sim(url, [path], start)
    first.run_until(down)
    first.stop()
    second = Sim(url, [path], back)
    try:
        second.run_pass()
        second.run_until(back + 30 * MINUTES)
        rows = {(r["job_id"], r["scheduled_at"]): r for r in second.rows()}
    finally:
        second.close()
    tens = cron_fires("*/10 * * * *", "Europe/Berlin", start, back + 30 * MINUTES)
    assert [t for j, t in sorted(rows) if j == "tens"] == tens
    for moment in tens:
        row = rows[("tens", moment)]
        late = back - moment
        if down < moment < back and late > 30 * MINUTES:
            assert row["status"] == Status.MISSED, (moment, row)
        else:
            assert row["status"] == Status.RUNNING, (moment, row)
    # 02:30 ran once, the first time; the repeated 02:30 is no fire and no missed row.
    assert [t for j, t in sorted(rows) if j == "fixed"] == [
        datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    ]


def test_interval_jobs_count_elapsed_time_across_both_changes(sim_url: str, tmp_path: Path) -> None:
    # start is local (naive: read in the job's zone), the interval elapsed time.
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [
            {
                "id": "every-10m",
                "target": "sampleapp.jobs:tick",
                "trigger": {"interval": "10m", "start": "2027-10-31T01:05:00"},
            },
            {
                "id": "every-7m-spring",
                "target": "sampleapp.jobs:tick",
                "trigger": {
                    "interval": "7m",
                    "start": "2027-03-28T01:01:00",
                    "end": "2027-03-28T06:00:00",
                },
            },
        ],
        timezone="Europe/Berlin",
    )
    sim = Sim(sim_url, [path], datetime(2027, 3, 27, 23, 0, 30, tzinfo=UTC))
    try:
        sim.run_until(datetime(2027, 3, 28, 4, 0, tzinfo=UTC))
        sim.clock.set(datetime(2027, 10, 30, 22, 0, 30, tzinfo=UTC))
        sim.run_until(datetime(2027, 10, 31, 4, 0, tzinfo=UTC))
        rows = sim.rows()
    finally:
        sim.close()
    spring_start = datetime(2027, 3, 28, 0, 1, tzinfo=UTC)  # 01:01 CET
    fall_start = datetime(2027, 10, 30, 23, 5, tzinfo=UTC)  # 01:05 CEST
    spring = [r["scheduled_at"] for r in rows if r["job_id"] == "every-7m-spring"]
    fall = [r["scheduled_at"] for r in rows if r["job_id"] == "every-10m"]
    spring_until = datetime(2027, 3, 28, 4, 0, tzinfo=UTC)  # 06:00 CEST, its end
    assert spring == [
        spring_start + n * timedelta(minutes=7)
        for n in range(int((spring_until - spring_start) / timedelta(minutes=7)) + 1)
    ]
    assert fall == [
        fall_start + n * timedelta(minutes=10)
        for n in range(
            int((datetime(2027, 10, 31, 4, 0, tzinfo=UTC) - fall_start) / (10 * MINUTES)) + 1
        )
    ]
