"""The unchanged-file shortcut of `apply`: it never hides an error and never changes a plan.

Each test brings the store to a state with a real apply, changes something (a byte, the
allowlist, the runner version, a file's presence, a job's home, an id, a target), and then
compares the outcome of `reconcile.apply_files` (which skips unchanged files) with a full
read of every file planned against the same store (`validate.load_valid` + `reconcile.apply`,
as `apply` worked before the shortcut). A counter on `jobfiles.parse_file` shows which files
were read in full, so a test cannot pass by reading everything.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner import reconcile, unchanged
from runner import validate as validating
from runner.errors import InvalidJobFiles
from runner.plan import Desired
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
  - id: once
    target: sampleapp.jobs:tick
    trigger: {at: "2030-01-01T09:00:00+01:00"}
"""


pytestmark = pytest.mark.usefixtures("sampleapp_only")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.d"
    path.mkdir()
    (path / "a.yaml").write_text(A, encoding="utf-8")
    (path / "b.yaml").write_text(B, encoding="utf-8")
    return path


Outcome = tuple[str, Any]


def shortcut(url: str, folder: Path, dry_run: bool = False) -> Outcome:
    engine = connect(url)
    try:
        plan, applied = reconcile.apply_files(engine, [str(folder)], dry_run=dry_run)
    except InvalidJobFiles as exc:
        return "invalid", [str(p) for p in exc.problems]
    finally:
        engine.dispose()
    return "plan", {**plan.as_json(applied), "moved": plan.moved}


def full(url: str, folder: Path, dry_run: bool = True) -> Outcome:
    """What apply gave before the shortcut: every file read and validated in full."""
    loaded, problems = validating.load_valid([str(folder)])
    if problems:
        return "invalid", [str(p) for p in problems]
    engine = connect(url)
    try:
        desired = [Desired.of(s) for s in loaded.jobs]
        plan, applied = reconcile.apply(engine, desired, dry_run=dry_run)
    finally:
        engine.dispose()
    return "plan", {**plan.as_json(applied), "moved": plan.moved}


def same_as_full(url: str, folder: Path, parsed: list[str]) -> tuple[Outcome, list[str]]:
    """The dry run and the apply through the shortcut both match a full read's plan; returns
    the outcome and the files the shortcut's dry run read in full."""
    expected = full(url, folder)
    parsed.clear()
    got = shortcut(url, folder, dry_run=True)
    read = list(parsed)
    assert got == expected
    if expected[0] == "plan":
        applied = shortcut(url, folder)
        assert applied[1] | {"applied": False} == expected[1]
        assert shortcut(url, folder, dry_run=True)[1]["create"] == []
    else:
        assert shortcut(url, folder) == expected
    return got, read


def applied(url: str, folder: Path) -> None:
    kind, plan = shortcut(url, folder)
    assert kind == "plan", plan


def edit(path: Path, change: Callable[[str], str]) -> None:
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")


def test_unchanged_files_are_not_read_again(db_url: str, folder: Path, parsed: list[str]) -> None:
    applied(db_url, folder)
    outcome, read = same_as_full(db_url, folder, parsed)
    assert read == []
    assert outcome[1]["unchanged"] == ["once", "report", "sleeper", "ticker"]


def test_one_changed_byte_reads_that_file(db_url: str, folder: Path, parsed: list[str]) -> None:
    applied(db_url, folder)
    edit(folder / "a.yaml", lambda t: t.replace("label: a", "label: b"))
    outcome, read = same_as_full(db_url, folder, parsed)
    assert read == ["a.yaml"]
    assert [u["id"] for u in outcome[1]["update"]] == ["ticker"]


