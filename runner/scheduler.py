"""The scheduling loop: APScheduler 3's BackgroundScheduler with a pass that cannot die.

APScheduler 3.11's own pass lets a store error outside the due-jobs query end the loop
while the scheduler still reports itself running, drops coalesced fires without a trace, and
writes each job in its own transaction. This pass decides misfires and coalescing itself,
records every fire that will not run, claims the ones that will in one statement, and
persists next run times in batches.

A job's next run time advances only after its fires are recorded: when the database is away
the pass fails, nothing is lost, and the fires are decided again (late, so misfire grace and
coalescing apply) once it is back.

Fires due within LOOKAHEAD seconds are claimed ahead and handed to the runtime, which starts
them on the loop's clock at their time: the claim's round trip (and, with a thousand jobs
due at once, the claiming itself) is not added to the firing lag. A fire claimed ahead runs
with its job's spec as it is at its time; if the job was deleted, paused or rescheduled
meanwhile, the claim is given back. At shutdown, unstarted claims are given back and their
jobs rewound, so the next start decides those fires like any other.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED
from sqlalchemy import Connection, Engine

from runner import history, metrics
from runner.execute import Fire, Status
from runner.executors.base import Executor
from runner.executors.procrastinate import Handover
from runner.jobstore import RunnerJobStore, same_trigger
from runner.runtime import SKIP_REASON
from runner.store.engine import end_if_frozen

log = logging.getLogger("runner.scheduler")

MAX_WAIT = 1.0
"""Longest sleep between passes, so leadership and store changes are noticed promptly."""
RETRY_WAIT = 1.0
FLUSH_EVERY = 5.0
"""Seconds between writes of advanced next run times. Claims, not these, stop a fire from
running twice, so a crash in between only makes the next leader re-decide (and skip) fires
that are already recorded."""
LOOKAHEAD = 0.3
"""Seconds ahead of their time that fires are claimed (and then started on time)."""
LEASE_MARGIN = 0.2
CHUNK = 250
"""Due jobs claimed and started per transaction."""
FLUSH_DELAY = 0.25
"""How long after a busy pass the deferred flush runs."""


@dataclass(slots=True)
class _Due:
    job: Any
    runnable: list[datetime]
    next_run_time: datetime | None
    skip: bool
    ahead: bool = False
    """The one fire in `runnable` is a moment away: claimed now, started at its time."""


class RunnerScheduler(BackgroundScheduler):  # type: ignore[misc]
    def __init__(
        self,
        engine: Engine,
        runtime: Executor,
        node: str,
        may_start: Callable[[], bool] = lambda: True,
        still_leading: Callable[[], bool] | None = None,
        flush_every: float = FLUSH_EVERY,
        lease_left: Callable[[], float] = lambda: float("inf"),
        lookahead: float = LOOKAHEAD,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(timezone=UTC)
        self.engine = engine
        self.runtime = runtime
        self.node = node
        self.may_start = may_start
        self.flush_every = flush_every
        self.lease_left = lease_left
        self.lookahead = lookahead
        self.clock = clock
        """The pass's idea of now; a parameter so tests can drive it through a virtual year."""
        self.store = RunnerJobStore(engine)
        self.add_jobstore(self.store, "default")
        self.passes = 0
        self.last_pass_error: str | None = None
        self._pass_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._ahead: dict[tuple[str, datetime], Any] = {}
        """Trigger of each fire claimed ahead, as it was when claimed."""
        self._ahead_lock = threading.Lock()
        runtime.vet = self._vet
        # Checked when fires already claimed come due: may confirm with the database.
        runtime.may_start = still_leading or may_start
        self._flushed_at = 0.0

    def _process_jobs(self) -> float:
        try:
            with self._pass_lock:
                wait = self._pass()
            self.last_pass_error = None
            return wait
        except Exception as exc:  # the loop must survive anything: retry soon
            self.last_pass_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "scheduling pass failed, retrying in %.0fs: %s",
                RETRY_WAIT,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return RETRY_WAIT

    def _pass(self) -> float:
        self.passes += 1
        if self.state == STATE_PAUSED or not self.may_start():
            return MAX_WAIT
        now = self.clock()
        sweep = getattr(self.runtime, "sweep", None)
        if sweep is not None:  # attempts handed to workers: their deaths, misses, retries
            with self.engine.connect() as conn:
                sweep(conn, self.store.lookup_job, now)
        # Fires due within the look-ahead are claimed now and started on time by the loop, so
        # the claim's round trip is not added to their lag. Never beyond the lease: a fire is
        # only claimed ahead if this node is sure to still lead when it is due.
        ahead = max(0.0, min(self.lookahead, self.lease_left() - LEASE_MARGIN))
        horizon = now + timedelta(seconds=ahead)
        due_jobs = self.store.get_due_jobs(horizon)
        if due_jobs:
            # In chunks: the first runs start while later chunks are still being claimed (the
            # database round trip of one overlaps the start-up of the previous). One
            # connection for the pass: each checkout from the pool costs a ping.
            with self.engine.connect() as conn:
                for begin in range(0, len(due_jobs), CHUNK):
                    self._run_chunk(conn, due_jobs[begin : begin + CHUNK], now, horizon)
        cap = self._flush_if_due(busy=bool(due_jobs))
        next_time = self.store.get_next_run_time()
        if next_time is None:
            return cap
        until = (next_time - self.clock()).total_seconds() - ahead
        return max(0.0, min(cap, until))

    def _run_chunk(
        self, conn: Connection, jobs: list[Any], now: datetime, horizon: datetime
    ) -> None:
        due: list[_Due] = []
        claims: list[tuple[str, datetime]] = []
        marks: list[history.Mark] = []
        for job in jobs:
            run_times, moment = _fires_due(job, now)
            if not run_times:
                if moment is not None and moment <= horizon:
                    claims.append((job.id, moment))
                    following = _following(job, moment, moment)
                    due.append(_Due(job, [moment], following, False, ahead=True))
                continue
            runnable = self._triage(job, run_times, now, marks)
            skip = bool(runnable) and self.runtime.running(job.id) >= job.max_instances
            if skip:
                marks.extend(history.Mark(job.id, t, Status.SKIPPED, SKIP_REASON) for t in runnable)
            else:
                claims.extend((job.id, t) for t in runnable)
            due.append(_Due(job, runnable, moment, skip))
        won: set[tuple[str, datetime]] = set()
        hand_over = getattr(self.runtime, "hand_over", None)
        if claims or marks:
            # Record before advancing: if this fails, the jobs stay due and the pass is retried.
            with conn.begin():
                end_if_frozen(conn)
                status = Status.QUEUED if hand_over is not None else Status.RUNNING
                won = history.claim(conn, claims, self.node, status)
                history.mark(conn, marks, self.node)
                if hand_over is not None and won:
                    # Claimed and deferred in one transaction: both or neither commit.
                    hand_over(conn, _handovers(due, won))
            for item_mark in marks:
                metrics.fire_marked(item_mark.job_id, item_mark.status)
        for item in due:
            item.job.next_run_time = item.next_run_time
        self.store.advanced_many([item.job for item in due])
        if hand_over is not None:
            return
        batch: list[tuple[list[Fire], int]] = []
        later: dict[datetime, list[tuple[Fire, int]]] = {}
        known = 0
        for item in due:
            job_id = item.job.id
            if item.skip:
                for moment in item.runnable:
                    log.warning("run of %s at %s skipped: %s", job_id, moment, SKIP_REASON)
                continue
            fires = []
            for moment in item.runnable:
                if (job_id, moment.astimezone(UTC)) in won:
                    fires.append(Fire(job_id, item.job.args[1], moment))
                else:
                    known += 1
            if not fires:
                continue
            if item.ahead:
                later.setdefault(fires[0].scheduled_at, []).append(
                    (fires[0], item.job.max_instances)
                )
            else:
                batch.append((fires, item.job.max_instances))
        if known:
            # After a crash or a change of leader: fires decided before the last flush.
            log.info("%d fire(s) already recorded; not running them again", known)
        if batch:
            # Only this thread submits, and it checked the limits above: none is refused.
            self.runtime.submit_batch(batch)
        if later:
            with self._ahead_lock:
                for fires_at in later.values():
                    for fire, _ in fires_at:
                        held = self.store.lookup_job(fire.job_id)
                        self._ahead[(fire.job_id, fire.scheduled_at)] = held and held.trigger
        for when, fires_at in later.items():
            self.runtime.submit_at(when, fires_at)

    def _vet(self, fire: Fire) -> Fire | None:
        """At its time, a fire claimed ahead runs with its job's current spec, unless the job
        was deleted, paused or given another trigger meanwhile."""
        with self._ahead_lock:
            trigger = self._ahead.pop((fire.job_id, fire.scheduled_at), None)
        job = self.store.lookup_job(fire.job_id)
        if job is None:
            return None
        spec = job.args[1]
        if spec is fire.spec:
            return fire
        if self.store.paused(fire.job_id) or not same_trigger(trigger, job.trigger):
            return None
        return Fire(fire.job_id, spec, fire.scheduled_at)

    def rewind(self, fires: list[Fire]) -> None:
        """Fires claimed ahead that will not start (shutdown): make their jobs due at them
        again, so the next start decides them (their claims are released)."""
        with _held(self._pass_lock, "rewind fires claimed ahead"):
            jobs = []
            for fire in fires:
                if self._vet(fire) is None:
                    continue  # deleted, paused or rescheduled meanwhile: nothing to redo
                job = self.store.lookup_job(fire.job_id)
                if job is None:
                    continue
                if job.next_run_time is None or job.next_run_time > fire.scheduled_at:
                    job.next_run_time = fire.scheduled_at
                    jobs.append(job)
            self.store.advanced_many(jobs)

    @staticmethod
    def _triage(
        job: Any, run_times: list[datetime], now: datetime, marks: list[history.Mark]
    ) -> list[datetime]:
        """The fires that will run; the others go to `marks` as missed."""
        runnable = []
        grace = job.misfire_grace_time
        for run_time in run_times:
            late = (now - run_time).total_seconds()
            if grace is not None and late > grace:
                marks.append(
                    history.Mark(
                        job.id,
                        run_time,
                        Status.MISSED,
                        f"missed by {late:.0f}s (misfire grace {grace}s)",
                    )
                )
            else:
                runnable.append(run_time)
        if job.coalesce and len(runnable) > 1:
            keep = runnable[-1]
            marks.extend(
                history.Mark(
                    job.id,
                    t,
                    Status.MISSED,
                    f"coalesced into the run scheduled at {keep.isoformat()}",
                )
                for t in runnable[:-1]
            )
            runnable = [keep]
        return runnable

    def _flush_if_due(self, busy: bool) -> float:
        """Write advanced next run times every `flush_every` seconds, but not in a pass that
        just started runs (they are starting now); returns how soon to come back."""
        since = time.monotonic() - self._flushed_at
        if since < self.flush_every:
            return MAX_WAIT
        if busy and since < 3 * self.flush_every:
            return self.lookahead + FLUSH_DELAY  # after the runs claimed ahead have started
        self._flushed_at = time.monotonic()
        self.store.flush()
        return MAX_WAIT

    def flush(self) -> int:
        """Persist advanced next run times now (at shutdown)."""
        with _held(self._pass_lock, "save next run times"):
            self._flushed_at = time.monotonic()
            return self.store.flush()

    def refresh(self, ids: Iterable[str] | None = None, full: bool = False) -> None:
        """Reload what an apply changed (only `ids` when given, everything when `full`) and
        run a pass now."""
        with self._refresh_lock:  # one at a time, so an older read never lands last
            reloaded = self.store.fetch(ids, full)
            with self._pass_lock:  # never swap a job out from under a pass
                changed = self.store.swap(reloaded)
        if changed:
            log.info("store changed: %d job(s) reloaded", len(changed))
        if self.running:
            self.wakeup()


