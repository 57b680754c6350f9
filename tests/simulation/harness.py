"""The real serving core on a virtual clock: files, apply, job store, scheduling pass, history.

`serve` runs `RunnerScheduler._process_jobs` on its own thread against the wall clock. Here
the same pass is called directly, with the clock set to each next run time in turn, so a year
of scheduling takes seconds and every DST change, clock step and downtime is an input. What
is real: the job files and `FileSet`, `reconcile.apply`, `RunnerJobStore`, the triggers, the
pass's misfire/coalesce/max_instances decisions and its claims and marks in `runner_runs`,
on SQLite or PostgreSQL. Executing targets is not this tier's concern: `Executions` stands
in for the runtime and records what the pass handed over (`Sim(real_runtime=True)` uses
the real `Runtime` and history `Writer` instead).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, select

from runner import history, reconcile
from runner.execute import Fire
from runner.fileset import FileSet
from runner.runtime import Runtime
from runner.scheduler import RunnerScheduler
from runner.store import tables
from runner.store.engine import connect

NODE = "sim-node"
FLUSH_EVERY = 3600.0
"""Real seconds between writes of next run times: persisting them is not what this tier
checks, and a write per pass would cost more than the pass."""


class VirtualClock:
    """Now, as the test says; the pass reads it instead of the host clock."""

    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.astimezone(UTC)

    def step(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Handed:
    job_id: str
    scheduled_at: datetime
    at: datetime
    """The virtual time at which the pass handed the fire over."""


class Executions:
    """Stands in for `Runtime`: what the pass starts, and how many runs each job has going
    (set `going` to hold a job 'running', as a slow target would)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.handed: list[Handed] = []
        self.going: Counter[str] = Counter()
        self.vet: Callable[[Fire], Fire | None] | None = None
        self.may_start: Callable[[], bool] = lambda: True

    def running(self, job_id: str) -> int:
        return self.going[job_id]

    def submit_batch(
        self, batch: Sequence[tuple[Sequence[Fire], int]], first_attempt: int = 1
    ) -> list[bool]:
        for fires, _ in batch:
            self.handed.extend(Handed(f.job_id, f.scheduled_at, self.clock()) for f in fires)
        return [True] * len(batch)

    def submit_at(self, when: datetime, batch: Sequence[tuple[Fire, int]]) -> None:
        for fire, _ in batch:
            self.handed.append(Handed(fire.job_id, fire.scheduled_at, self.clock()))


def write_jobs(path: Path, jobs: Iterable[dict[str, Any]], **defaults: Any) -> Path:
    document: dict[str, Any] = {"jobs": list(jobs)}
    if defaults:
        document["defaults"] = defaults
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


class Sim:
    def __init__(
        self,
        url: str,
        paths: Sequence[Path],
        start: datetime,
        *,
        real_runtime: bool = False,
        node: str = NODE,
    ) -> None:
        self.url = url
        self.clock = VirtualClock(start)
        self.engine: Engine = connect(url)
        self.files = FileSet([str(p) for p in paths])
        self.writer: history.Writer | None = None
        self.executions = Executions(self.clock)
        runtime: Any = self.executions
        if real_runtime:
            self.writer = history.Writer(self.engine, node)
            runtime = Runtime(self.writer)
        self.runtime = runtime
        self.apply()
        self.scheduler = RunnerScheduler(
            self.engine, runtime, node, lookahead=0.0, clock=self.clock, flush_every=FLUSH_EVERY
        )
        self.scheduler.store.start(self.scheduler, "default")
        if self.writer is not None:
            self.writer.start()
            runtime.start()

    # --- driving ------------------------------------------------------------------------
    def apply(self) -> None:
        """What serve does when the files change: read them and apply, at the virtual now."""
        self.files.refresh(None)
        desired, problems = self.files.desired()
        assert not problems, problems
        reconcile.apply(self.engine, desired, now=self.clock())
        if hasattr(self, "scheduler"):
            self.scheduler.refresh(full=True)

    def next_run_time(self) -> datetime | None:
        return self.scheduler.store.get_next_run_time()

    def run_pass(self) -> None:
        """One scheduling pass, exactly as serve's scheduler thread runs it."""
        self.scheduler._process_jobs()
        assert self.scheduler.last_pass_error is None, self.scheduler.last_pass_error

    def run_until(
        self, end: datetime, *, step: timedelta | None = None, max_passes: int = 1_000_000
    ) -> int:
        """Run passes until `end`; returns how many.

        Without `step` the clock jumps to each next run time, so every fire is handed over
        exactly on time, as on a quiet server. With `step` it moves on by that much per pass
        instead, so each pass catches up on the fires of one step (the path a server takes
        after a pause or downtime, and the cheaper way to cover a year).
        """
        end = end.astimezone(UTC)
        passes = 0
        while passes < max_passes:
            moment = self.next_run_time()
            if moment is None or moment > end:
                break
            if step is not None:
                self.clock.set(min(max(self.clock.now + step, moment), end))
            elif moment > self.clock.now:
                self.clock.set(moment)
            self.run_pass()
            passes += 1
            self._wait_for_runs()
        else:
            raise AssertionError(f"still due after {max_passes} passes: the pass does not advance")
        self.clock.set(max(self.clock.now, end))
        self.run_pass()
        return passes

    def run_for(self, duration: timedelta, tick: timedelta = timedelta(seconds=1)) -> None:
        """Let time pass like a wall clock: a pass every `tick` (whether or not anything is
        due), as serve's loop wakes at least once a second."""
        end = self.clock.now + duration
        while self.clock.now < end:
            self.clock.set(min(self.clock.now + tick, end))
            self.run_pass()
            self._wait_for_runs()

    def stop(self) -> None:
        """What serve's shutdown does for the schedule: save the next run times, then go."""
        self.scheduler.flush()
        self.close()

    def _wait_for_runs(self, deadline: float = 30.0) -> None:
        if self.writer is None:
            return
        limit = time.monotonic() + deadline
        while self.runtime.active() and time.monotonic() < limit:
            time.sleep(0.001)
        assert not self.runtime.active(), "runs still going after 30 s"

    # --- reading ------------------------------------------------------------------------
    def rows(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """`runner_runs`, oldest scheduled first; reading never hides an error."""
        if self.writer is not None:
            assert self.writer.drain(30.0), "history not written within 30 s"
        runs = tables.runner_runs
        query = select(runs).order_by(runs.c.job_id, runs.c.scheduled_at, runs.c.attempt)
        if job_id is not None:
            query = query.where(runs.c.job_id == job_id)
        with self.engine.connect() as conn:
            return [
                {**row._mapping, "scheduled_at": history.as_utc(row.scheduled_at)}
                for row in conn.execute(query)
            ]

    def close(self) -> None:
        if self.writer is not None:
            self.runtime.stop(5.0)
            self.writer.drain(10.0)
            self.writer.stop(0.0)
        self.engine.dispose()
