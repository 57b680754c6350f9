"""Job files read in a child process give the very jobs and problems, in the same order, as
files read in the process itself; a child that fails leaves the rest to the process."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from runner import jobfiles, unchanged

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from gen_100k import generate

BROKEN = {
    # An error deep in a file, in the schema: located at its value.
    "tenants-0003.yaml": ("      cron: ", '      cron: "0 0 30 2 *"'),
    # One the YAML reader reports (the file is read in full again).
    "tenants-0005.yaml": ("      timezone: ", "      timezone: yes"),
    # Not plain but valid: an anchor.
    "tenants-0007.yaml": ("    kwargs: ", "    kwargs: &k {message: x}"),
    # A syntax error.
    "tenants-0011.yaml": ("  - id: ", "  - id: [tenant"),
    # An id another file defines too.
    "tenants-0013.yaml": ("  - id: ", "  - id: tenant-000000"),
}


def _break(path: Path, start: str, line: str) -> None:
    """Replace the 40th line that starts with `start` by `line`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = [n for n, text in enumerate(lines) if text.startswith(start)]
    lines[found[39]] = line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    generate(tmp_path, files=16, jobs_per_file=100)
    for name, (start, line) in BROKEN.items():
        _break(tmp_path / name, start, line)
    (tmp_path / "tenants-0009.yaml").unlink()
    (tmp_path / "tenants-0009.yaml").symlink_to(tmp_path / "missing.yaml")  # unreadable
    (tmp_path / "tenants-0015.yaml").write_text("", encoding="utf-8")  # no jobs
    return tmp_path


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Read ahead in a child for any amount of YAML; the children started."""
    started: list[int] = []
    real = jobfiles._fork_reader

    def spy(contents: Any) -> tuple[int, Any]:
        child = real(contents)
        started.append(child[0])
        return child

    monkeypatch.setattr(jobfiles, "_fork_reader", spy)
    monkeypatch.setattr(jobfiles, "READ_AHEAD_BYTES", 0)
    return started


def _load(folder: Path, ahead: bool, monkeypatch: pytest.MonkeyPatch) -> jobfiles.Loaded:
    monkeypatch.setattr(jobfiles, "read_ahead", ahead)
    return jobfiles.load([str(folder)])


def test_reading_in_a_child_gives_what_reading_here_gives(
    folder: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = _load(folder, False, monkeypatch)
    assert forks == []
    ahead = _load(folder, True, monkeypatch)
    assert len(forks) == 1
    assert ahead.jobs == here.jobs
    assert ahead.problems == here.problems
    assert ahead.files == here.files
    assert len(here.jobs) > 1000
    files = {Path(p.file).name for p in here.problems}
    assert files >= {*BROKEN, "tenants-0009.yaml", "tenants-0015.yaml"} - {"tenants-0007.yaml"}
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)  # reaped


def test_a_child_that_fails_leaves_the_rest_to_this_process(
    folder: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = _load(folder, False, monkeypatch)
    parent = os.getpid()
    real = jobfiles.read_plain
    calls = {"n": 0}

    def failing(data: bytes) -> Any:
        calls["n"] += 1
        if os.getpid() != parent and calls["n"] > 4:
            raise MemoryError("the child runs out")
        return real(data)

    monkeypatch.setattr(jobfiles, "read_plain", failing)
    ahead = _load(folder, True, monkeypatch)
    assert len(forks) == 1
    assert (ahead.jobs, ahead.problems) == (here.jobs, here.problems)
    assert calls["n"] > 0  # this process read the rest itself


def test_reads_are_taken_in_order_and_leaving_early_ends_the_child(
    forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobfiles, "read_ahead", True)
    contents = [f"- {n}\n".encode() * 20_000 for n in range(20)]  # more than a pipe holds
    with jobfiles.PlainReads(contents) as plains:
        assert jobfiles._reading is plains
        assert plains.take(contents[1]) is jobfiles._NOT_READ  # not the next: read it here
        copy = contents[0][:-1] + b"\n"
        assert copy == contents[0] and copy is not contents[0]
        assert plains.take(copy) is jobfiles._NOT_READ  # equal bytes are not enough
        first = plains.take(contents[0])
        assert first == ([0] * 20_000, {(): (1, 1), **{(n,): (n + 1, 3) for n in range(20_000)}})
    assert jobfiles._reading is None
    assert len(forks) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)


def test_apply_reading_in_a_child_prepares_what_reading_here_prepares(
    folder: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "")
    for name in ["tenants-0011.yaml", "tenants-0013.yaml", "tenants-0009.yaml"]:
        (folder / name).unlink()
    first = unchanged.Reader({}, import_targets=False).load([str(folder)])
    # Record the valid files, then change two of them: those two are read again, in full.
    memo = dict(first.entries)
    for name in ["tenants-0001.yaml", "tenants-0002.yaml"]:
        path = folder / name
        path.write_text(path.read_text(encoding="utf-8").replace('"}', ' changed"}'), "utf-8")
    monkeypatch.setattr(jobfiles, "read_ahead", False)
    here = unchanged.Reader(memo, import_targets=False).load([str(folder)])
    monkeypatch.setattr(jobfiles, "read_ahead", True)
    ahead = unchanged.Reader(memo, import_targets=False).load([str(folder)])
    assert forks, "the changed and unrecorded files were read in a child"
    assert ahead.wanted == here.wanted
    assert ahead.problems == here.problems
    assert ahead.entries == here.entries
    assert here.problems, "the broken files still report"
