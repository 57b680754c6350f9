"""Throwaway PostgreSQL databases for the tests.

The server comes from ``RUNNER_TEST_PG``: a libpq URL of an admin connection, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``. ``scripts/test`` sets it (starting a
throwaway server when none is reachable). Databases are named ``runner_test_<pid>_<hex>`` so
concurrent sessions against one server do not collide.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import psycopg2  # type: ignore[import-untyped, unused-ignore]

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


def _connect() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(libpq_url(admin_url()), connect_timeout=CONNECT_TIMEOUT)
    conn.autocommit = True  # CREATE/DROP DATABASE refuse to run inside a transaction
    return conn


def check_server() -> str:
    """Connect to the admin URL and return the server version; raise if unreachable."""
    conn = _connect()
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


def create_database(prefix: str = "runner_test", template: str | None = None) -> str:
    """Create a uniquely named database and return its SQLAlchemy URL (``postgresql+psycopg2``).

    ``template`` clones that database (it must have no open connections).
    """
    name = unique_name(prefix)
    statement = f"CREATE DATABASE {_quote(name)}"
    if template is not None:
        statement += f" TEMPLATE {_quote(template)}"
    conn = _connect()
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
    return url_for(name)


def drop_database(url: str) -> None:
    """Drop the database ``url`` points at, terminating any connections still open to it."""
    name = database_name(url)
    conn = _connect()
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


def control(action: str) -> None:
    """Stop, start or restart the test server itself, for fault-injection tests.

    `scripts/test` sets RUNNER_TEST_PG_CTL for its throwaway server; otherwise the Debian
    cluster listening on the admin URL's port is driven with pg_ctlcluster.
    """
    import shlex
    import subprocess

    command = os.environ.get("RUNNER_TEST_PG_CTL")
    if command:
        subprocess.run([*shlex.split(command), action], check=True, timeout=90)
        return
    port = str(urlsplit(admin_url()).port or 5432)
    clusters = subprocess.run(
        ["pg_lsclusters", "-h"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for line in clusters:
        version, name, cluster_port = line.split()[:3]
        if cluster_port == port:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
                check=True,
                timeout=90,
            )
            return
    raise RuntimeError(f"no way to {action} the test PostgreSQL on port {port}; run scripts/test")


def answers() -> bool:
    try:
        psycopg2.connect(libpq_url(admin_url()), connect_timeout=1).close()
    except psycopg2.OperationalError:
        return False
    return True
