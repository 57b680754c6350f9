"""`serve`'s file set takes files unchanged since the last `apply` as recorded, holds applied
jobs as id, hash and position only, and reads full jobs again whenever a plan needs them.

Each test drives the file set as `serve` reconciles (refresh, decide, apply with `expanded`,
then `compact`) against a real store, and checks the plan and the stored specs against what
reading every file in full gives. A counter on `jobfiles.parse_file` shows which files were
read in full, so a test cannot pass by reading everything.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from runner import hotreload, reconcile, unchanged
from runner import validate as validating
from runner.fileset import FileSet
from runner.plan import Desired, Known, Plan
from runner.store import tables
from runner.store.engine import connect

A = """\
jobs:
  - id: report
    target: sampleapp.jobs:send_report
    kwargs: {recipients: [ops@example.com], subject: daily}
    trigger: {cron: "0 9 * * mon-fri", timezone: Europe/Berlin}
  - id: ticker
    target: sampleapp.jobs:tick
    kwargs: {label: a}
    trigger: {interval: 1h}
"""
B = """\
jobs:
  - id: sleeper
    target: sampleapp.jobs:tick
    trigger: {interval: 15m}
    paused: true
"""
IDS = ["report", "sleeper", "ticker"]


pytestmark = pytest.mark.usefixtures("sampleapp_only")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.d"
    path.mkdir()
    (path / "a.yaml").write_text(A, encoding="utf-8")
    (path / "b.yaml").write_text(B, encoding="utf-8")
    return path


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = connect(db_url)
    yield engine
    engine.dispose()


def serving(engine: Engine, folder: Path) -> FileSet:
    return FileSet([str(folder)], memo=lambda: unchanged.read(engine))


def reconciled(engine: Engine, files: FileSet) -> Plan:
    """One reconcile, as `serve` makes it."""
    files.refresh(None)
    decision = hotreload.decide(files)
    assert decision.blocking == [] and decision.broken == {}, decision.problems
    plan, _ = reconcile.apply(engine, decision.desired, prune=decision.prune, expand=files.expanded)
    files.compact()
    return plan


def stored_hashes(engine: Engine) -> dict[str, str]:
    t = tables.runner_jobs
    with engine.connect() as conn:
        return {row.id: row.spec_hash for row in conn.execute(select(t.c.id, t.c.spec_hash))}


def full_hashes(folder: Path) -> dict[str, str]:
    """The spec hashes of a full read of every file."""
    loaded, problems = validating.load_valid([str(folder)])
    assert problems == []
    return {s.job.id: Desired.of(s).hash for s in loaded.jobs}


def held(files: FileSet) -> dict[str, list[type]]:
    return {Path(f).name: sorted({type(w) for w in ws}, key=str) for f, ws in files.good.items()}


def test_a_start_on_applied_unchanged_files_reads_none_and_changes_nothing(
    engine: Engine, folder: Path, parsed: list[str]
) -> None:
    reconcile.apply_files(engine, [str(folder)])
    parsed.clear()
    files = serving(engine, folder)
    assert files.refresh(None) == []
    assert parsed == []
    assert held(files) == {"a.yaml": [Known], "b.yaml": [Known]}
    plan = reconciled(engine, files)
    assert not plan.changed and sorted(plan.unchanged) == IDS
    assert parsed == []
    assert stored_hashes(engine) == full_hashes(folder)


def test_a_changed_file_is_read_in_full_and_applied(
    engine: Engine, folder: Path, parsed: list[str]
) -> None:
    reconcile.apply_files(engine, [str(folder)])
    (folder / "a.yaml").write_text(A.replace("label: a", "label: b"), encoding="utf-8")
    parsed.clear()
    files = serving(engine, folder)
    plan = reconciled(engine, files)
    assert parsed == ["a.yaml"]
    assert [u.id for u in plan.update] == ["ticker"] and not plan.create and not plan.delete
    assert stored_hashes(engine) == full_hashes(folder)
    assert held(files) == {"a.yaml": [Known], "b.yaml": [Known]}, "compacted once applied"


def test_a_store_changed_by_someone_else_gets_the_held_version_back_in_full(
    engine: Engine, folder: Path, parsed: list[str]
) -> None:
    """The held jobs are id and hash only; the plan finds the store disagrees, and the held
    version's bytes are read again to write full specs, even though the file never changed."""
    reconcile.apply_files(engine, [str(folder)])
    files = serving(engine, folder)
    reconciled(engine, files)
    original = full_hashes(folder)
    other = folder.parent / "other"
    other.mkdir()
    (other / "b.yaml").write_text(B.replace("15m", "20m"), encoding="utf-8")
    reconcile.apply_files(engine, [str(other)])  # another checkout: prunes a.yaml's jobs
    assert set(stored_hashes(engine)) == {"sleeper"}
    parsed.clear()
    plan = reconciled(engine, files)
    assert sorted(parsed) == ["a.yaml", "b.yaml"]
    assert sorted(plan.create) == ["report", "ticker"]
    assert [u.id for u in plan.update] == ["sleeper"]
    assert stored_hashes(engine) == original


