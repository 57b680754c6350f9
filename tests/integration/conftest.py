"""Fixtures shared by the apply and file-set tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner import jobfiles


@pytest.fixture
def sampleapp_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets allowed from `sampleapp` only, and no runner setting leaking in from the
    environment the suite was started in."""
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    for name in ("RUNNER_DATABASE_URL", "RUNNER_JOBS", "RUNNER_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files read in full (parsed), in order, by anything in this test."""
    seen: list[str] = []
    real = jobfiles.parse_file

    def counting(file: str, data: bytes) -> Any:
        seen.append(Path(file).name)
        return real(file, data)

    monkeypatch.setattr(jobfiles, "parse_file", counting)
    return seen
