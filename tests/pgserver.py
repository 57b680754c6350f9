"""Throwaway PostgreSQL databases for the tests.

The server comes from ``RUNNER_TEST_PG``: a libpq URL of an admin connection, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``. ``scripts/test`` sets it (starting a
throwaway server when none is reachable). Databases are named ``runner_test_<pid>_<hex>`` so
concurrent sessions against one server do not collide.

Tests that stop or restart PostgreSQL never touch that shared server: they get a `Throwaway`
server of their own (``scripts/pg-throwaway``), which the ``pg_private`` fixture starts once
per session and removes afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2  # type: ignore[import-untyped, unused-ignore]

PG_THROWAWAY = Path(__file__).resolve().parents[1] / "scripts" / "pg-throwaway"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 5
# SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg (3), which is not a dependency: name
# the driver. libpq (psycopg2.connect, psql) wants the bare scheme.
SQLALCHEMY_SCHEME = "postgresql+psycopg2"


def admin_url() -> str:
    """The admin connection URL (``RUNNER_TEST_PG``, or the local default)."""
    return os.environ.get("RUNNER_TEST_PG") or DEFAULT_ADMIN_URL


def url_for(database: str, base: str | None = None, *, scheme: str = SQLALCHEMY_SCHEME) -> str:
    """``base`` (default: the admin URL) pointing at ``database`` instead, for SQLAlchemy."""
    parts = urlsplit(base or admin_url())
    return urlunsplit((scheme, parts.netloc, "/" + database, parts.query, ""))


def libpq_url(url: str) -> str:
    """``url`` (SQLAlchemy or libpq form) as a libpq URL, for psycopg2.connect or psql."""
    return url_for(database_name(url), url, scheme="postgresql")


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(admin: str | None = None) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(libpq_url(admin or admin_url()), connect_timeout=CONNECT_TIMEOUT)
    conn.autocommit = True  # CREATE/DROP DATABASE refuse to run inside a transaction
    return conn


def check_server(admin: str | None = None) -> str:
    """Connect to the admin URL and return the server version; raise if unreachable."""
    conn = _connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
        assert row is not None
        return str(row[0])
    finally:
        conn.close()


def unique_name(prefix: str = "runner_test") -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


def create_database(
    prefix: str = "runner_test", template: str | None = None, admin: str | None = None
) -> str:
    """Create a uniquely named database and return its SQLAlchemy URL (``postgresql+psycopg2``).

    ``template`` clones that database (it must have no open connections). ``admin`` is the
    server's admin URL (default: `admin_url()`).
    """
    name = unique_name(prefix)
    statement = f"CREATE DATABASE {_quote(name)}"
    if template is not None:
        statement += f" TEMPLATE {_quote(template)}"
    conn = _connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            # Every connection to it, the servers under test included, commits without
            # waiting for its WAL to reach the disk: 0.15 ms a commit instead of 4 ms here,
            # and a test commits claims, history and heartbeats by the thousand. Nothing is
            # lost unless the server itself crashes, which no test does (stops are `fast`).
            cur.execute(f"ALTER DATABASE {_quote(name)} SET synchronous_commit = off")
    finally:
        conn.close()
    return url_for(name, admin)


def drop_database(url: str, admin: str | None = None) -> None:
    """Drop the database ``url`` points at, terminating any connections still open to it."""
    name = database_name(url)
    conn = _connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            force = " WITH (FORCE)" if conn.server_version >= 130000 else ""
            cur.execute(f"DROP DATABASE IF EXISTS {_quote(name)}{force}")
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_database(template: str | None = None, admin: str | None = None) -> Iterator[str]:
    """A new database (its SQLAlchemy URL) for the duration of the block, dropped after."""
    url = create_database(template=template, admin=admin)
    try:
        yield url
    finally:
        drop_database(url, admin=admin)


def database_exists(url: str, admin: str | None = None) -> bool:
    conn = _connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database_name(url),))
            return cur.fetchone() is not None
    finally:
        conn.close()


def answers(admin: str | None = None) -> bool:
    try:
        psycopg2.connect(libpq_url(admin or admin_url()), connect_timeout=1).close()
    except psycopg2.OperationalError:
        return False
    return True


class Throwaway:
    """A PostgreSQL server of the test session's own, for tests that stop or restart it.

    Started with ``scripts/pg-throwaway`` in a fresh directory under /tmp (the server user
    must reach it; it also holds the unix socket), on a free port, and removed by `remove`.
    """

    def __init__(self, directory: Path, admin: str) -> None:
        self.directory = directory
        self.admin = admin

    @classmethod
    def start(cls) -> Throwaway:
        directory = Path(tempfile.mkdtemp(prefix="runner-pg.", dir="/tmp"))
        try:
            done = subprocess.run(
                [str(PG_THROWAWAY), "start", str(directory)],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
        except BaseException:
            _remove(directory)
            raise
        if done.returncode != 0:
            _remove(directory)
            raise RuntimeError(f"could not start a throwaway PostgreSQL:\n{done.stderr}")
        return cls(directory, done.stdout.strip().splitlines()[-1])

    def control(self, action: str) -> None:
        """``stop``, ``start`` or ``restart`` this server (fast shutdown: sessions are cut)."""
        subprocess.run(
            [str(PG_THROWAWAY), "ctl", str(self.directory), action],
            check=True,
            timeout=120,
            capture_output=True,
        )

    def answers(self) -> bool:
        return answers(self.admin)

    def ensure_running(self, timeout: float = 60) -> None:
        """Start the server if a test left it stopped, and wait until it answers."""
        if not self.answers():
            # Stopped, or still coming back: pg_ctl start fails harmlessly on a running server.
            subprocess.run(
                [str(PG_THROWAWAY), "ctl", str(self.directory), "start"],
                timeout=120,
                check=False,
                capture_output=True,
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise AssertionError(f"the throwaway PostgreSQL did not answer in {timeout}s")
            time.sleep(0.1)

    def remove(self) -> None:
        _remove(self.directory)


@dataclass(frozen=True)
class RestartablePg:
    """A database (SQLAlchemy URL) on a `Throwaway` server that its test may stop or restart."""

    url: str
    server: Throwaway


def _remove(directory: Path) -> None:
    subprocess.run(
        [str(PG_THROWAWAY), "stop", str(directory)], timeout=120, check=False, capture_output=True
    )
