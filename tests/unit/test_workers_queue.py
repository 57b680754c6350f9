"""`queue:` on a job: validated, stored only when set, shown in the plan."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from test_plan import SpecReader, desired, stored

from runner import jobfiles
from runner.executors.procrastinate import queueing_lock
from runner.plan import compute


def _load(tmp_path: Path, body: str) -> jobfiles.Loaded:
    (tmp_path / "jobs.yaml").write_text(body)
    return jobfiles.load([str(tmp_path)])


def test_queue_is_known_and_validated(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        "jobs:\n"
        "  - {id: a, target: 'runner.tasks:prune_runs', trigger: {interval: 60}, queue: reports}\n"
        "  - {id: b, target: 'runner.tasks:prune_runs', trigger: {interval: 60}}\n",
    )
    assert not loaded.problems
    specs = {s.job.id: s.job.canonical() for s in loaded.jobs}
    assert specs["a"]["queue"] == "reports"
    assert "queue" not in specs["b"]  # unset means `default`; existing specs keep their hash
    bad = _load(
        tmp_path,
        "jobs:\n"
        "  - {id: a, target: 'runner.tasks:prune_runs', trigger: {interval: 60}, "
        "queue: 'no spaces'}\n",
    )
    assert [(p.job, p.field) for p in bad.problems] == [("a", "queue")]


def test_the_plan_shows_a_queue_change() -> None:
    old = desired("a")
    new = desired("a", queue="reports")
    plan = compute([new], {"a": stored(old)}, True, SpecReader({"a": old.spec}))
    assert plan.text_lines()[0] == "~ update a (queue: (none) -> reports)"


def test_queueing_lock_names_the_attempt() -> None:
    at = datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert queueing_lock("a", at, 2) == "a@2030-01-01T09:00:00+00:00#2"
