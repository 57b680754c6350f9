"""Resolving targets: the working directory serves only allowed top-level packages, and a
module that fails to import is a `TargetError` saying so, never a raw exception."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import targets


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A job repository as the working directory; the modules it adds are forgotten after."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]


def test_an_allowed_package_is_found_in_the_working_directory(workdir: Path) -> None:
    package = workdir / "wdjobs_allowed"
    package.mkdir()
    (package / "__init__.py").write_text("def work():\n    return 'ran'\n", encoding="utf-8")
    (workdir / "wdjobs_other.py").write_text("def work():\n    pass\n", encoding="utf-8")
    func = targets.resolve("wdjobs_allowed:work", ("wdjobs_allowed",))
    assert func() == "ran"
    with pytest.raises(targets.TargetError, match="not allowed"):
        targets.resolve("wdjobs_other:work", ("wdjobs_allowed",))


@pytest.mark.parametrize(
    ("source", "error"),
    [(None, "ModuleNotFoundError"), ("raise RuntimeError('no config')\n", "RuntimeError")],
)
def test_a_module_that_cannot_be_imported_is_a_target_error(
    workdir: Path, source: str | None, error: str
) -> None:
    if source is not None:
        (workdir / "wdjobs_broken.py").write_text(source, encoding="utf-8")
    with pytest.raises(targets.TargetError, match=f"cannot import 'wdjobs_broken': {error}"):
        targets.resolve("wdjobs_broken:work", ("wdjobs_broken",))
