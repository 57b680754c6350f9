"""The database fixtures themselves: fresh, isolated, cleaned up."""

from __future__ import annotations

import pgserver
import psycopg2  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy import create_engine, text

_seen: list[str] = []


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", [1, 2])
def test_pg_url_is_fresh_and_distinct(pg_url: str, attempt: int) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == (
                pgserver.database_name(pg_url)
            )
            assert (
                conn.execute(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                ).scalar_one()
                == 0
            )
            conn.execute(text("CREATE TABLE t (x int)"))
    finally:
        engine.dispose()
    assert pg_url not in _seen
    for previous in _seen:  # earlier tests' databases are gone
        conn = psycopg2.connect(pgserver.libpq_url(pgserver.admin_url()))
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s",
                    (pgserver.database_name(previous),),
                )
                assert cur.fetchone() is None
        finally:
            conn.close()
    _seen.append(pg_url)


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