def _handovers(due: list[_Due], won: set[tuple[str, datetime]]) -> list[Handover]:
    """The first attempts this pass won, for workers: each due at its scheduled time."""
    items = []
    for item in due:
        if item.skip:
            continue
        for moment in item.runnable:
            if (item.job.id, moment.astimezone(UTC)) in won:
                fire = Fire(item.job.id, item.job.args[1], moment)
                items.append(Handover(fire, 1, moment, item.job.misfire_grace_time))
    return items


MAX_CATCH_UP = 100_000
"""Fires one job may have due in a single pass (a year of downtime of a 5-minute job is
105,120): past this the rest are recorded in later passes, so no pass runs unbounded."""
SHUTDOWN_LOCK_WAIT = 5.0


@contextlib.contextmanager
def _held(lock: threading.Lock, what: str) -> Iterator[bool]:
    """The pass lock for shutdown work, but never waited on for long: shutdown must finish
    whatever a pass is doing (the pass thread is a daemon and dies with the process)."""
    got = lock.acquire(timeout=SHUTDOWN_LOCK_WAIT)
    if not got:
        log.error("scheduling pass still busy after %.0fs: cannot %s", SHUTDOWN_LOCK_WAIT, what)
    try:
        yield got
    finally:
        if got:
            lock.release()


