"""Build the APScheduler trigger a job's `trigger:` describes, and preview its fire times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from runner.cron import CrontabTrigger
from runner.models import Job

# APScheduler triggers are untyped; this alias keeps that fact in one place.
AnyTrigger = Any


def _localize(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def build(job: Job, now: datetime | None = None) -> AnyTrigger:
    """The trigger to store; `now` anchors an unstarted interval (first fire: now + interval)."""
    spec = job.trigger
    zone = ZoneInfo(job.zone)
    start = _localize(spec.start, zone)
    end = _localize(spec.end, zone)
    if spec.cron is not None:
        return CrontabTrigger(
            spec.cron, job.zone, start_date=start, end_date=end, jitter=spec.jitter
        )
    if spec.interval is not None:
        if start is None:
            # In UTC: aware local + timedelta is wall-clock arithmetic across a DST change.
            start = (now or datetime.now(UTC)).astimezone(UTC) + timedelta(seconds=spec.interval)
        return IntervalTrigger(
            seconds=spec.interval, start_date=start, end_date=end, timezone=zone, jitter=spec.jitter
        )
    assert spec.at is not None
    return DateTrigger(run_date=_localize(spec.at, zone), timezone=zone)


def describe(job: Job) -> dict[str, Any]:
    """The trigger as JSON for `validate` and `jobs` output."""
    spec = job.trigger.model_dump(mode="json", exclude_none=True)
    spec["timezone"] = job.zone
    return spec


def next_fire_times(trigger: AnyTrigger, count: int, after: datetime) -> list[datetime]:
    """The next `count` fire times strictly after `after`, ignoring jitter, in the trigger's
    zone.

    The same `get_next_fire_time` chain that serve's scheduling pass follows, so what
    `validate --next`, the API and serve see cannot differ.  A trigger that ever answers a
    time not after the previous one ends the list (the pass logs and skips such a job).
    """
    times: list[datetime] = []
    zone = getattr(trigger, "timezone", UTC)
    previous: datetime | None = None
    now = after.astimezone(UTC) + timedelta(microseconds=1)
    jitter = getattr(trigger, "jitter", None)
    if jitter is not None:
        trigger.jitter = None
    try:
        while len(times) < count:
            fire = trigger.get_next_fire_time(previous, now)
            if fire is None:
                break
            fire = fire.astimezone(UTC)
            if fire < now or (previous is not None and fire <= previous):
                break
            times.append(fire.astimezone(zone))
            previous = now = fire
    finally:
        if jitter is not None:
            trigger.jitter = jitter
    return times
