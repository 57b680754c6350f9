"""Focused tier: claims and replicas, one guarantee per test.

Two schedulers deciding the same fires on one PostgreSQL database hand each fire over once
in total; fires are claimed ahead only as far as the lease reaches; the leader closes the
runs of dead nodes (and only theirs) as interrupted and retries them per the job's policy.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from acceptance.serve_helpers import wait_until
from sqlalchemy import event, insert, update

from runner import history
from runner.execute import Fire, Status
from runner.leadership import NODE_STALE_SECONDS, Leadership
from runner.scheduler import RunnerScheduler
from runner.serve import Server
from runner.store import tables

from .harness import FLUSH_EVERY, NODE, Sim, write_jobs

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
NOON = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def _job(job_id: str, cron: str, **fields: object) -> dict[str, object]:
    return {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": {"cron": cron}, **fields}


# --- claims unique per fire -----------------------------------------------------------------
def _replicas(url: str, tmp_path: Path) -> tuple[Sim, Sim]:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [
            _job("each", "*/10 * * * * *", coalesce=False),
            _job("also", "*/10 * * * * *", coalesce=False),
            _job("merged", "*/10 * * * * *", coalesce=True),
        ],
    )
    start = NOON - SECOND
    return Sim(url, [path], start, node="node-a"), Sim(url, [path], start, node="node-b")


def _expected(end: datetime) -> Counter[tuple[str, datetime]]:
    fires = Counter[tuple[str, datetime]]()
    moment = NOON
    while moment <= end:
        fires.update((job, moment) for job in ("each", "also", "merged"))
        moment += 10 * SECOND
    return fires


@pytest.mark.postgres
def test_two_nodes_deciding_the_same_fires_hand_each_over_once_in_total(
    pg_url: str, tmp_path: Path
) -> None:
    a, b = _replicas(pg_url, tmp_path)
    try:
        moment = NOON
        for step in range(60):  # ten minutes, each fire decided by both nodes in turn
            for sim in (a, b) if step % 2 == 0 else (b, a):
                sim.clock.set(moment)
                sim.run_pass()
            moment += 10 * SECOND
        rows = a.rows()
    finally:
        a.close()
        b.close()
    end = NOON + 59 * 10 * SECOND
    handed = Counter(
        (h.job_id, h.scheduled_at) for h in [*a.executions.handed, *b.executions.handed]
    )
    assert handed == _expected(end), "each fire handed over exactly once, none lost"
    assert {h.scheduled_at for h in a.executions.handed} == {
        NOON + 20 * n * SECOND for n in range(30)
    }, "node A won the fires it decided first"
    assert {h.scheduled_at for h in b.executions.handed} == {
        NOON + (20 * n + 10) * SECOND for n in range(30)
    }, "node B won the fires it decided first"
    assert len(rows) == sum(handed.values())
    assert {r["node"] for r in rows} == {"node-a", "node-b"}
    for row in rows:
        winner = "node-a" if (row["scheduled_at"] - NOON).total_seconds() % 20 == 0 else "node-b"
        assert row["node"] == winner, row


@pytest.mark.postgres
def test_two_nodes_passing_at_the_same_moment_still_hand_each_fire_over_once(
    pg_url: str, tmp_path: Path
) -> None:
    a, b = _replicas(pg_url, tmp_path)
    barrier = threading.Barrier(2)

    def decide(sim: Sim, moment: datetime) -> None:
        sim.clock.set(moment)
        barrier.wait(timeout=30)
        sim.run_pass()

    try:
        with ThreadPoolExecutor(2) as pool:
            moment = NOON
            for _ in range(30):
                for future in [pool.submit(decide, sim, moment) for sim in (a, b)]:
                    future.result(timeout=60)
                moment += 10 * SECOND
        rows = a.rows()
    finally:
        a.close()
        b.close()
    handed = Counter(
        (h.job_id, h.scheduled_at) for h in [*a.executions.handed, *b.executions.handed]
    )
    assert handed == _expected(NOON + 29 * 10 * SECOND)
    assert Counter((r["job_id"], r["scheduled_at"]) for r in rows) == handed


@pytest.mark.postgres
def test_a_node_frozen_before_its_claim_commits_does_not_hold_the_fires(
    pg_url: str, tmp_path: Path
) -> None:
    """A node stopped between its claim's INSERT and COMMIT holds those rows' unique-key
    locks; the server ends its transaction, so another node claims and runs the fires."""
    a, b = _replicas(pg_url, tmp_path)
    freeze, frozen, thaw = threading.Event(), threading.Event(), threading.Event()

    @event.listens_for(a.engine, "before_cursor_execute")
    def _note_claim(conn: Any, _c: object, statement: str, *_rest: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUNNER_RUNS"):
            conn.info["claimed"] = True

    @event.listens_for(a.engine, "commit")
    def _stop_before_commit(conn: Any) -> None:
        claimed = conn.info.pop("claimed", False)
        if claimed and freeze.is_set() and threading.current_thread().name == "frozen-pass":
            frozen.set()
            thaw.wait(60)

    failure: list[BaseException] = []

    def frozen_pass() -> None:
        try:
            a.scheduler._process_jobs()
        except BaseException as exc:
            failure.append(exc)

    try:
        a.clock.set(NOON)
        b.clock.set(NOON)
        freeze.set()
        stuck = threading.Thread(target=frozen_pass, name="frozen-pass", daemon=True)
        stuck.start()
        assert frozen.wait(30), "node A reached its claim's commit"
        with ThreadPoolExecutor(1) as pool:
            try:
                pool.submit(b.run_pass).result(timeout=30)
            finally:
                thaw.set()
                stuck.join(30)
        assert not stuck.is_alive()
        assert a.scheduler.last_pass_error is not None or failure, "the late commit failed"
        rows = b.rows()
    finally:
        a.close()
        b.close()
    assert not a.executions.handed, "the frozen node's claim never counted"
    assert Counter((h.job_id, h.scheduled_at) for h in b.executions.handed) == _expected(NOON)
    assert {(r["job_id"], r["scheduled_at"], r["node"]) for r in rows} == {
        (job, NOON, "node-b") for job in ("each", "also", "merged")
    }


# --- claims ahead never past the lease --------------------------------------------------------
def _with_lookahead(sim: Sim, lookahead: float, lease_left: Callable[[], float]) -> None:
    """The sim's pass as serve builds it: fires claimed ahead, as far as the lease allows."""
    scheduler = RunnerScheduler(
        sim.engine,
        cast(Any, sim.executions),
        NODE,
        lookahead=lookahead,
        lease_left=lease_left,
        clock=sim.clock,
        flush_every=FLUSH_EVERY,
    )
    scheduler.store.start(scheduler, "default")
    sim.scheduler = scheduler


