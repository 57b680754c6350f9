"""What `triggers.build` hands APScheduler: start/end offsets and an unstarted interval's anchor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from runner import triggers
from runner.models import Job


def _job(trigger: dict[str, object], timezone: str = "Europe/Berlin") -> Job:
    return Job.model_validate(
        {"id": "j", "target": "runner.tasks:heartbeat", "trigger": trigger, "timezone": timezone}
    )


def test_a_start_with_its_own_offset_keeps_it_whatever_the_job_zone() -> None:
    # 06:00 UTC is 07:00 in Berlin: the offset written in the file wins over the job's zone.
    job = _job({"interval": "1h", "start": "2026-01-10T06:00:00+00:00"})
    trigger = triggers.build(job)
    first = trigger.get_next_fire_time(None, datetime(2026, 1, 1, tzinfo=UTC))
    assert first == datetime(2026, 1, 10, 6, tzinfo=UTC)


def test_a_start_without_offset_is_read_in_the_job_zone() -> None:
    job = _job({"interval": "1h", "start": "2026-01-10T06:00:00"})
    trigger = triggers.build(job)
    first = trigger.get_next_fire_time(None, datetime(2026, 1, 1, tzinfo=UTC))
    assert first == datetime(2026, 1, 10, 5, tzinfo=UTC)  # 06:00 Berlin


def test_an_end_with_its_own_offset_keeps_it() -> None:
    job = _job({"cron": "0 * * * *", "end": "2026-01-10T06:00:00+00:00"})
    trigger = triggers.build(job)
    last = datetime(2026, 1, 10, 6, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, last - timedelta(minutes=30)) == last
    assert trigger.get_next_fire_time(last, last + timedelta(seconds=1)) is None


def test_an_unstarted_interval_first_fires_one_interval_after_now() -> None:
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the Berlin spring-forward night
    trigger = triggers.build(_job({"interval": "90m"}), now=now)
    assert trigger.start_date == now + timedelta(minutes=90)
    assert trigger.get_next_fire_time(None, now) == now + timedelta(minutes=90)


def test_describe_shows_what_the_file_wrote_and_the_zone_nothing_else() -> None:
    job = _job({"cron": "0 9 * * mon-fri", "jitter": "30s"})
    assert triggers.describe(job) == {
        "cron": "0 9 * * mon-fri",
        "jitter": 30,
        "timezone": "Europe/Berlin",
    }


class _AnswersThePast:
    """A misbehaving trigger: always an hour before the time it is asked about."""

    timezone = UTC

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime:
        return now - timedelta(hours=1)


def test_next_fire_times_stop_at_a_trigger_that_answers_before_the_time_asked() -> None:
    after = datetime(2027, 1, 1, tzinfo=UTC)
    assert triggers.next_fire_times(cast(Any, _AnswersThePast()), 3, after) == []