def _fires_due(job: Any, now: datetime) -> tuple[list[datetime], datetime | None]:
    """The job's fire times up to `now`, and the first after it (APScheduler's
    Job._get_run_times, keeping the next one)."""
    run_times: list[datetime] = []
    moment = _utc(job.next_run_time)
    while moment is not None and moment <= now and len(run_times) < MAX_CATCH_UP:
        run_times.append(moment)
        moment = _following(job, moment, now)
    return run_times, moment


def _following(job: Any, previous: datetime, now: datetime) -> datetime | None:
    """The fire after `previous`. A trigger that fails, or answers a time not after
    `previous`, would stall or loop the pass: the job is logged and moved past it instead."""
    try:
        moment = _utc(job.trigger.get_next_fire_time(previous, now))
        if moment is None or moment > previous:
            return moment
        problem = f"answered {moment.isoformat()}, not a later time"
    except Exception as exc:
        problem = f"failed: {type(exc).__name__}: {exc}"
    later = max(now, previous) + timedelta(seconds=1)
    try:
        moment = _utc(job.trigger.get_next_fire_time(None, later))
    except Exception:
        moment = None
    if moment is not None and moment > previous:
        log.error(
            "job %s: after its fire at %s, its trigger %s; skipped forward to %s",
            job.id,
            previous.isoformat(),
            problem,
            moment.isoformat(),
        )
        return moment
    log.error(
        "job %s: after its fire at %s, its trigger %s; not scheduled again until it is "
        "applied anew",
        job.id,
        previous.isoformat(),
        problem,
    )
    return None


def _utc(moment: datetime | None) -> datetime | None:
    """Times in the pass are UTC: APScheduler's own triggers answer in the job's zone, and
    two times of one zone compare (and subtract) on the wall clock, ignoring `fold`."""
    return None if moment is None else moment.astimezone(UTC)
