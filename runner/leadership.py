"""Who schedules: one leader per database, chosen by a lease row that expires in database time.

A lease (not a session advisory lock) because a lock stays held by a frozen process and by a
connection the server has not yet noticed is dead, and after `pg_terminate_backend` the old
holder believes it still leads until its next query. With a lease, the leader knows how long
its last confirmation is good for, by its own monotonic clock measured from *before* it asked,
and stops starting runs the moment that runs out, before any standby can take over.

On SQLite there is one node: a second `serve` on the same file is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from runner.errors import RunnerError
from runner.history import as_utc
from runner.store import tables
from runner.store.engine import end_if_frozen, is_postgres

log = logging.getLogger("runner.leadership")

LEASE_SECONDS = 3.0
RENEW_EVERY = 0.5
SAFETY = 0.5
"""Stop starting runs this long before the lease could expire, to absorb clock-rate drift."""
NODE_STALE_SECONDS = 5.0
MANUAL_SUFFIX = ":manual"
"""Ends the node name of a `runner run` process: it heartbeats, but never schedules."""

_ACQUIRE = text(
    """
    UPDATE runner_lease SET
        since = CASE WHEN holder = :me THEN since ELSE now() END,
        term = CASE WHEN holder = :me THEN term ELSE term + 1 END,
        holder = :me,
        lease_until = now() + make_interval(secs => :ttl)
    WHERE name = 'scheduler' AND (holder = :me OR holder IS NULL OR lease_until < now())
    RETURNING term
    """
)


_CONFIRM = text(
    """
    UPDATE runner_lease SET lease_until = now() + make_interval(secs => :ttl)
    WHERE name = 'scheduler' AND holder = :me AND term = :term
    RETURNING term
    """
)
"""Keep the lease only if this node has held it all along: the same term, never taken over."""


class AnotherNodeRunning(RunnerError):
    pass


class Leadership:
    def __init__(self, engine: Engine, node: str) -> None:
        self.engine = engine
        self.node = node
        self._valid_until = 0.0
        self.term: int | None = None
        self._lock = threading.Lock()
        """Guards `term` and `_valid_until` together: a renewal, a loss and a late
        confirmation (`still_leading`, from another thread) each change both."""

    def may_start(self) -> bool:
        return time.monotonic() < self._valid_until

    def valid_for(self) -> float:
        """Seconds this node may still start runs without confirming its lease again."""
        return max(0.0, self._valid_until - time.monotonic())

    @property
    def leading(self) -> bool:
        return self.may_start()

    def still_leading(self) -> bool:
        """`may_start`, or else confirmed with the database under the same term.

        For fires already claimed, at their time: a node whose lease loop was starved past
        its own margin (a loaded host) but that nobody replaced still leads, and dropping
        its claimed fires would lose them. It never takes the lease up again: a new term
        means another node may have led meanwhile, and a gain is the lease loop's to handle.
        """
        if self.may_start():
            return True
        term = self.term
        if term is None or not is_postgres(self.engine):
            return False
        asked_at = time.monotonic()
        try:
            with self.engine.begin() as conn:
                end_if_frozen(conn)
                confirmed = conn.execute(
                    _CONFIRM, {"me": self.node, "term": term, "ttl": LEASE_SECONDS}
                ).scalar()
        except Exception as exc:
            log.warning("cannot confirm leadership: %s", str(exc).splitlines()[0])
            return False
        with self._lock:
            if confirmed is None or self.term != term:
                return False
            self._valid_until = max(self._valid_until, asked_at + LEASE_SECONDS - SAFETY)
        log.info("leadership confirmed late (term %d)", term)
        return True

    def prepare(self) -> None:
        """Create the lease row; on SQLite refuse to run beside a live node."""
        with self.engine.begin() as conn:
            insert = (postgresql if is_postgres(self.engine) else sqlite).insert(
                tables.runner_lease
            )
            conn.execute(
                insert.values(name="scheduler", term=0).on_conflict_do_nothing(
                    index_elements=["name"]
                )
            )
            if not is_postgres(self.engine):
                self._refuse_second_sqlite_node(conn)
        self.heartbeat()

    def _refuse_second_sqlite_node(self, conn: object) -> None:
        live, _ = nodes_by_liveness(conn, self.node)
        live = [node for node in live if not node.endswith(MANUAL_SUFFIX)]
        if live:
            other = live[0]
            raise AnotherNodeRunning(
                f"another runner serve ({other}) is using this SQLite database; SQLite "
                "supports one node only: stop it, or use PostgreSQL for several replicas"
            )

    def heartbeat(self) -> None:
        nodes = tables.runner_nodes
        now = datetime.now(UTC)
        dialect = postgresql if is_postgres(self.engine) else sqlite
        with self.engine.begin() as conn:
            statement = dialect.insert(nodes).values(
                node=self.node, started_at=now, heartbeat_at=now
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["node"], set_={"heartbeat_at": now, "stopped_at": None}
                )
            )

    def renew(self) -> bool:
        """Try to take or keep the lease; returns whether this node now leads."""
        asked_at = time.monotonic()
        if not is_postgres(self.engine):
            with self._lock:
                self._valid_until = asked_at + LEASE_SECONDS - SAFETY
                gained = self.term is None
                self.term = 1
            if gained:
                log.info("leading (single node on SQLite)")
            return True
        with self.engine.begin() as conn:
            end_if_frozen(conn)
            term = conn.execute(_ACQUIRE, {"me": self.node, "ttl": LEASE_SECONDS}).scalar()
        if term is None:
            if self.term is not None:
                log.warning("lost leadership; standing by")
            self.lose()
            return False
        if self.term != term:
            log.info("leading (term %d)", term)
        with self._lock:
            self.term = term
            self._valid_until = asked_at + LEASE_SECONDS - SAFETY
        return True

    def lose(self) -> None:
        with self._lock:  # after this, a late confirmation (`still_leading`) cannot count
            self._valid_until = 0.0
            self.term = None

    def resign(self) -> None:
        """Hand the lease back at shutdown so a standby takes over at once."""
        self.lose()
        try:
            with self.engine.begin() as conn:
                if is_postgres(self.engine):
                    lease = tables.runner_lease
                    conn.execute(
                        update(lease)
                        .where(lease.c.name == "scheduler", lease.c.holder == self.node)
                        .values(lease_until=datetime.now(UTC) - timedelta(seconds=1), holder=None)
                    )
                nodes = tables.runner_nodes
                conn.execute(
                    update(nodes)
                    .where(nodes.c.node == self.node)
                    .values(stopped_at=datetime.now(UTC))
                )
        except Exception as exc:
            log.warning("could not resign cleanly: %s", str(exc).splitlines()[0])


def nodes_by_liveness(conn: object, me: str) -> tuple[list[str], list[str]]:
    """Other nodes as (live, stale): stale ones stopped, or have not heartbeaten for
    NODE_STALE_SECONDS."""
    nodes = tables.runner_nodes
    cutoff = datetime.now(UTC) - timedelta(seconds=NODE_STALE_SECONDS)
    rows = conn.execute(select(nodes.c.node, nodes.c.heartbeat_at, nodes.c.stopped_at)).all()  # type: ignore[attr-defined]
    live: list[str] = []
    stale: list[str] = []
    for node, beat, stopped in rows:
        if node == me:
            continue
        fresh = stopped is None and as_utc(beat) >= cutoff
        (live if fresh else stale).append(node)
    return live, stale


def stale_nodes(conn: object, me: str) -> list[str]:
    """Nodes that stopped, or whose heartbeat is older than NODE_STALE_SECONDS."""
    return nodes_by_liveness(conn, me)[1]
