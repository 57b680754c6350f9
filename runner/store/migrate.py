"""Create the tables on first use and refuse a schema written by a newer runner."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from runner.errors import StoreError
from runner.store import tables
from runner.store.engine import describe_failure, is_postgres

_SCHEMA_LOCK = 0x52554E4E  # "RUNN": serialises concurrent first-time creation on PostgreSQL


def ensure(engine: Engine) -> None:
    """Make the database usable by this version, or raise StoreError saying why not."""
    try:
        with engine.begin() as conn:
            if is_postgres(engine):
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
            tables.metadata.create_all(conn, checkfirst=True)
            check_version(conn, create=True)
    except StoreError:
        raise
    except (DBAPIError, SQLAlchemyError) as exc:
        raise StoreError(describe_failure(exc, str(engine.url))) from None


def existing_tables(conn: Connection) -> set[str]:
    """The tables present, for readers that must not create any (dry runs); writes nothing.

    Raises StoreError when the runner's tables were written by a newer schema version.
    """
    names = set(inspect(conn).get_table_names())
    if tables.runner_meta.name in names:
        check_version(conn)
    return names


def check_version(conn: Connection, create: bool = False) -> None:
    meta = tables.runner_meta
    row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    if row is None:
        if create:
            conn.execute(
                meta.insert(),
                [
                    {"key": "schema_version", "value": str(tables.SCHEMA_VERSION)},
                    {"key": "generation", "value": "0"},
                ],
            )
        return
    found = int(row[0])
    if found > tables.SCHEMA_VERSION:
        raise StoreError(
            f"the database schema is version {found}, newer than this runner understands "
            f"({tables.SCHEMA_VERSION}); upgrade runner"
        )
