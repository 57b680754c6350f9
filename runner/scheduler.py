"""The scheduling loop: APScheduler 3's BackgroundScheduler with a pass that cannot die.

APScheduler 3.11's own pass lets a store error outside the due-jobs query end the loop
while the scheduler still reports itself running, drops coalesced fires without a trace, and
writes each job in its own transaction. This pass decides misfires and coalescing itself,
records every fire that will not run, claims the ones that will in one statement, and
persists next run times in one batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from runner import history
from runner.execute import Fire, Status
from runner.jobstore import RunnerJobStore
from runner.runtime import Runtime

log = logging.getLogger("runner.scheduler")

MAX_WAIT = 1.0
"""Longest sleep between passes, so leadership and store changes are noticed promptly."""
RETRY_WAIT = 1.0


class RunnerScheduler(BackgroundScheduler):  # type: ignore[misc]
    def __init__(
        self,
        engine: Engine,
        runtime: Runtime,
        node: str,
        may_start: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(timezone=UTC)
        self.engine = engine
        self.runtime = runtime
        self.node = node
        self.may_start = may_start
        self.store = RunnerJobStore(engine)
        self.add_jobstore(self.store, "default")
        self.passes = 0
        self.last_pass_error: str | None = None
        self._pass_lock = threading.Lock()

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
                str(exc).splitlines()[0],
            )
            return RETRY_WAIT

    def _pass(self) -> float:
        self.passes += 1
        if self.state == 2 or not self.may_start():  # STATE_PAUSED
            return MAX_WAIT
        now = datetime.now(UTC)
        to_claim: list[tuple[Any, datetime]] = []
        marks: list[history.Mark] = []
        for job in self.store.get_due_jobs(now):
            run_times = job._get_run_times(now)
            if not run_times:
                continue
            runnable = []
            for run_time in run_times:
                late = (now - run_time).total_seconds()
                grace = job.misfire_grace_time
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
            to_claim.extend((job, t) for t in runnable)
            job_next = job.trigger.get_next_fire_time(run_times[-1], now)
            job.next_run_time = job_next
            self.store.update_job(job)
        if to_claim or marks:
            with self.engine.begin() as conn:
                won = history.claim(conn, [(job.id, t) for job, t in to_claim], self.node)
                history.mark(conn, marks, self.node)
            skipped = []
            for job, run_time in to_claim:
                if (job.id, run_time.astimezone(UTC)) not in won:
                    log.info(
                        "fire of %s at %s already claimed; not running it",
                        job.id,
                        run_time.isoformat(),
                    )
                    continue
                spec = job.args[1]
                fire = Fire(job.id, spec, run_time)
                if not self.runtime.try_submit(fire, job.max_instances):
                    skipped.append(fire)
            if skipped:
                self._record_skipped(skipped)
        self.store.flush()
        next_time = self.store.get_next_run_time()
        if next_time is None:
            return MAX_WAIT
        return max(0.0, min(MAX_WAIT, (next_time - datetime.now(UTC)).total_seconds()))

    def _record_skipped(self, fires: list[Fire]) -> None:
        from sqlalchemy import update

        runs = history.runs
        with self.engine.begin() as conn:
            for fire in fires:
                log.warning(
                    "run of %s at %s skipped: previous run still going (max_instances)",
                    fire.job_id,
                    fire.scheduled_at.isoformat(),
                )
                conn.execute(
                    update(runs)
                    .where(
                        runs.c.job_id == fire.job_id,
                        runs.c.scheduled_at == history.as_utc(fire.scheduled_at),
                        runs.c.attempt == 1,
                    )
                    .values(
                        status=Status.SKIPPED,
                        error="previous run still going (max_instances)",
                        finished_at=datetime.now(UTC),
                    )
                )

    def refresh(self) -> None:
        """Reload what an apply changed and run a pass now."""
        changed = self.store.reload()
        if changed:
            log.info("store changed: %d job(s) reloaded", len(changed))
        if self.running:
            self.wakeup()


def horizon(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
