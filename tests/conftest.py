"""Shared fixtures: a database URL per test, on SQLite and on PostgreSQL.

PostgreSQL tests need the server named by ``RUNNER_TEST_PG`` (``scripts/test`` provides one).
When it is unreachable they fail rather than skip: a test that should run but skips hides
breakage. Tests that stop or restart PostgreSQL use ``restartable_pg``: a database on a server
of this session's own, never the shared one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pgserver


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` first, each group in pytest-randomly's order (a stable sort, so
    the seed still replays it): in parallel (`-n`), a minute-long test started last would
    run alone at the end while the other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# Each test's database is cloned from template0: in measurements a per-session template was no
# faster than template0/template1 (an empty database copies in the same time), and template0
# cannot have connections open, which would make CREATE DATABASE fail.
TEMPLATE = "template0"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the test PostgreSQL server, after checking it answers."""
    url = pgserver.admin_url()
    try:
        pgserver.check_server()
        error = None
    except Exception as exc:  # any failure to connect means the same thing here
        error = str(exc).strip()
    if error is not None:
        pytest.fail(
            f"PostgreSQL is not reachable at RUNNER_TEST_PG={url!r}: {error}\n"
            "Run the tests with scripts/test, which finds or starts a server, or point "
            "RUNNER_TEST_PG at an admin connection URL (postgresql://user@host:port/db).",
            pytrace=False,
        )
    return url


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards.

    A SQLAlchemy URL (`postgresql+psycopg2://...`); `pgserver.libpq_url` gives the libpq form.
    """
    with pgserver.fresh_database(template=TEMPLATE) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for this test."""
    return f"sqlite:///{tmp_path}/runner.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The test runs once per supported backend, with a fresh database on each."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def pg_throwaway() -> Iterator[pgserver.Throwaway]:
    """A PostgreSQL server of this test session's own, removed at the end of the session."""
    try:
        server = pgserver.Throwaway.start()
    except Exception as exc:  # no server binaries, no free port, ...: say so, do not skip
        pytest.fail(f"cannot start a throwaway PostgreSQL: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def restartable_pg(pg_throwaway: pgserver.Throwaway) -> Iterator[pgserver.RestartablePg]:
    """A fresh database on the session's throwaway server; the test may stop or restart that
    server (`.server.control`), and the fixture brings it back before the next test."""
    pg_throwaway.ensure_running()
    with pgserver.fresh_database(template=TEMPLATE, admin=pg_throwaway.admin) as url:
        try:
            yield pgserver.RestartablePg(url, pg_throwaway)
        finally:
            pg_throwaway.ensure_running()
