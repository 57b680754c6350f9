"""The real scheduling pass on a virtual clock against cronsim: every fire, exactly once.

40 expressions in 8 zones (Europe and America at 01:00/02:00 local, Havana and Santiago at
midnight, Lord Howe's 30-minute shift, Cairo at midnight too, Sydney in the south):

* through all of 2027, the clock moving two hours per pass (each pass catches up on the
  fires of its two hours, as after a pause); expressions that fire more than once a day run
  through the week either side of each of their zone's clock changes instead of all year (the
  rest of the year repeats the same days, and cost two thirds of the year's fires);
* on every night of 2027 that changes the clock, plus dense expressions (every minute,
  every 5 seconds, ...), the clock jumping to each next run time, so every fire is handed
  over on time, through the jobs' `start`/`end` windows: three hours either side of the
  change, 90 minutes for the every-minute job, ten for the every-5-seconds one.

Each job's rows in `runner_runs` must be exactly cronsim's fires: none missing, none
doubled, none extra, no `missed` row, handed over in order.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner.execute import Status

from .expected import cron_fires, transitions
from .harness import Sim, write_jobs

ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Havana",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Africa/Cairo",
)

YEAR_EXPRESSIONS = (
    # fixed local times: Debian's DST rules (a skipped time runs after the jump, a repeated
    # one only the first time)
    "30 2 * * *",
    "0 2 * * *",
    "0 3 * * *",
    "0 0 * * *",
    "59 23 * * *",
    "30 1 * * *",
    "0 1 * * *",
    "45 2 * * *",
    "5,35 2 * * *",
    "0 2-3 * * *",
    "1 1 * * *",
    "30 0 * * *",
    "0 12 * * sun",
    "0 2 * * 0",
    "0 0 L * *",
    "0 2 * * 5L",
    "15 2 1-7 * mon",
    "0 0-23/6 * * *",
    "30 2 * * 1-5",
    "0 9 * * mon-fri",
    "@daily",
    "@weekly",
    "@monthly",
    "0 0 */4 * *",
    # wildcard or stepped hour/minute, and 6 fields: they follow the wall clock
    "0 */2 * * *",
    "45 */3 * * sun",
    "0 */6 * * *",
    "*/30 2 * * *",
    "*/20 1 * * *",
    "0 * * * sun",
    "30 * * * sun",
    "*/15 0-3 * * sun",
    "0 0 2 * * *",
    "0 30 2 * * *",
    "0 */30 0-3 * * sun",
    "30 45 */4 * * sun",
    "0 0 */12 * * *",
    "0 0 0 * * *",
    "*/10 2 * * sun",
    "0 1-3 * * sun",
)

EVERY_MINUTE = "* * * * *"
DENSE_EXPRESSIONS = (
    "*/5 * * * *",
    "*/30 * * * *",
    "@hourly",
    "15 * * * *",
    "0,30 0-4 * * *",
)
SECONDS_EXPRESSION = "*/5 * * * * *"

SEVERAL_A_DAY = frozenset(
    {
        "0 */2 * * *",
        "0 0-23/6 * * *",
        "0 */6 * * *",
        "0 * * * sun",
        "30 * * * sun",
        "*/20 1 * * *",
        "*/15 0-3 * * sun",
        "*/30 2 * * *",
        "0 2-3 * * *",
        "0 0 */12 * * *",
        "5,35 2 * * *",
        "45 */3 * * sun",
        "0 */30 0-3 * * sun",
    }
)
"""Year expressions served only in the weeks around the clock changes (`AROUND`)."""

YEAR_START = datetime(2026, 12, 31, 23, 0, 30, tzinfo=UTC)
YEAR_END = datetime(2028, 1, 1, 1, 0, tzinfo=UTC)
STEP = timedelta(hours=2)
AROUND = timedelta(days=7)
"""How much of the year either side of each clock change the `SEVERAL_A_DAY` jobs serve."""
NIGHT = timedelta(hours=3)
"""How much of each clock-change night is served, either side of the change."""
MINUTES_NIGHT = timedelta(minutes=90)
"""The same for the every-minute job: the skipped or repeated hour and half an hour around."""

Expected = dict[str, tuple[str, str, datetime, datetime]]


def _job(job_id: str, expression: str, zone: str, window: tuple[datetime, datetime] | None):
    trigger: dict[str, object] = {"cron": expression}
    if window is not None:
        trigger["start"], trigger["end"] = (moment.isoformat() for moment in window)
    return {
        "id": job_id,
        "target": "sampleapp.jobs:tick",
        "timezone": zone,
        "trigger": trigger,
        # Late fires run, in turn: the year test's passes catch up on two hours at a time.
        "misfire_grace_time": "1d",
        "coalesce": False,
    }


def _year_jobs() -> tuple[list[dict[str, object]], Expected]:
    jobs, expected = [], {}
    for zone in ZONES:
        changes = transitions(zone, 2027)
        assert len(changes) == 2, (zone, changes)  # every zone's two changes are served
        for expression in YEAR_EXPRESSIONS:
            spans: list[tuple[datetime, datetime] | None] = [None]
            if expression in SEVERAL_A_DAY:
                spans = [(change - AROUND, change + AROUND) for change in changes]
            for span in spans:
                job_id = f"y{len(jobs):04d}"
                jobs.append(_job(job_id, expression, zone, span))
                expected[job_id] = (expression, zone, *(span or (YEAR_START, YEAR_END)))
    return jobs, expected


def _night_jobs() -> tuple[list[dict[str, object]], Expected, datetime, datetime]:
    jobs, expected = [], {}
    changes = []
    for zone in ZONES:
        for change in transitions(zone, 2027):
            changes.append(change)
            windows = [(e, change - NIGHT, change + NIGHT) for e in YEAR_EXPRESSIONS]
            windows += [(e, change - NIGHT, change + NIGHT) for e in DENSE_EXPRESSIONS]
            # The densest two serve less of the night: most of its passes are theirs.
            windows.append((EVERY_MINUTE, change - MINUTES_NIGHT, change + MINUTES_NIGHT))
            ten = timedelta(minutes=10)
            windows.append((SECONDS_EXPRESSION, change - ten, change + ten))
            for expression, start, end in windows:
                job_id = f"n{len(jobs):04d}"
                jobs.append(_job(job_id, expression, zone, (start, end)))
                expected[job_id] = (expression, zone, start, end)
    assert len(changes) >= 2 * len(ZONES) - 2, changes  # no zone lost its DST unnoticed
    return jobs, expected, min(changes) - 2 * NIGHT, max(changes) + 2 * NIGHT


def _check(sim: Sim, expected: Expected, *, on_time: bool) -> None:
    rows = sim.rows()
    statuses = {row["status"] for row in rows}
    assert statuses == {Status.RUNNING}, f"rows other than claims: {statuses}"
    by_job: dict[str, list[datetime]] = defaultdict(list)
    for row in rows:
        by_job[row["job_id"]].append(row["scheduled_at"])
    total = 0
    for job_id, (expression, zone, start, end) in expected.items():
        want = cron_fires(expression, zone, start, end)
        got = by_job.get(job_id, [])
        if got != want:
            local = ZoneInfo(zone)
            extra = sorted(set(got) - set(want))[:3]
            lost = sorted(set(want) - set(got))[:3]
            raise AssertionError(
                f"{expression!r} in {zone} from {start}: {len(got)} runs, cron lists "
                f"{len(want)}; extra {[t.astimezone(local).isoformat() for t in extra]}, "
                f"missing {[t.astimezone(local).isoformat() for t in lost]}, "
                f"doubled {len(got) - len(set(got))}"
            )
        total += len(want)
    handed = sim.executions.handed
    assert total > 0
    assert len(handed) == total == len(rows)
    by_job_handed: dict[str, list[datetime]] = defaultdict(list)
    for item in handed:
        by_job_handed[item.job_id].append(item.scheduled_at)
        late = item.at - item.scheduled_at
        assert timedelta(0) <= late <= (timedelta(0) if on_time else STEP), item
    assert by_job_handed == by_job, "a job's fires were handed over out of order"


@pytest.mark.slow
@pytest.mark.timeout(600)  # CPU-bound: minutes on a machine whose cores are busy
def test_a_year_in_eight_zones_runs_every_cron_fire_exactly_once(
    sqlite_sim_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    jobs, expected = _year_jobs()
    assert set(YEAR_EXPRESSIONS) >= SEVERAL_A_DAY
    assert len(jobs) == (40 + len(SEVERAL_A_DAY)) * 8
    sim = Sim(sqlite_sim_url, [write_jobs(tmp_path / "year.yaml", jobs)], YEAR_START)
    try:
        sim.run_until(YEAR_END, step=STEP)
        _check(sim, expected, on_time=False)
    finally:
        sim.close()


@pytest.mark.slow
@pytest.mark.timeout(600)  # CPU-bound: minutes on a machine whose cores are busy
def test_every_clock_change_night_of_the_year_fires_on_time(
    sim_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    jobs, expected, first, last = _night_jobs()
    sim = Sim(sim_url, [write_jobs(tmp_path / "nights.yaml", jobs)], first)
    try:
        sim.run_until(last)
        _check(sim, expected, on_time=True)
    finally:
        sim.close()
