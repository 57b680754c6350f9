"""Databases for the simulation tier."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


@pytest.fixture
def sqlite_sim_url(tmp_path: Path) -> Iterator[str]:
    """A SQLite file in memory-backed storage where there is one: a pass commits its claims,
    and on disk each commit waits for an fsync that this tier does not test."""
    folder = Path(tempfile.mkdtemp(dir=SHM, prefix="runner-sim-")) if SHM.is_dir() else tmp_path
    try:
        yield f"sqlite:///{folder / 'sim.db'}"
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sim_url(request: pytest.FixtureRequest) -> str:
    """The same tests on SQLite and on a fresh PostgreSQL database."""
    name = "sqlite_sim_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