def test_changed_allowlist_reads_every_file(
    db_url: str, folder: Path, parsed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    applied(db_url, folder)
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp,otherapp")
    _, read = same_as_full(db_url, folder, parsed)
    assert read == ["a.yaml", "b.yaml"]


def test_target_no_longer_allowed_is_reported_where_written(
    db_url: str, folder: Path, parsed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    applied(db_url, folder)
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "otherapp")
    outcome, _ = same_as_full(db_url, folder, parsed)
    assert outcome[0] == "invalid"
    assert (
        f"{folder / 'a.yaml'}:3:5: job report: target: module 'sampleapp.jobs' is not"
        in (outcome[1][0])
    )
    assert len(outcome[1]) == 4


def test_another_runner_version_reads_every_file(
    db_url: str, folder: Path, parsed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    applied(db_url, folder)
    real = unchanged._version
    monkeypatch.setattr(
        unchanged, "_version", lambda name: "99.0" if name == "runner" else real(name)
    )
    _, read = same_as_full(db_url, folder, parsed)
    assert read == ["a.yaml", "b.yaml"]


def test_deleted_file_prunes_its_jobs(db_url: str, folder: Path, parsed: list[str]) -> None:
    applied(db_url, folder)
    (folder / "b.yaml").unlink()
    outcome, read = same_as_full(db_url, folder, parsed)
    assert read == []
    assert outcome[1]["delete"] == ["once", "sleeper"]


def test_file_deleted_and_added_back(db_url: str, folder: Path, parsed: list[str]) -> None:
    applied(db_url, folder)
    saved = (folder / "b.yaml").read_text(encoding="utf-8")
    (folder / "b.yaml").unlink()
    applied(db_url, folder)
    (folder / "b.yaml").write_text(saved, encoding="utf-8")
    outcome, read = same_as_full(db_url, folder, parsed)
    assert read == ["b.yaml"]
    assert outcome[1]["create"] == ["once", "sleeper"]


def test_job_moved_between_files(db_url: str, folder: Path, parsed: list[str]) -> None:
    applied(db_url, folder)
    ticker = A[A.index("  - id: ticker") :]
    edit(folder / "a.yaml", lambda t: t.replace(ticker, ""))
    edit(folder / "b.yaml", lambda t: t + ticker)
    outcome, read = same_as_full(db_url, folder, parsed)
    assert sorted(read) == ["a.yaml", "b.yaml"]
    assert outcome[1]["moved"] == ["ticker"]
    assert outcome[1]["delete"] == []


def test_duplicate_id_in_a_changed_file_meets_an_unchanged_one(
    db_url: str, folder: Path, parsed: list[str]
) -> None:
    applied(db_url, folder)
    edit(folder / "b.yaml", lambda t: t.replace("id: once", "id: report"))
    outcome, read = same_as_full(db_url, folder, parsed)
    assert read == ["b.yaml"]
    assert outcome == (
        "invalid",
        [
            f"{folder / 'b.yaml'}:6:1: job report: id: duplicate id, first defined at "
            f"{folder / 'a.yaml'}:2"
        ],
    )


def test_broken_file_changes_nothing(db_url: str, folder: Path, parsed: list[str]) -> None:
    applied(db_url, folder)
    edit(folder / "a.yaml", lambda t: t.replace("interval: 1h", "interval: often"))
    outcome, _ = same_as_full(db_url, folder, parsed)
    assert outcome[0] == "invalid"
    assert outcome[1][0].startswith(f"{folder / 'a.yaml'}:9:15: job ticker: trigger.interval:")
    # Nothing was applied, and the memo still describes the last good version.
    edit(folder / "a.yaml", lambda t: t.replace("interval: often", "interval: 1h"))
    parsed.clear()
    assert shortcut(db_url, folder, dry_run=True)[1]["unchanged"] == [
        "once",
        "report",
        "sleeper",
        "ticker",
    ]
    assert parsed == []


def test_target_that_stops_binding_is_found_in_an_unchanged_file(
    db_url: str,
    tmp_path: Path,
    parsed: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recorded result never stands for the target check: imports are checked again."""
    module = tmp_path / "cachetargets.py"
    module.write_text("def work(label):\n    return label\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "cachetargets")
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "c.yaml").write_text(
        textwrap.dedent("""\
            jobs:
              - id: work
                target: cachetargets:work
                kwargs: {label: x}
                trigger: {interval: 1h}
            """),
        encoding="utf-8",
    )
    applied(db_url, jobs)
    module.write_text("def work():\n    return 1\n", encoding="utf-8")
    monkeypatch.delitem(sys.modules, "cachetargets")
    outcome, read = same_as_full(db_url, jobs, parsed)
    assert read == ["c.yaml"]
    assert outcome[0] == "invalid"
    assert outcome[1][0].startswith(f"{jobs / 'c.yaml'}:3:5: job work: target: arguments")


def test_store_changed_by_another_writer(db_url: str, folder: Path, parsed: list[str]) -> None:
    """The memo is not a copy of the store: a job changed behind its back is put right."""
    applied(db_url, folder)
    other = folder.parent / "other"
    other.mkdir()
    (other / "a.yaml").write_text(A.replace("label: a", "label: z"), encoding="utf-8")
    (other / "b.yaml").write_text(B, encoding="utf-8")
    full(db_url, other, dry_run=False)  # an apply that knows nothing of the memo
    outcome, read = same_as_full(db_url, folder, parsed)
    assert read == ["a.yaml"]
    assert [u["id"] for u in outcome[1]["update"]] == ["ticker"]
    assert sorted(outcome[1]["moved"]) == ["once", "report", "sleeper"]


def test_a_file_with_a_command_job_is_always_read_and_its_allowlist_checked(
    db_url: str, folder: Path, parsed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A command's check depends on RUNNER_ALLOWED_COMMANDS and the program on disk, which no
    # fingerprint covers: withdrawing the program must fail the next apply, shortcut or not.
    true = Path("/bin/true").resolve()
    monkeypatch.setenv("RUNNER_ALLOWED_COMMANDS", str(true))
    (folder / "c.yaml").write_text(
        f"jobs:\n  - id: cmd\n    command: [{true}]\n    trigger: {{interval: 1h}}\n",
        encoding="utf-8",
    )
    applied(db_url, folder)
    _, read = same_as_full(db_url, folder, parsed)
    assert read == ["c.yaml"]
    monkeypatch.delenv("RUNNER_ALLOWED_COMMANDS")
    outcome, _ = same_as_full(db_url, folder, parsed)
    assert outcome[0] == "invalid"
    assert f"{folder / 'c.yaml'}:3:" in outcome[1][0] and "RUNNER_ALLOWED_COMMANDS" in outcome[1][0]
