"""Many new rows at once: PostgreSQL's COPY, else one executemany.

A first apply of 100,000 jobs writes 200,000 rows; through COPY the server parses one stream
instead of thousands of multi-row INSERT statements that the client had to render. Rows go
through the connection's own DB-API cursor, so they are part of the caller's transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table

from runner.store.engine import is_postgres


def insert(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert `rows` (dicts with every column of the first row's keys) into `table`.

    On PostgreSQL an iterator of rows is consumed as COPY sends them, so making the rows
    and storing them overlap."""
    if not is_postgres(conn.engine):
        listed = list(rows)
        if listed:
            conn.execute(table.insert(), listed)
        return
    remaining = iter(rows)
    first = next(remaining, None)
    if first is None:
        return
    columns = list(first)
    lines = (_line(row, columns) for row in itertools.chain((first,), remaining))
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


def _line(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    fields = []
    for name in columns:
        value = row[name]
        kind = type(value)
        if kind is str:
            fields.append('"' + value.replace('"', '""') + '"')
        elif kind is bytes:
            fields.append('"\\x' + value.hex() + '"')
        elif kind is int or kind is float:
            fields.append(repr(value))
        else:
            fields.append(_csv(value))
    return ",".join(fields) + "\n"


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
