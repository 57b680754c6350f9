"""The leadership lease and node liveness, on real databases.

One leader per PostgreSQL database, by a lease row that expires in database time: a standby
takes over only once the lease is handed back or has run out, with a new term. The leader
stops starting runs `SAFETY` seconds before its lease could expire. On SQLite a second
`serve` beside a live node is refused; stopped, silent and `runner run` nodes do not count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from acceptance.serve_helpers import wait_until
from sqlalchemy import Engine, event, select, update

from runner.leadership import (
    MANUAL_SUFFIX,
    NODE_STALE_SECONDS,
    AnotherNodeRunning,
    Leadership,
    nodes_by_liveness,
    stale_nodes,
)
from runner.store import migrate, tables
from runner.store.engine import connect


def _engine(url: str) -> Iterator[Engine]:
    engine = connect(url)
    migrate.ensure(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    yield from _engine(pg_url)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    yield from _engine(sqlite_url)


@pytest.fixture
def any_engine(db_url: str) -> Iterator[Engine]:
    yield from _engine(db_url)


def _lease(engine: Engine) -> tuple[str | None, int]:
    lease = tables.runner_lease
    with engine.connect() as conn:
        row = conn.execute(
            select(lease.c.holder, lease.c.term).where(lease.c.name == "scheduler")
        ).one()
    return row.holder, row.term


def _beat_at(engine: Engine, node: str, moment: datetime) -> None:
    nodes = tables.runner_nodes
    with engine.begin() as conn:
        conn.execute(update(nodes).where(nodes.c.node == node).values(heartbeat_at=moment))


# --- the lease on PostgreSQL --------------------------------------------------------------
@pytest.mark.postgres
def test_one_leader_at_a_time_and_a_new_term_for_each_change(pg_engine: Engine) -> None:
    first, second = Leadership(pg_engine, "node-a"), Leadership(pg_engine, "node-b")
    first.prepare()
    second.prepare()
    assert first.renew() and first.term == 1 and first.leading
    assert not second.renew(), "the lease is held: the standby does not lead"
    assert second.term is None and not second.may_start() and second.valid_for() == 0.0
    assert first.renew() and first.term == 1, "renewing keeps the term"
    assert _lease(pg_engine) == ("node-a", 1)
    first.resign()
    assert not first.may_start(), "a resigned node starts nothing"
    assert _lease(pg_engine)[0] is None, "handed back, for a standby to take at once"
    assert second.renew() and second.term == 2 and second.may_start()
    assert not first.renew() and first.term is None
    assert _lease(pg_engine) == ("node-b", 2)


@pytest.mark.postgres
def test_a_standby_takes_over_an_expired_lease(pg_engine: Engine) -> None:
    frozen, standby = Leadership(pg_engine, "frozen"), Leadership(pg_engine, "standby")
    frozen.prepare()
    assert frozen.renew()
    lease = tables.runner_lease
    with pg_engine.begin() as conn:  # the leader froze: its lease ran out in database time
        conn.execute(update(lease).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert standby.renew() and standby.term == 2
    assert not frozen.renew(), "back from the freeze, the old leader stands by"
    assert not frozen.may_start()


@pytest.mark.postgres
def test_a_leader_frozen_inside_its_renewal_does_not_keep_the_lease_row_locked(
    pg_url: str, pg_engine: Engine
) -> None:
    """A process stopped (SIGSTOP, a paused VM) after its renewal's UPDATE and before its
    COMMIT holds the lease row's lock. The server must end that transaction, or no standby
    can take over until the frozen process resumes."""
    frozen_engine = connect(pg_url)
    try:
        frozen, standby = Leadership(frozen_engine, "frozen"), Leadership(pg_engine, "standby")
        frozen.prepare()
        standby.prepare()
        assert frozen.renew()
        freeze, thaw = threading.Event(), threading.Event()

        @event.listens_for(frozen_engine, "commit")
        def _stop_before_commit(_conn: object) -> None:
            if freeze.is_set():
                thaw.wait(60)

        freeze.set()
        outcome: list[object] = []

        def renew_frozen() -> None:
            try:
                outcome.append(frozen.renew())
            except Exception as exc:
                outcome.append(exc)

        stuck = threading.Thread(target=renew_frozen, daemon=True)
        stuck.start()
        took_over = threading.Event()

        def stand_by() -> None:
            while not took_over.is_set() and not thaw.is_set():
                if standby.renew():
                    took_over.set()
                time.sleep(0.1)

        threading.Thread(target=stand_by, daemon=True).start()
        try:
            assert took_over.wait(30), "the standby never got past the frozen leader's lock"
        finally:
            thaw.set()
            stuck.join(30)
        assert standby.term == 2 and _lease(pg_engine) == ("standby", 2)
        assert outcome and outcome[0] is not True, "the frozen renewal must not count"
        assert not frozen.may_start()
    finally:
        frozen_engine.dispose()


@pytest.mark.postgres
def test_a_starved_leader_nobody_replaced_still_leads_and_a_replaced_one_does_not(
    pg_engine: Engine,
) -> None:
    """Fires claimed ahead come due on a node whose lease loop may have been starved: it
    may start them only if the database shows it has held the lease under the same term."""
    leader, standby = Leadership(pg_engine, "node-a"), Leadership(pg_engine, "node-b")
    leader.prepare()
    standby.prepare()
    assert leader.renew() and leader.term == 1
    wait_until(lambda: not leader.may_start(), 30, 0.05, "the leader's own margin to run out")
    assert leader.still_leading(), "nobody took over: same term, it still leads"
    assert leader.may_start() and leader.term == 1 and _lease(pg_engine) == ("node-a", 1)
    wait_until(lambda: not leader.may_start(), 30, 0.05, "the margin to run out again")
    lease = tables.runner_lease
    with pg_engine.begin() as conn:  # and this time the lease runs out in database time
        conn.execute(update(lease).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert standby.renew() and standby.term == 2
    assert not leader.still_leading(), "another node led meanwhile"
    assert not leader.may_start()
    assert _lease(pg_engine) == ("node-b", 2), "confirming never takes the lease back"


def test_a_confirmed_lease_is_trusted_for_less_than_its_length(any_engine: Engine) -> None:
    leader = Leadership(any_engine, "node-a")
    leader.prepare()
    assert not leader.may_start(), "nothing starts before the lease is confirmed"
    before = time.monotonic()
    assert leader.renew()
    asked_for = time.monotonic() - before
    # README: a 3 s lease, and no run started in its last 0.5 s.
    valid = leader.valid_for()
    assert 2.5 - asked_for - 0.5 < valid <= 2.5
    assert leader.may_start() and leader.leading
    leader.lose()
    assert not leader.may_start() and leader.valid_for() == 0.0 and leader.term is None


@pytest.mark.postgres
def test_the_lease_lasts_three_seconds_of_database_time(pg_engine: Engine) -> None:
    leader = Leadership(pg_engine, "node-a")
    leader.prepare()
    assert leader.renew()
    with pg_engine.connect() as conn:
        left = conn.exec_driver_sql(
            "SELECT extract(epoch FROM lease_until - now()) FROM runner_lease"
        ).scalar_one()
    assert 2.0 < float(left) <= 3.0
    assert leader.valid_for() < float(left), "the leader stops trusting it before it expires"


# --- one node on SQLite -------------------------------------------------------------------
def test_a_second_sqlite_node_is_refused_while_the_first_lives(sqlite_engine: Engine) -> None:
    first = Leadership(sqlite_engine, "host:1")
    first.prepare()
    assert first.renew() and first.term == 1
    with pytest.raises(AnotherNodeRunning, match=r"host:1.*SQLite"):
        Leadership(sqlite_engine, "host:2").prepare()
    # `runner run` heartbeats too, but never schedules: it does not block a serve.
    Leadership(sqlite_engine, "host:3" + MANUAL_SUFFIX).heartbeat()
    first.resign()
    Leadership(sqlite_engine, "host:4").prepare()


def test_a_silent_sqlite_node_does_not_block_a_new_one(sqlite_engine: Engine) -> None:
    Leadership(sqlite_engine, "host:1").prepare()
    silent_for = timedelta(seconds=NODE_STALE_SECONDS + 1)
    _beat_at(sqlite_engine, "host:1", datetime.now(UTC) - silent_for)
    Leadership(sqlite_engine, "host:2").prepare()


def test_a_manual_node_alone_does_not_block_a_serve(sqlite_engine: Engine) -> None:
    Leadership(sqlite_engine, "host:1" + MANUAL_SUFFIX).heartbeat()
    Leadership(sqlite_engine, "host:2").prepare()


# --- liveness -----------------------------------------------------------------------------
def test_nodes_are_live_until_they_stop_or_fall_silent(any_engine: Engine) -> None:
    for node in ("me", "busy", "quiet", "gone", "silent"):
        Leadership(any_engine, node).heartbeat()
    now = datetime.now(UTC)
    _beat_at(any_engine, "quiet", now - timedelta(seconds=NODE_STALE_SECONDS - 2))
    _beat_at(any_engine, "silent", now - timedelta(seconds=NODE_STALE_SECONDS + 2))
    Leadership(any_engine, "gone").resign()
    with any_engine.connect() as conn:
        live, stale = nodes_by_liveness(conn, "me")
        assert sorted(live) == ["busy", "quiet"], "a node never counts itself"
        assert sorted(stale) == ["gone", "silent"]
        assert sorted(stale_nodes(conn, "me")) == ["gone", "silent"]
    Leadership(any_engine, "gone").heartbeat()
    with any_engine.connect() as conn:
        assert "gone" in nodes_by_liveness(conn, "me")[0], "a restarted node is live again"
