"""Many new rows at once: PostgreSQL's COPY, else one executemany.

A first apply of 100,000 jobs writes 200,000 rows; through COPY the server parses one stream
instead of thousands of multi-row INSERT statements that the client had to render. Rows go
through the connection's own DB-API cursor, so they are part of the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table

from runner.store.engine import is_postgres


def insert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (dicts with every column of the first row's keys) into `table`."""
    if not rows:
        return
    if not is_postgres(conn.engine):
        conn.execute(table.insert(), list(rows))
        return
    columns = list(rows[0])
    lines = (",".join(_csv(row[name]) for name in columns) + "\n" for row in rows)
    names = ", ".join(f'"{name}"' for name in columns)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(
            f'COPY "{table.name}" ({names}) FROM STDIN WITH (FORMAT csv)', _Lines(lines)
        )
    finally:
        cursor.close()


class _Lines:
    """The COPY stream made as the driver reads it, so the whole text never sits in memory."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._rest = ""

    def read(self, size: int | None = -1) -> str:
        parts, have = [self._rest], len(self._rest)
        for line in self._lines:
            parts.append(line)
            have += len(line)
            if size is not None and 0 <= size <= have:
                break
        text = "".join(parts)
        if size is None or size < 0:
            self._rest = ""
            return text
        self._rest = text[size:]
        return text[:size]


def _csv(value: Any) -> str:
    """One field of COPY's CSV format: unquoted empty is NULL, anything quoted is a value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return '"\\x' + bytes(value).hex() + '"'
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("COPY takes aware datetimes only (timestamptz columns)")
        return '"' + value.isoformat() + '"'
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    raise TypeError(f"no COPY form for {type(value).__name__}")