def test_a_first_start_reads_everything_then_holds_only_what_plans_need(
    engine: Engine, folder: Path, parsed: list[str]
) -> None:
    files = serving(engine, folder)
    plan = reconciled(engine, files)
    assert sorted(plan.create) == IDS and sorted(parsed) == ["a.yaml", "b.yaml"]
    assert held(files) == {"a.yaml": [Known], "b.yaml": [Known]}
    assert stored_hashes(engine) == full_hashes(folder)
    parsed.clear()
    assert not reconciled(engine, files).changed
    assert parsed == []


def test_a_broken_file_keeps_its_held_version_which_still_reads_in_full(
    engine: Engine, folder: Path, parsed: list[str]
) -> None:
    files = serving(engine, folder)
    reconciled(engine, files)
    (folder / "a.yaml").write_text(A.replace("interval: 1h", "interval: soon"), encoding="utf-8")
    other = folder.parent / "other"
    other.mkdir()
    (other / "b.yaml").write_text(B, encoding="utf-8")
    reconcile.apply_files(engine, [str(other)])  # the store loses a.yaml's jobs
    files.refresh(None)
    decision = hotreload.decide(files)
    assert list(decision.broken) == [str(folder / "a.yaml")]
    parsed.clear()
    plan, _ = reconcile.apply(engine, decision.desired, prune=False, expand=files.expanded)
    assert parsed == ["a.yaml"], "the last valid version, from the bytes held"
    assert sorted(plan.create) == ["report", "ticker"]
    (folder / "a.yaml").write_text(A, encoding="utf-8")
    assert stored_hashes(engine) == full_hashes(folder)


@pytest.fixture
def myapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    (root / "myapp").mkdir(parents=True)
    module = root / "myapp" / "__init__.py"
    module.write_text("def run() -> None:\n    pass\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp,myapp")
    yield module
    sys.modules.pop("myapp", None)


def test_a_recorded_target_that_now_fails_reads_the_file_in_full_and_locates_it(
    engine: Engine, folder: Path, parsed: list[str], myapp: Path
) -> None:
    (folder / "c.yaml").write_text(
        textwrap.dedent(
            """\
            jobs:
              - id: mine
                target: myapp:run
                trigger: {interval: 1h}
            """
        ),
        encoding="utf-8",
    )
    reconcile.apply_files(engine, [str(folder)])
    myapp.write_text("def other() -> None:\n    pass\n", encoding="utf-8")
    sys.modules.pop("myapp", None)
    parsed.clear()
    files = serving(engine, folder)
    problems = files.refresh(None)
    assert parsed == ["c.yaml"]
    assert [(Path(p.file).name, p.line, p.job, p.field) for p in problems] == [
        ("c.yaml", 3, "mine", "target")
    ], problems
    assert held(files) == {"a.yaml": [Known], "b.yaml": [Known]}
