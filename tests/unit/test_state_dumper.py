"""StateDumper writes the states of many jobs cheaply; they load as `dumps` states load."""

from __future__ import annotations

import io
import pickle
import pickletools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.job import Job as SchedulerJob

from runner import jobstate, triggers
from runner.models import Job

NOW = datetime(2030, 3, 30, 23, 30, tzinfo=UTC)


def _job(**fields: Any) -> Job:
    values = {"id": "a", "target": "runner.tasks:heartbeat", "trigger": {"interval": 3600}}
    values.update(fields)
    return Job.model_validate(values)


JOBS = [
    _job(),
    _job(id="b", trigger={"cron": "5 4 * * *"}, timezone="Asia/Tokyo"),
    _job(id="c", trigger={"cron": "30 2 * * *"}, timezone="Europe/Berlin", coalesce=False),
    _job(id="d", trigger={"interval": 900, "start": "2026-01-01T00:00:07+00:00"}),
    _job(id="e", trigger={"at": "2031-01-01T09:00:00+01:00"}, misfire_grace_time=3600),
    _job(id="f", trigger={"interval": 3600, "jitter": 600}, max_instances=3),
    _job(id="g", paused=True, kwargs={"text": 'quote " comma , newline \n é ☃ \udcff'}),
    _job(id="tenant-" + "x" * 184, args=[1, 2.5, None, True, [], {}]),
    _job(id="h", kwargs={"big": "x" * 100_000}),  # past the fragment limit: plain dumps
    _job(id="i", trigger={"cron": "0 0 * * *", "end": "2040-01-01T00:00:00"}),
]


def _built(job: Job) -> tuple[Any, datetime | None]:
    local = NOW.astimezone(ZoneInfo(job.zone))
    trigger = triggers.build(job, now=local)
    first = None if job.paused else trigger.get_next_fire_time(None, local)
    return trigger, first


def _comparable(state: dict[str, Any]) -> list[tuple[str, Any]]:
    """The state with its trigger as its class, its own state and its next three fires
    (unless it draws them at random)."""
    trigger = state["trigger"]
    fires, previous = [], None
    for _ in range(0 if getattr(trigger, "jitter", None) else 3):
        previous = trigger.get_next_fire_time(previous, previous or NOW)
        fires.append(previous)
    shown = (type(trigger), trigger.__getstate__(), fires)
    return [(k, shown if k == "trigger" else v) for k, v in state.items()]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.id[:12])
def test_a_state_loads_as_the_dumps_state_loads(job: Job) -> None:
    trigger, first = _built(job)
    spec = job.canonical()
    blob = jobstate.StateDumper().state(job, spec, trigger, first)
    pickletools.dis(blob, out=io.StringIO())  # a well-formed pickle, memo references included
    expected = jobstate.loads(jobstate.dumps(jobstate.build_state(job, spec, trigger, first)))
    loaded = jobstate.loads(blob)
    assert list(loaded) == list(jobstate.STATE_KEYS) == list(expected)
    assert _comparable(loaded) == _comparable(expected)
    assert loaded["args"] == (job.id, spec)


def test_jobs_sharing_a_trigger_share_its_opcodes_and_each_keeps_its_own_rest() -> None:
    dumper = jobstate.StateDumper()
    trigger, first = _built(JOBS[1])
    blobs = {}
    for n in range(50):
        job = _job(
            id=f"t{n}",
            trigger={"cron": "5 4 * * *"},
            timezone="Asia/Tokyo",
            kwargs={"n": n},
            misfire_grace_time=60 + n % 3,
            coalesce=n % 2 == 0,
        )
        blobs[job.id] = (job, dumper.state(job, job.canonical(), trigger, first))
    for job_id, (job, blob) in blobs.items():
        spec = job.canonical()
        expected = jobstate.dumps(jobstate.build_state(job, spec, trigger, first))
        assert _comparable(pickle.loads(blob)) == _comparable(pickle.loads(expected)), job_id


def test_apscheduler_restores_its_job_from_the_state() -> None:
    job = JOBS[2]
    trigger, first = _built(job)
    state = jobstate.loads(jobstate.StateDumper().state(job, job.canonical(), trigger, first))
    restored = SchedulerJob.__new__(SchedulerJob)
    restored.__setstate__(state)
    assert restored.id == restored.name == job.id
    assert restored.func_ref == jobstate.ENTRY_POINT
    assert restored.next_run_time == first
    assert restored.coalesce is False
    assert str(restored.trigger) == str(trigger)
    later = restored.trigger.get_next_fire_time(first, first + timedelta(seconds=1))
    assert later == trigger.get_next_fire_time(first, first + timedelta(seconds=1))


@pytest.mark.parametrize("text", ["", "a", "x" * 255, "x" * 256, "é" * 200, "\udcff ☃"])
def test_a_text_is_written_as_the_pickler_writes_it(text: str) -> None:
    pickled = jobstate._body(pickle.dumps(text, pickle.HIGHEST_PROTOCOL))
    assert pickled == jobstate._text(text) + b"\x94"  # the pickler memoizes it; we do not
