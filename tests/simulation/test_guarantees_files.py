"""Focused tier: what the job files can and cannot do to the schedule.

A vanished file removes its jobs only after the grace (editors save by renaming), and the
target allowlist admits a package and its submodules, never a package that merely shares
its prefix (`myapp` must not admit `myapp_evil`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner import fileset, targets
from runner.fileset import FileSet

from .harness import Sim, write_jobs

NOON = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


class Monotonic:
    """The file set's clock for the grace, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    clock = Monotonic()
    monkeypatch.setattr(fileset, "time", SimpleNamespace(monotonic=clock))
    return clock


def _job(job_id: str, target: str = "sampleapp.jobs:tick") -> dict[str, object]:
    return {"id": job_id, "target": target, "trigger": {"cron": "*/5 * * * *"}}


# --- the deleted-file grace -----------------------------------------------------------------
def test_a_vanished_file_removes_its_jobs_only_after_the_grace(
    sim_url: str, tmp_path: Path, monotonic: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    write_jobs(folder / "a.yaml", [_job("stays")])
    doomed = write_jobs(folder / "b.yaml", [_job("goes")])
    sim = Sim(sim_url, [folder], NOON)
    grace = sim.files.gone_grace
    try:
        assert grace >= 0.5, "serve's default grace"
        assert {j.id for j in sim.scheduler.store.get_all_jobs()} == {"stays", "goes"}
        kept_time = sim.scheduler.store.lookup_job("goes").next_run_time  # type: ignore[union-attr]
        # An editor saving by rename: gone, then back within the grace.
        text = doomed.read_text(encoding="utf-8")
        doomed.unlink()
        sim.apply()
        assert sim.files.removal_pending
        monotonic.now += grace / 2
        doomed.write_text(text, encoding="utf-8")
        sim.apply()
        assert not sim.files.removal_pending
        monotonic.now += grace * 2
        sim.apply()
        assert {j.id for j in sim.scheduler.store.get_all_jobs()} == {"stays", "goes"}
        back = sim.scheduler.store.lookup_job("goes")
        assert back is not None and back.next_run_time == kept_time
        # Gone for good: kept until the grace has passed, removed once it has.
        doomed.unlink()
        sim.apply()
        monotonic.now += grace - 0.01
        sim.apply()
        assert {j.id for j in sim.scheduler.store.get_all_jobs()} == {"stays", "goes"}
        assert sim.files.removal_pending
        monotonic.now += 0.01
        sim.apply()
        assert {j.id for j in sim.scheduler.store.get_all_jobs()} == {"stays"}
        assert not sim.files.removal_pending
    finally:
        sim.close()


def test_a_file_set_keeps_a_vanished_files_jobs_through_the_grace(
    tmp_path: Path, monotonic: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    first = write_jobs(tmp_path / "a.yaml", [_job("one"), _job("two")])
    write_jobs(tmp_path / "b.yaml", [_job("three")])
    files = FileSet([str(tmp_path)])
    assert files.refresh(None) == []
    assert sorted(d.sourced.job.id for d in files.desired()[0]) == ["one", "three", "two"]
    first.unlink()
    files.refresh(None)
    assert sorted(d.sourced.job.id for d in files.desired()[0]) == ["one", "three", "two"]
    monotonic.now += files.gone_grace
    files.refresh(None)
    assert [d.sourced.job.id for d in files.desired()[0]] == ["three"]


# --- the allowlist package boundary ----------------------------------------------------------
@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`myapp` (with a submodule) and `myapp_evil`, importable; only `myapp` is allowed."""
    root = tmp_path / "site"
    for name in ("myapp", "myapp_evil", "myapp/sub"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("def run() -> None:\n    pass\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "myapp")
    return root


@pytest.mark.parametrize(
    "target", ["myapp_evil:run", "myapp_evil.run", "myappx:run", "my:run", "runner.tasksx:run"]
)
def test_the_allowlist_refuses_a_package_that_only_shares_the_prefix(
    packages: Path, target: str
) -> None:
    prefixes = targets.allowed_prefixes()
    assert prefixes == ("runner.tasks", "myapp")
    with pytest.raises(targets.TargetError, match="is not allowed"):
        targets.check_allowed_name(target, prefixes)
    with pytest.raises(targets.TargetError, match="is not allowed"):
        targets.resolve(target, prefixes)


@pytest.mark.parametrize("target", ["myapp:run", "myapp.sub:run", "myapp.sub.run"])
def test_the_allowlist_admits_the_package_and_its_submodules(packages: Path, target: str) -> None:
    prefixes = targets.allowed_prefixes()
    targets.check_allowed_name(target, prefixes)
    assert callable(targets.resolve(target, prefixes))


def test_a_job_file_naming_a_lookalike_package_is_refused_and_applies_nothing(
    packages: Path, tmp_path: Path
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml", [_job("fine", "myapp.sub:run"), _job("evil", "myapp_evil:run")]
    )
    files = FileSet([str(path)])
    problems = files.refresh(None)
    assert [(p.job, p.field) for p in problems] == [("evil", "target")], problems
    assert "not allowed" in problems[0].message
    desired, blocked = files.desired()
    assert desired == [] and blocked, "a file with a refused target contributes no job"