@pytest.mark.parametrize(
    ("lease", "reach"),
    [
        (float("inf"), 0.3),  # the look-ahead itself
        (0.45, 0.25),  # the lease, less its margin
        (0.25, 0.05),
        (0.15, 0.0),  # lease shorter than its margin: nothing ahead, the fire waits its time
    ],
)
def test_fires_are_claimed_ahead_only_as_far_as_the_lease_reaches(
    sim_url: str, tmp_path: Path, lease: float, reach: float
) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job("soon", "* * * * *")])
    sim = Sim(sim_url, [path], NOON - 10 * SECOND)
    try:
        _with_lookahead(sim, 0.3, lambda: lease)
        sim.clock.set(NOON - timedelta(seconds=reach + 0.01))  # just beyond reach: not yet
        sim.run_pass()
        before = list(sim.executions.handed)
        rows_before = sim.rows()
        sim.clock.set(NOON - timedelta(seconds=reach))  # at the edge of reach: claimed now
        sim.run_pass()
        handed = list(sim.executions.handed)
        rows = sim.rows()
    finally:
        sim.close()
    assert before == [] and rows_before == [], "claimed past the lease"
    assert [(h.job_id, h.scheduled_at) for h in handed] == [("soon", NOON)]
    assert handed[0].at == NOON - timedelta(seconds=reach)
    assert [(r["job_id"], r["scheduled_at"], r["status"]) for r in rows] == [
        ("soon", NOON, Status.RUNNING)
    ]


