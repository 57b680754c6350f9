"""Each job is validated once: the resolved Job is what validating it again would give, and a
trigger or retry policy shared by many jobs is validated once without changing any report."""

from __future__ import annotations

from typing import Any

import pytest

from runner import jobfiles
from runner.jobfiles import parse_file
from runner.models import Job, JobEntry, JobFields, Retries, Trigger, resolve


def validated_again(job: Job) -> Job:
    """What `resolve` made before: the merged values validated as a Job."""
    return Job(**{name: getattr(job, name) for name in job.model_fields_set})


CASES: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({"id": "a", "target": "m:f", "trigger": {"interval": 60}}, None),
    (
        {"id": "b", "trigger": {"cron": "@daily"}, "kwargs": {"x": [1, 2.5, None]}},
        {"target": "m:f", "timezone": "Europe/Berlin", "retries": {"max_attempts": 3}},
    ),
    (
        {"id": "c", "command": ["/bin/true", "x"], "trigger": {"interval": "15m"}},
        {"target": "m:f", "args": [1], "kwargs": {"k": 1}, "labels": {"team": "ops"}},
    ),
    (
        {
            "id": "d",
            "target": "m:g",
            "args": ["${X}"],
            "trigger": {"at": "2030-01-01T00:00:00Z"},
            "paused": True,
            "timeout": "1h",
            "queue": "reports",
            "description": "once",
            "max_instances": 3,
            "coalesce": False,
            "misfire_grace_time": 30,
        },
        {"paused": False, "labels": {"a": "b"}},
    ),
]


@pytest.mark.parametrize(("entry", "defaults"), CASES)
def test_a_resolved_job_is_the_job_validation_would_give(
    entry: dict[str, Any], defaults: dict[str, Any] | None
) -> None:
    job = resolve(
        JobEntry.model_validate(entry),
        JobFields.model_validate(defaults) if defaults is not None else None,
    )
    again = validated_again(job)
    assert job == again
    assert job.model_fields_set == again.model_fields_set
    assert job.canonical() == again.canonical()
    assert repr(job) == repr(again)
    with pytest.raises(Exception, match="frozen"):
        job.id = "other"  # type: ignore[misc]


def test_resolved_jobs_do_not_share_mutable_defaults() -> None:
    entry = JobEntry.model_validate({"id": "a", "target": "m:f", "trigger": {"interval": 60}})
    one, two = resolve(entry, None), resolve(entry, None)
    assert one.args == [] and one.args is not two.args
    assert one.kwargs is not two.kwargs and one.labels is not two.labels


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "a", "trigger": {"interval": 60}}, r"target is required \(or command\)"),
        ({"id": "a", "target": "m:f"}, "trigger is required"),
    ],
)
def test_what_only_the_combination_breaks_is_still_refused(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(JobEntry.model_validate(entry), None)


def _file(*triggers: str) -> bytes:
    lines = ["jobs:"]
    for number, trigger in enumerate(triggers):
        lines += [
            f"  - id: j{number}",
            "    target: sampleapp.jobs:tick",
            f"    trigger: {trigger}",
        ]
    return ("\n".join(lines) + "\n").encode()


def test_jobs_with_the_same_trigger_share_one_validated_trigger() -> None:
    jobs, problems = parse_file("f.yaml", _file("{cron: '5 4 * * *'}", "{cron: '5 4 * * *'}"))
    assert problems == []
    assert jobs[0].job.trigger is jobs[1].job.trigger
    assert jobs[0].job.trigger == Trigger(cron="5 4 * * *")


def test_retry_policies_are_shared_the_same_way() -> None:
    text = b"""\
jobs:
  - {id: a, target: sampleapp.jobs:tick, trigger: {interval: 60}, retries: {max_attempts: 2}}
  - {id: b, target: sampleapp.jobs:tick, trigger: {interval: 60}, retries: {max_attempts: 2}}
"""
    jobs, problems = parse_file("f.yaml", text)
    assert problems == []
    assert jobs[0].job.retries is jobs[1].job.retries
    assert jobs[0].job.retries == Retries(max_attempts=2)


def test_a_trigger_is_known_by_its_exact_values() -> None:
    """`1`, `true` and `1.0` compare equal in Python but are different values to validate."""
    for written, got in (("true", "a boolean"), ("1.0", "1.0")):
        jobs, problems = parse_file("f.yaml", _file("{interval: 1}", f"{{interval: {written}}}"))
        assert [s.job.id for s in jobs] == ["j0"]
        assert [(p.line, p.job, p.field) for p in problems] == [(7, "j1", "trigger.interval")]
        assert problems[0].message.endswith(f"got {got}"), problems
    jobs, problems = parse_file("f.yaml", _file("{interval: 60, jitter: 1}", "{interval: 60}"))
    assert problems == [] and jobs[0].job.trigger.jitter == 1 and jobs[1].job.trigger.jitter is None


@pytest.mark.parametrize("warm", [False, True])
def test_an_invalid_trigger_reads_the_same_whatever_was_read_before(warm: bool) -> None:
    """Reports do not depend on which triggers the process has already seen."""
    broken = _file("{cron: '5 4 * * *', interval: 60}", "{cron: '61 4 * * *'}", "{at: nope}")
    if warm:
        parse_file("w.yaml", _file("{cron: '5 4 * * *'}", "{interval: 60}"))
    else:
        jobfiles._known_parts.clear()
    _, problems = parse_file("f.yaml", broken)
    assert [(p.line, p.job, p.field) for p in problems] == [
        (4, "j0", "trigger"),
        (7, "j1", "trigger.cron"),
        (10, "j2", "trigger.at"),
    ], problems
    assert "give exactly one of cron, interval or at (found cron and interval)" in str(problems[0])


def test_a_known_trigger_in_an_invalid_job_reports_only_the_job_field() -> None:
    parse_file("w.yaml", _file("{interval: 60}"))
    text = b"""\
jobs:
  - {id: a, target: sampleapp.jobs:tick, trigger: {interval: 60}, timeout: -1, colour: red}
"""
    jobs, problems = parse_file("f.yaml", text)
    assert jobs == []
    assert [(p.line, p.field, p.message.split(";")[0]) for p in problems] == [
        (2, "timeout", "-1: a duration must be positive"),
        (2, "colour", "unknown key 'colour'"),
    ]


def test_the_cache_of_known_parts_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobfiles, "MAX_KNOWN_PARTS", 3)
    jobfiles._known_parts.clear()
    jobs, problems = parse_file("f.yaml", _file(*(f"{{interval: {n}}}" for n in range(1, 8))))
    assert problems == [] and [s.job.trigger.interval for s in jobs] == list(range(1, 8))
    assert len(jobfiles._known_parts) <= 3
