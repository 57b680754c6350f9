"""The job model: documented defaults, shallow merging of a file's defaults, durations, zones."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from runner import triggers
from runner.durations import format_duration, parse_duration
from runner.jobfiles import SourcedJob, load, parse_file
from runner.models import Job, JobEntry, JobFields, Retries, Trigger, resolve
from runner.plan import Desired


def one_job(text: str) -> SourcedJob:
    jobs, problems = parse_file("f.yaml", text.encode())
    assert problems == []
    assert len(jobs) == 1
    return jobs[0]


def problems_of(text: str) -> list[str]:
    jobs, problems = parse_file("f.yaml", text.encode())
    assert jobs == []
    return [str(p) for p in problems]


MINIMAL = """\
jobs:
  - id: j
    target: sampleapp.jobs:tick
    trigger: {interval: 5m}
"""


def test_documented_defaults() -> None:
    job = one_job(MINIMAL).job
    assert job.misfire_grace_time == 600  # 10m, not APScheduler's 1 s
    assert job.coalesce is True
    assert job.max_instances == 1
    assert job.retries.max_attempts == 1
    assert job.timeout is None
    assert job.paused is False
    assert job.timezone == "UTC"
    assert job.zone == "UTC"
    assert job.args == []
    assert job.kwargs == {}
    assert job.labels == {}


def test_file_defaults_apply_shallowly() -> None:
    job = one_job(
        """\
        defaults:
          timezone: Europe/Berlin
          misfire_grace_time: 90s
          kwargs: {a: 1, b: 2}
          retries: {max_attempts: 3, delay: 5s}
          labels: {team: platform}
          coalesce: false
        jobs:
          - id: j
            target: sampleapp.jobs:tick
            trigger: {interval: 5m}
            kwargs: {c: 3}
            retries: {max_attempts: 2}
        """.replace("        ", "")
    ).job
    # A field the job sets replaces the default as a whole: no deep merge.
    assert job.kwargs == {"c": 3}
    assert job.retries == Retries(max_attempts=2)
    assert job.retries.delay == 10
    # Fields the job leaves out come from the file's defaults.
    assert job.timezone == "Europe/Berlin"
    assert job.misfire_grace_time == 90
    assert job.labels == {"team": "platform"}
    assert job.coalesce is False


def test_defaults_may_supply_target_and_trigger() -> None:
    job = one_job(
        "defaults:\n  target: sampleapp.jobs:tick\n  trigger: {cron: '@daily'}\njobs:\n  - id: j\n"
    ).job
    assert job.target == "sampleapp.jobs:tick"
    assert job.trigger.cron == "@daily"


def test_target_and_trigger_are_required() -> None:
    assert problems_of("jobs:\n  - id: j\n    target: sampleapp.jobs:tick\n") == [
        "f.yaml:2:5: job j: trigger is required"
    ]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(45, 45), ("45", 45), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800)],
)
def test_durations(written: object, seconds: int) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("bad", ["1m1h", "1h1h", "0s", 0, -5, True, 1.5, "1.5h", "soon", "", None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_durations_in_files_and_their_canonical_spelling() -> None:
    job = one_job(MINIMAL.replace("5m", "1h30m") + "    timeout: 2d\n").job
    assert job.trigger.interval == 5400
    assert job.timeout == 172800
    assert format_duration(5400) == "1h30m"
    assert format_duration(172800 + 90) == "2d1m30s"


def test_bad_duration_in_a_file_is_located() -> None:
    assert problems_of(MINIMAL.replace("5m", "5x")) == [
        "f.yaml:4:15: job j: trigger.interval: '5x' is not a duration; "
        "write e.g. 30s, 15m, 1h30m or 2d"
    ]


def test_zone_rules() -> None:
    assert one_job(MINIMAL).job.zone == "UTC"
    with_default = one_job("defaults:\n  timezone: Europe/Berlin\n" + MINIMAL)
    assert with_default.job.zone == "Europe/Berlin"
    own = one_job(MINIMAL.replace("{interval: 5m}", "{interval: 5m, timezone: Asia/Tokyo}"))
    assert own.job.zone == "Asia/Tokyo"  # the trigger's zone wins over the job's


def test_unknown_zone_is_an_error() -> None:
    [message] = problems_of(MINIMAL + "    timezone: Mars/Olympus\n")
    assert "unknown time zone 'Mars/Olympus'" in message


@pytest.fixture
def host_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("host_in_new_york")
def test_a_job_without_zone_runs_in_utc_whatever_the_host() -> None:
    assert time.localtime(0).tm_hour != 0  # the host zone really is not UTC
    job = one_job(MINIMAL.replace("{interval: 5m}", "{cron: '0 9 * * *'}")).job
    trigger = triggers.build(job)
    fire = trigger.get_next_fire_time(None, datetime(2026, 3, 2, 12, tzinfo=UTC))
    assert fire == datetime(2026, 3, 3, 9, tzinfo=UTC)
    assert fire.utcoffset().total_seconds() == 0


def test_variables_are_stored_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "resolved-secret")
    sourced = one_job(
        MINIMAL
        + '    kwargs: {token: "${API_TOKEN}", fallback: "${NOPE:-x}", price: "$$5"}\n'
        + '    args: ["${API_TOKEN}"]\n'
    )
    spec = Desired.of(sourced).spec
    assert spec["kwargs"] == {"token": "${API_TOKEN}", "fallback": "${NOPE:-x}", "price": "$$5"}
    assert spec["args"] == ["${API_TOKEN}"]
    assert "resolved-secret" not in repr(spec)


def test_canonical_spec_is_stable_and_omits_unset_optionals() -> None:
    a = Job(id="j", target="m:f", trigger=Trigger(interval=60), kwargs={"b": 1, "a": 2})
    b = Job(id="j", target="m:f", trigger=Trigger(interval=60), kwargs={"a": 2, "b": 1})
    assert a.canonical() == b.canonical()
    assert "timeout" not in a.canonical()
    assert "description" not in a.canonical()


def test_resolve_prefers_the_job_over_defaults() -> None:
    defaults = JobFields(target="m:f", timezone="Europe/Berlin", paused=True)
    entry = JobEntry(id="j", trigger=Trigger(cron="@hourly"), paused=False)
    job = resolve(entry, defaults)
    assert job.paused is False
    assert job.timezone == "Europe/Berlin"
    assert job.target == "m:f"


@pytest.mark.parametrize(
    "trigger",
    [
        {},
        {"cron": "@daily", "interval": 60},
        {"at": "2030-01-01T00:00:00Z", "start": "2029-01-01T00:00:00Z"},
        {"interval": 60, "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
    ],
)
def test_trigger_shape_errors(trigger: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Trigger.model_validate(trigger)


def test_unknown_keys_suggest_the_closest() -> None:
    [message] = problems_of(MINIMAL + "    max_instance: 2\n")
    assert message == (
        "f.yaml:5:5: job j: max_instance: unknown key 'max_instance'; did you mean 'max_instances'?"
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_leaves_the_garbage_collector_as_it_was(tmp_path: Path, enabled: bool) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text("jobs: [\n")
    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        loaded = load([str(tmp_path)])
        assert [s.job.id for s in loaded.jobs] == ["j"]
        assert len(loaded.problems) == 1
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()
