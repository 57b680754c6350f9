"""Focused tier: a fire claimed ahead, at its time, on a node whose own lease margin ran out.

The real local runtime, wired to a real leadership by the scheduler exactly as serve wires
them: the fire starts if the database shows this node held the lease all along, and is
recorded not started if another node led meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from acceptance.serve_helpers import wait_until
from sqlalchemy import Engine, update

from runner.execute import Fire, Outcome, Status
from runner.executors.local import LOST_LEADERSHIP, Runtime
from runner.leadership import Leadership
from runner.scheduler import RunnerScheduler
from runner.store import migrate, tables
from runner.store.engine import connect


@dataclass
class Recorded:
    outcomes: list[Outcome] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def started(self, fire: Fire, attempt: int, at: datetime) -> None:
        pass

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None:
        self.outcomes.append(outcome)
        self.done.set()


@pytest.fixture
def engine(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    engine = connect(pg_url)
    migrate.ensure(engine)
    yield engine
    engine.dispose()


def _due_fire_on(engine: Engine, leadership: Leadership, replaced: bool) -> Outcome:
    recorded = Recorded()
    runtime = Runtime(recorded, warm=0)
    RunnerScheduler(
        engine,
        runtime,
        leadership.node,
        leadership.may_start,
        still_leading=leadership.still_leading,
        lease_left=leadership.valid_for,
    )
    runtime.vet = lambda fire: fire  # no job store here: the job is taken as unchanged
    runtime.start()
    try:
        assert leadership.renew()
        wait_until(
            lambda: not leadership.may_start(), 30, 0.05, "the node's own lease margin to run out"
        )
        if replaced:
            lease = tables.runner_lease
            with engine.begin() as conn:
                conn.execute(
                    update(lease).values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
                )
            other = Leadership(engine, "node-b")
            other.prepare()
            assert other.renew()
        when = datetime.now(UTC) + timedelta(milliseconds=50)
        fire = Fire("job-1", {"target": "sampleapp.jobs:tick"}, when)
        runtime.submit_at(when, [(fire, 1)])
        assert recorded.done.wait(30), "the fire was neither run nor recorded"
    finally:
        runtime.stop(5)
    return recorded.outcomes[0]


@pytest.mark.postgres
def test_a_claimed_fire_starts_on_a_starved_leader_that_nobody_replaced(engine: Engine) -> None:
    leadership = Leadership(engine, "node-a")
    leadership.prepare()
    outcome = _due_fire_on(engine, leadership, replaced=False)
    assert outcome.status == Status.SUCCEEDED, outcome


@pytest.mark.postgres
def test_a_claimed_fire_is_not_started_once_another_node_led(engine: Engine) -> None:
    leadership = Leadership(engine, "node-a")
    leadership.prepare()
    outcome = _due_fire_on(engine, leadership, replaced=True)
    assert (outcome.status, outcome.error) == (Status.MISSED, LOST_LEADERSHIP)
