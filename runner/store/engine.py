"""Engines for the two supported databases, with errors users can act on."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from runner.errors import StoreError

ENV_DATABASE = "RUNNER_DATABASE_URL"
DEFAULT_URL = "sqlite:///runner.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "runner_read_only"
"""Execution option for transactions that only read (SQLite then takes no write lock)."""


_SECRET_PARAMETER = re.compile(r"pass|secret|token|key", re.IGNORECASE)
"""Query parameters libpq would take a secret from (`?password=`, `?sslpassword=`)."""

_HIDDEN = "runner-hidden-value"
_in_use: str | None = None


def database_url_from_env(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(ENV_DATABASE) or DEFAULT_URL


def database_in_use() -> str:
    """The database this process's runner connected to, for built-in tasks that need it;
    never a URL a job file could name."""
    return _in_use or database_url_from_env()


def masked(url: str) -> str:
    """The URL with any password hidden, in the authority or the query, safe for messages, and
    as users write it (no `+driver`)."""
    try:
        parsed = make_url(url)
        parsed = parsed.set(drivername=parsed.get_backend_name())
        hidden = {k: _HIDDEN for k in parsed.query if _SECRET_PARAMETER.search(k)}
        shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
        return shown.replace(_HIDDEN, "***")
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def connect(url: str, **options: Any) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout and write-locking transactions."""
    global _in_use
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a non-numeric port raises here, not deep in the driver
    except (ArgumentError, ValueError):
        raise StoreError(
            f"invalid database URL {masked(url)!r}; expected e.g. postgresql://user@host:5432/db"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the runner ships psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            engine = create_engine(parsed, **options)
            _sqlite_transactions(engine, parsed.database)
        elif backend == "postgresql":
            engine = create_engine(
                parsed, pool_pre_ping=True, executemany_mode="values_plus_batch", **options
            )
        else:
            raise StoreError(f"unsupported database {backend!r}; use postgresql:// or sqlite:///")
    except NoSuchModuleError:
        raise StoreError(f"no driver for {masked(url)!r}") from None
    _in_use = url
    return engine


FROZEN_HOLD_LIMIT = 2.0
"""Longest a serving node or worker may sit silent inside a transaction that locks rows other
nodes write. Below the 3 s lease, so a leader frozen mid-renewal frees the lease row before its
lease could be taken over."""


def end_if_frozen(conn: Any, seconds: float = FROZEN_HOLD_LIMIT) -> None:
    """Have PostgreSQL end this transaction if its client goes silent inside it for `seconds`.

    A process stopped between a statement and its COMMIT (SIGSTOP, a paused VM, a starved
    host) keeps the rows it wrote locked for as long as it is stopped; another node writing
    the same rows (the lease, a claim, a next run time) would wait that long. The server then
    closes the session, the transaction rolls back, and the frozen process gets an error when
    it resumes instead of committing late. No effect on SQLite, where there is one node.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"SET LOCAL idle_in_transaction_session_timeout = {max(1, round(seconds * 1000))}"
        )


def _make_private(database: str | None) -> None:
    """A SQLite file the runner has just created is made readable by its owner only (its WAL
    files take the same mode): it holds the run history, whose errors quote what jobs saw."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        if os.stat(database).st_size == 0:
            os.chmod(database, 0o600)
    except OSError:
        pass


def _sqlite_transactions(engine: Engine, database: str | None) -> None:
    # pysqlite defers BEGIN until the first write, which lets two writers interleave their
    # reads; BEGIN IMMEDIATE takes the write lock up front so applies serialise.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        _make_private(database)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _use_wal(cursor: Any) -> None:
    """Put the database file in WAL mode, which then sticks to the file.

    Only the first connection to a new file switches it, and the switch needs an exclusive
    lock for which SQLite answers "database is locked" at once, without waiting out the busy
    timeout, while another connection is inside a transaction (two applies starting on a
    fresh file). So check first, and retry the switch until the busy timeout has passed.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # in-memory files answer "memory"
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def describe_failure(exc: BaseException, url: str) -> str:
    """One line that says what went wrong with the database and never shows a password."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    lowered = first.lower()
    where = masked(url)
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        return f"database {where}: authentication failed (check the user and password)"
    if "does not exist" in lowered and "database" in lowered:
        return f"database {where}: {first}"
    if "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered:
        return f"database {where} is unreachable: {first}"
    if "unable to open database file" in lowered:
        return f"database {where}: cannot open the file (does its folder exist and is it writable?)"
    return f"database {where}: {first}"
