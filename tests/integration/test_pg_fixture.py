"""The database fixtures themselves: fresh, isolated, cleaned up; faults on a private server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pgserver
import psycopg2  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy import create_engine, text


def _tables(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == (
                pgserver.database_name(url)
            )
            count: int = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            conn.execute(text("CREATE TABLE t (x int)"))
        return count
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pg_url_is_fresh_and_dropped_after(pg_url: str) -> None:
    # `pg_url` comes from `fresh_database`, checked here directly: two are distinct and
    # empty, and each is gone after its block.
    assert _tables(pg_url) == 0
    with pgserver.fresh_database(template="template0") as first:
        with pgserver.fresh_database(template="template0") as second:
            assert len({pg_url, first, second}) == 3
            assert _tables(first) == 0 and _tables(second) == 0
        assert pgserver.database_exists(first) and not pgserver.database_exists(second)
    assert not pgserver.database_exists(first)
    assert pgserver.database_exists(pg_url)


@pytest.mark.postgres
def test_drop_database_with_open_connection(pg_server: str) -> None:
    url = pgserver.create_database()
    conn = psycopg2.connect(pgserver.libpq_url(url))
    try:
        pgserver.drop_database(url)
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(pgserver.libpq_url(url)).close()
    finally:
        conn.close()


def test_db_url(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_restartable_pg_is_a_private_server_that_comes_back(
    restartable_pg: pgserver.RestartablePg, pg_server: str
) -> None:
    server = restartable_pg.server
    assert urlsplit(server.admin).port != urlsplit(pg_server).port
    assert _tables(restartable_pg.url) == 0
    server.control("stop")
    assert not server.answers()
    assert pgserver.answers(pg_server), "the shared server must never be touched"
    server.ensure_running()
    assert server.answers()
    assert pgserver.database_exists(restartable_pg.url, admin=server.admin)