# --- dead nodes: close and retry ------------------------------------------------------------
class Retries:
    """Stands in for the runtime where the leader resubmits an interrupted run."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Fire, int, int]] = []

    def try_submit(self, fire: Fire, max_instances: int, first_attempt: int = 1) -> bool:
        self.submitted.append((fire, max_instances, first_attempt))
        return True


def _run_row(job_id: str, at: datetime, attempt: int, node: str) -> dict[str, object]:
    return {
        "job_id": job_id,
        "scheduled_at": at,
        "attempt": attempt,
        "status": Status.RUNNING,
        "node": node,
        "started_at": at,
    }


def test_the_leader_closes_dead_nodes_runs_only_and_retries_them_per_policy(
    sim_url: str, tmp_path: Path
) -> None:
    path = write_jobs(
        tmp_path / "jobs.yaml",
        [
            _job("retried", "* * * * *", retries={"max_attempts": 3, "delay": "10s"}),
            _job("once", "* * * * *"),
        ],
    )
    # The dead node's own pass claimed the noon fires, then it died mid-run.
    dead = Sim(sim_url, [path], NOON - SECOND, node="dead-node")
    dead.clock.set(NOON)
    dead.run_pass()
    dead.close()
    sim = Sim(sim_url, [path], NOON + SECOND, node="leader-node")
    runs, nodes = tables.runner_runs, tables.runner_nodes
    try:
        assert {(h.job_id, h.scheduled_at) for h in dead.executions.handed} == {
            ("retried", NOON),
            ("once", NOON),
        }
        with sim.engine.begin() as conn:
            conn.execute(
                insert(runs),
                [
                    # the last attempt the policy allows: closed, not retried
                    _run_row("retried", NOON - MINUTE, 3, "stopped-node"),
                    # a live node's run: left alone
                    _run_row("retried", NOON + MINUTE, 1, "live-node"),
                    _run_row("once", NOON + MINUTE, 1, "live-node"),
                ],
            )
        for node in ("dead-node", "stopped-node", "live-node", "leader-node"):
            Leadership(sim.engine, node).heartbeat()
        Leadership(sim.engine, "stopped-node").resign()
        long_ago = datetime.now(UTC) - timedelta(seconds=NODE_STALE_SECONDS * 4)
        with sim.engine.begin() as conn:
            conn.execute(
                update(nodes).where(nodes.c.node == "dead-node").values(heartbeat_at=long_ago)
            )
        retries = Retries()
        leader = SimpleNamespace(
            engine=sim.engine, node="leader-node", scheduler=sim.scheduler, runtime=retries
        )
        Server._close_runs_of_dead_nodes(cast(Server, leader))
        first = list(retries.submitted)
        Server._close_runs_of_dead_nodes(cast(Server, leader))  # nothing left to close
        rows = {(r["job_id"], r["scheduled_at"], r["attempt"]): r for r in sim.rows()}
        spec = sim.scheduler.store.lookup_job("retried").args[1]  # type: ignore[union-attr]
    finally:
        sim.close()
    assert [(f.job_id, f.scheduled_at, mi, att) for f, mi, att in first] == [
        ("retried", NOON, 1, 2)
    ], "the dead node's run is retried as its next attempt"
    assert first[0][0].spec == spec
    assert retries.submitted == first, "a second check closes and retries nothing"
    closed = {k for k, r in rows.items() if r["status"] == Status.INTERRUPTED}
    assert closed == {
        ("retried", NOON, 1),
        ("once", NOON, 1),
        ("retried", NOON - MINUTE, 3),
    }
    for key in closed:
        assert rows[key]["error"] == "the node running it stopped or died"
        assert rows[key]["finished_at"] is not None
    for key in (("retried", NOON + MINUTE, 1), ("once", NOON + MINUTE, 1)):
        assert rows[key]["status"] == Status.RUNNING, "a live node's run was closed"
        assert rows[key]["finished_at"] is None


def test_close_interrupted_closes_only_the_nodes_it_is_given(sim_url: str, tmp_path: Path) -> None:
    path = write_jobs(tmp_path / "jobs.yaml", [_job("j", "* * * * *")])
    sim = Sim(sim_url, [path], NOON)
    runs = tables.runner_runs
    try:
        with sim.engine.begin() as conn:
            conn.execute(
                insert(runs),
                [_run_row("j", NOON + n * MINUTE, 1, f"n{n % 3}") for n in range(6)],
            )
        with sim.engine.begin() as conn:
            none = history.close_interrupted(conn, [])
            some = history.close_interrupted(conn, ["n1", "gone"], "why")
        with sim.engine.begin() as conn:
            rest = history.close_interrupted(conn)
        rows = sim.rows()
    finally:
        sim.close()
    assert none == []
    assert sorted(some) == [("j", NOON + MINUTE, 1), ("j", NOON + 4 * MINUTE, 1)]
    assert sorted(rest) == sorted(("j", NOON + n * MINUTE, 1) for n in (0, 2, 3, 5)), (
        "None means every node"
    )
    assert {r["status"] for r in rows} == {Status.INTERRUPTED}
    assert [r["error"] for r in rows if r["node"] == "n1"] == ["why", "why"]
    assert {r["error"] for r in rows if r["node"] != "n1"} == {"node stopped"}


@pytest.mark.postgres
def test_a_failed_take_up_of_leadership_is_retried(pg_url: str, tmp_path: Path) -> None:
    """Gaining the lease means taking up the store the previous leader advanced; if that
    fails (the database away for a moment), the lease loop must try again, not carry on
    leading from its stale copy."""
    sim = Sim(pg_url, [write_jobs(tmp_path / "jobs.yaml", [_job("j", "* * * * *")])], NOON)
    gains: list[bool] = []
    stopping = threading.Event()
    leadership = Leadership(sim.engine, "node-a")
    leadership.prepare()

    def on_gain() -> None:
        gains.append(leadership.may_start())
        if len(gains) == 1:
            raise RuntimeError("the database went away")
        stopping.set()

    node = SimpleNamespace(
        stopping=stopping,
        leadership=leadership,
        options=SimpleNamespace(db_url=pg_url),
        _on_gain=on_gain,
        _close_runs_of_dead_nodes=lambda: None,
    )
    server = cast(Server, node)
    guarded = Server._guard(server, "runner-lease", lambda: Server._lease_loop(server))
    loop = threading.Thread(target=guarded, daemon=True)
    try:
        loop.start()
        loop.join(30)
        assert not loop.is_alive(), "the take-up was never retried"
        assert gains == [True, True], "taken up once more, under the same lease"
        assert leadership.term == 1
    finally:
        stopping.set()
        sim.close()


@pytest.mark.postgres
def test_a_slow_dead_node_sweep_never_delays_the_lease_renewal(pg_url: str, tmp_path: Path) -> None:
    """The sweep and the heartbeat wait on the database like any query; the renewal must
    not wait behind them, or a loaded leader drops out of its own lease."""
    sim = Sim(pg_url, [write_jobs(tmp_path / "jobs.yaml", [_job("j", "* * * * *")])], NOON)
    stopping, sweeping, release = threading.Event(), threading.Event(), threading.Event()
    leadership = Leadership(sim.engine, "node-a")
    leadership.prepare()
    renewals = [0]
    renew = leadership.renew

    def counted_renew() -> bool:
        renewals[0] += 1
        return renew()

    def stuck_sweep() -> None:
        sweeping.set()
        release.wait(60)

    leadership.renew = counted_renew  # type: ignore[method-assign]
    node = SimpleNamespace(
        stopping=stopping,
        leadership=leadership,
        options=SimpleNamespace(db_url=pg_url),
        _on_gain=lambda: None,
        _close_runs_of_dead_nodes=stuck_sweep,
    )
    server = cast(Server, node)
    threads = [
        threading.Thread(target=Server._lease_loop, args=(server,), daemon=True),
        threading.Thread(target=Server._beat_loop, args=(server,), daemon=True),
    ]
    try:
        for thread in threads:
            thread.start()
        assert sweeping.wait(30), "the leader never swept"
        stuck_at = renewals[0]
        wait_until(lambda: renewals[0] >= stuck_at + 4, 30, 0.05, "renewals beside the stuck sweep")
        assert leadership.term == 1, "renewed under the same term all along"
    finally:
        stopping.set()
        release.set()
        for thread in threads:
            thread.join(10)
        sim.close()
