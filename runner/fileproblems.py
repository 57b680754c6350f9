"""The broken job files each serve node sees, kept in `runner_meta` for `runner status`.

They live in the serving process's memory otherwise; an operator running `runner status`
from another shell must see them too. One row per node, removed when the node stops.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, delete, select

from runner.store import tables

_PREFIX = "files:"


def _key(node: str) -> str:
    return _PREFIX + hashlib.blake2b(node.encode(), digest_size=8).hexdigest()


def publish(engine: Engine, node: str, problems: Sequence[str]) -> None:
    """Record this node's current problems (an empty list removes the row)."""
    meta = tables.runner_meta
    key = _key(node)
    with engine.begin() as conn:
        conn.execute(delete(meta).where(meta.c.key == key))
        if problems:
            value = json.dumps({"node": node, "problems": list(problems)})
            conn.execute(meta.insert().values(key=key, value=value))


def by_node(conn: Connection) -> dict[str, list[str]]:
    meta = tables.runner_meta
    rows = conn.execute(select(meta.c.value).where(meta.c.key.startswith(_PREFIX)))
    out: dict[str, list[str]] = {}
    for (value,) in rows:
        entry = json.loads(value)
        out[str(entry["node"])] = [str(p) for p in entry["problems"]]
    return out
