"""The job files as serve sees them: what must never lead to an apply that deletes.

A fresh file set that has never seen a job file refuses to apply (an apply would prune every
job); an id defined in two files is an error located at its second definition; and a file a
change was reported for is compared by content, since a save within one tick of the file
system's clock can leave its size and modification time as they were.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from runner.fileset import FileSet


@pytest.fixture(autouse=True)
def _allow_sampleapp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def _write(path: Path, job_id: str, cron: str = "*/5 * * * *") -> Path:
    job = {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": {"cron": cron}}
    path.write_text(yaml.safe_dump({"jobs": [job]}, sort_keys=False), encoding="utf-8")
    return path


def test_a_folder_that_never_held_a_job_file_is_not_applied(tmp_path: Path) -> None:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    files = FileSet([str(folder)])
    files.refresh()
    desired, problems = files.desired()
    assert desired == []
    assert [p.message for p in problems] == ["no job files (*.yaml, *.yml) here"]
    _write(folder / "a.yaml", "a")
    files.refresh()
    desired, problems = files.desired()
    assert problems == [] and [d.sourced.job.id for d in desired] == ["a"]


def test_an_id_in_two_files_is_refused_at_its_second_definition(tmp_path: Path) -> None:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    _write(folder / "a.yaml", "report")
    second = _write(folder / "b.yaml", "report", "0 * * * *")
    files = FileSet([str(folder)])
    files.refresh()
    desired, problems = files.desired()
    assert desired == [], "neither definition is applied"
    assert [(p.file, p.line, p.column, p.job, p.field) for p in problems] == [
        (str(second), 2, 1, "report", "id")
    ]
    assert problems[0].message.startswith(f"duplicate id, first defined at {folder / 'a.yaml'}:")


def test_a_reported_change_is_read_even_with_the_same_size_and_time(tmp_path: Path) -> None:
    path = _write(tmp_path / "jobs.yaml", "report", "*/5 * * * *")
    files = FileSet([str(path)])
    files.refresh()
    before = os.stat(path)
    # Rewritten in place within one tick of the clock: same inode, size and mtime.
    _write(path, "report", "*/7 * * * *")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    files.refresh([str(path)])
    desired, problems = files.desired()
    assert problems == []
    assert [d.sourced.job.trigger.cron for d in desired] == ["*/7 * * * *"]
