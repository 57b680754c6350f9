"""Plans without a database: what to create, update, delete, and how changes read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.jobfiles import SourcedJob
from runner.models import Job, Trigger
from runner.plan import Desired, Plan, Stored, Update, compute, diff, flatten, spec_hash


def desired(job_id: str, file: str = "a.yaml", line: int = 1, **fields: Any) -> Desired:
    fields.setdefault("target", "sampleapp.jobs:tick")
    fields.setdefault("trigger", Trigger(interval=60))
    return Desired.of(SourcedJob(Job(id=job_id, **fields), file, line, {}))


def stored(want: Desired, paused_override: bool | None = None, **moved: Any) -> Stored:
    return Stored(
        want.sourced.job.id,
        want.hash,
        moved.get("file", want.sourced.file),
        moved.get("line", want.sourced.line),
        paused_override,
    )


class SpecReader:
    """The old specs, counting which ids were asked for."""

    def __init__(self, specs: Mapping[str, dict[str, Any]]) -> None:
        self.specs = specs
        self.asked: list[list[str]] = []

    def __call__(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.asked.append(list(ids))
        return {i: self.specs[i] for i in ids}


def test_flatten_opens_one_level_of_the_nested_fields() -> None:
    spec = {
        "id": "j",
        "trigger": {"cron": "@daily", "timezone": "UTC"},
        "retries": {"max_attempts": 2},
        "kwargs": {"to": ["a"], "opts": {"deep": 1}},
        "labels": {"team": "x"},
        "args": [1, 2],
        "timeout": 30,
    }
    assert flatten(spec) == {
        "id": "j",
        "trigger.cron": "@daily",
        "trigger.timezone": "UTC",
        "retries.max_attempts": 2,
        "kwargs.to": ["a"],
        "kwargs.opts": {"deep": 1},  # only one level
        "labels.team": "x",
        "args": [1, 2],  # lists are compared whole
        "timeout": 30,
    }


def test_diff_is_sorted_and_shows_added_and_removed_fields_as_none() -> None:
    old = {"timeout": 30, "kwargs": {"b": 1, "a": 1}, "trigger": {"interval": 60}}
    new = {"kwargs": {"a": 2, "c": 3}, "trigger": {"interval": 60}, "description": "x"}
    changes = diff(old, new)
    assert list(changes) == ["description", "kwargs.a", "kwargs.b", "kwargs.c", "timeout"]
    assert changes == {
        "description": (None, "x"),
        "kwargs.a": (1, 2),
        "kwargs.b": (1, None),
        "kwargs.c": (None, 3),
        "timeout": (30, None),
    }
    assert diff(new, new) == {}


def test_spec_hash_ignores_key_order() -> None:
    assert spec_hash({"a": 1, "b": {"x": 1, "y": 2}}) == spec_hash({"b": {"y": 2, "x": 1}, "a": 1})
    assert spec_hash({"a": 1}) != spec_hash({"a": 2})


def test_compute_sorts_every_list_whatever_the_input_order() -> None:
    keep_b, keep_a = desired("keep-b"), desired("keep-a")
    old_z, old_y = desired("upd-z"), desired("upd-y")
    new_z = desired("upd-z", kwargs={"x": 1})
    new_y = desired("upd-y", timeout=5)
    wanted = [desired("new-2"), new_z, keep_b, desired("new-1"), new_y, keep_a]
    have = {
        s.id: s
        for s in [
            stored(keep_a),
            stored(old_z),
            stored(desired("gone-2")),
            stored(keep_b),
            stored(old_y),
            stored(desired("gone-1")),
        ]
    }
    reader = SpecReader({"upd-z": old_z.spec, "upd-y": old_y.spec})
    plan = compute(wanted, have, True, reader)
    assert plan.create == ["new-1", "new-2"]
    assert [u.id for u in plan.update] == ["upd-y", "upd-z"]
    assert plan.delete == ["gone-1", "gone-2"]
    assert plan.unchanged == ["keep-a", "keep-b"]
    assert plan.update[0].changes == {"timeout": (None, 5)}
    assert plan.update[1].changes == {"kwargs.x": (None, 1)}
    assert plan.changed
    # Old specs are read once, only for the jobs whose hash differs.
    assert [sorted(ids) for ids in reader.asked] == [["upd-y", "upd-z"]]


def test_no_prune_deletes_nothing() -> None:
    plan = compute([], {"old": stored(desired("old"))}, False, SpecReader({}))
    assert plan.delete == []
    assert not plan.changed


def test_unchanged_reads_no_old_spec_and_tracks_moves() -> None:
    a, b = desired("a", file="x.yaml", line=3), desired("b", file="x.yaml", line=9)
    reader = SpecReader({})
    have = {"a": stored(a), "b": stored(b, file="old.yaml", line=9)}
    plan = compute([a, b], have, True, reader)
    assert reader.asked == []
    assert plan.unchanged == ["a", "b"]
    assert plan.moved == ["b"]
    assert not plan.changed


def test_overrides_are_reported_not_changes() -> None:
    a = desired("a")
    plan = compute([a], {"a": stored(a, paused_override=True)}, True, SpecReader({}))
    assert plan.overridden == {"a": True}
    assert not plan.changed
    assert plan.text_lines() == [
        "! override a: paused by an operator (runner resume/pause to change)",
        "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged.",
    ]


def test_retrigger_only_for_trigger_and_zone_changes() -> None:
    assert Update("j", {"trigger.cron": ("a", "b")}).retrigger
    assert Update("j", {"timezone": ("UTC", "Europe/Berlin")}).retrigger
    assert not Update("j", {"kwargs.x": (1, 2)}).retrigger
    assert not Update("j", {"paused": (False, True), "retries.delay": (1, 2)}).retrigger


def test_text_lines_and_json() -> None:
    plan = Plan(
        create=["c"],
        update=[
            Update(
                "u",
                {
                    "description": (None, "two words"),
                    "kwargs.to": (["a"], ["a", "b"]),
                    "trigger.cron": ("@daily", "0 9 * * *"),
                    "timeout": (30, None),
                    "labels.team": ("", "x"),
                },
            )
        ],
        delete=["d"],
        unchanged=["k"],
    )
    assert plan.text_lines() == [
        "+ create c",
        '~ update u (description: (none) -> "two words", kwargs.to: ["a"] -> ["a", "b"], '
        'trigger.cron: @daily -> "0 9 * * *", timeout: 30 -> (none), labels.team: "" -> x)',
        "- delete d",
        "Plan: 1 to create, 1 to update, 1 to delete, 1 unchanged.",
    ]
    assert plan.as_json(True) == {
        "create": ["c"],
        "update": [
            {
                "id": "u",
                "changes": {
                    "description": [None, "two words"],
                    "kwargs.to": [["a"], ["a", "b"]],
                    "trigger.cron": ["@daily", "0 9 * * *"],
                    "timeout": [30, None],
                    "labels.team": ["", "x"],
                },
            }
        ],
        "delete": ["d"],
        "unchanged": ["k"],
        "runtime": [],
        "applied": True,
    }


def test_a_trigger_change_in_a_real_diff_is_flattened_and_retriggers() -> None:
    old = desired("j", trigger=Trigger(interval=60))
    new = desired("j", trigger=Trigger(interval=120, jitter=5))
    plan = compute([new], {"j": stored(old)}, True, SpecReader({"j": old.spec}))
    [update] = plan.update
    assert update.changes == {"trigger.interval": (60, 120), "trigger.jitter": (None, 5)}
    assert update.retrigger
