"""`runner worker`: a procrastinate worker that runs the attempts the leader hands over.

One generic task runs a stored job's target with its args (`${VAR}` resolved in this
worker's environment) through the same attempt logic as the local executor (`attempt.py`):
sync targets with a timeout run in killable child processes (`processes.ProcessPool`),
async ones are cancelled at it. Each attempt is recorded in `runner_runs` with `node` = this
worker's name; it starts only if its row is still `queued` (the leader records a fire that
waited past its misfire grace `missed`, and then it never starts). The worker heartbeats in
`runner_nodes` like a serve node, so a leader closes the attempts of a worker that died.

SIGTERM/SIGINT: procrastinate stops fetching; running attempts get `grace` seconds, then are
cancelled (their child processes killed) and recorded `interrupted`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from runner import history
from runner.executors.attempt import attempt as run_attempt
from runner.executors.base import Fire, Outcome, Status
from runner.executors.processes import ProcessPool
from runner.executors.procrastinate import PERMANENT, TASK_NAME, WORKER_SUFFIX, ensure_schema
from runner.executors.threads import ThreadPool
from runner.leadership import Leadership
from runner.store import migrate
from runner.store.engine import connect, end_if_frozen, is_postgres

log = logging.getLogger("runner.worker")

HEARTBEAT_EVERY = 1.0
POLL_EVERY = 0.5
"""procrastinate's fallback poll; LISTEN/NOTIFY wakes the worker at once normally."""

_START = """
UPDATE runner_runs SET status = 'running', started_at = %(at)s, node = %(node)s
WHERE job_id = %(job_id)s AND scheduled_at = %(scheduled_at)s AND attempt = %(attempt)s
  AND status = 'queued'
RETURNING job_id
"""

_FINISH = """
UPDATE runner_runs SET status = %(status)s, finished_at = %(at)s, duration = %(duration)s,
    error = %(error)s, traceback = %(traceback)s
WHERE job_id = %(job_id)s AND scheduled_at = %(scheduled_at)s AND attempt = %(attempt)s
  AND status = 'running' AND node = %(node)s
"""

_MISS = """
UPDATE runner_runs SET status = 'missed', finished_at = %(at)s, error = %(error)s
WHERE job_id = %(job_id)s AND scheduled_at = %(scheduled_at)s AND attempt = %(attempt)s
  AND status = 'queued'
"""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}{WORKER_SUFFIX}"


def _conninfo(db_url: str) -> str:
    """The SQLAlchemy URL as a libpq one, for procrastinate's psycopg 3 connector."""
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Worker:
    def __init__(
        self,
        db_url: str,
        queues: Sequence[str] = (),
        concurrency: int = 10,
        grace: float = 30.0,
    ) -> None:
        self.db_url = db_url
        self.queues = list(queues)
        self.concurrency = concurrency
        self.grace = grace
        self.name = worker_name()
        self.engine: Engine = connect(db_url)
        self.pool = ProcessPool(warm=min(2, concurrency))
        self.threads = ThreadPool()
        self.presence = Leadership(self.engine, self.name)
        self._stopped = threading.Event()

    # --- history ------------------------------------------------------------------------
    def _key(self, fire: Fire, number: int) -> dict[str, Any]:
        return {
            "job_id": fire.job_id,
            "scheduled_at": fire.scheduled_at,
            "attempt": number,
            "node": self.name,
        }

    def _start(self, fire: Fire, number: int, at: datetime) -> bool:
        with self.engine.begin() as conn:
            end_if_frozen(conn)
            row = conn.exec_driver_sql(_START, {**self._key(fire, number), "at": at}).first()
        return row is not None

    def _miss(self, fire: Fire, number: int, reason: str) -> None:
        with self.engine.begin() as conn:
            end_if_frozen(conn)
            conn.exec_driver_sql(
                _MISS, {**self._key(fire, number), "at": datetime.now(UTC), "error": reason}
            )

    def _finish(self, fire: Fire, number: int, duration: float, outcome: Outcome) -> None:
        # The leader decides retries from the history: a permanent failure says so in it.
        error = f"{PERMANENT}{outcome.error}" if outcome.permanent else outcome.error
        values = {
            **self._key(fire, number),
            "at": datetime.now(UTC),
            "duration": duration,
            "status": outcome.status,
            "error": history.recorded_error(error),
            "traceback": history.recorded_traceback(outcome.traceback),
        }
        for pause in (0.1, 0.5, 1.0, 2.0, 5.0, 0.0):
            try:
                with self.engine.begin() as conn:
                    end_if_frozen(conn)
                    conn.exec_driver_sql(_FINISH, values)
                return
            except Exception as exc:  # the database away for a moment: try again
                if not pause:
                    log.error("could not record the end of %s: %s", fire.job_id, exc)
                    return
                time.sleep(pause)

    # --- the task -----------------------------------------------------------------------
    async def run_attempt(
        self,
        job_id: str,
        scheduled_at: str,
        attempt: int,
        due: str,
        grace: float | None,
        spec: dict[str, Any],
    ) -> None:
        """The one task: run attempt `attempt` of the fire of `job_id` at `scheduled_at`."""
        fire = Fire(job_id, spec, datetime.fromisoformat(scheduled_at))
        now = datetime.now(UTC)
        late = (now - datetime.fromisoformat(due)).total_seconds()
        if grace is not None and late > grace:
            reason = f"no worker started it within its misfire grace ({grace:g}s)"
            await asyncio.to_thread(self._miss, fire, attempt, reason)
            log.warning("fire of %s at %s missed: %s", job_id, scheduled_at, reason)
            return
        if not await asyncio.to_thread(self._start, fire, attempt, now):
            log.info("attempt %d of %s at %s is no longer queued", attempt, job_id, scheduled_at)
            return
        log.info(
            "run start job=%s scheduled=%s attempt=%d worker=%s",
            job_id,
            scheduled_at,
            attempt,
            self.name,
            extra={"job_id": job_id, "attempt": attempt, "event": "start"},
        )
        clock = time.monotonic()
        try:
            outcome = await run_attempt(fire, self.pool, os.environ, self.threads)
        except asyncio.CancelledError:
            # Shutdown past the grace: the child process was killed with the call.
            self._finish(
                fire,
                attempt,
                time.monotonic() - clock,
                Outcome(Status.INTERRUPTED, "worker stopped"),
            )
            log.warning("run interrupted job=%s attempt=%d", job_id, attempt)
            raise
        duration = time.monotonic() - clock
        await asyncio.to_thread(self._finish, fire, attempt, duration, outcome)
        log.log(
            logging.INFO if outcome.status == Status.SUCCEEDED else logging.WARNING,
            "run end job=%s scheduled=%s attempt=%d duration=%.3fs outcome=%s%s",
            job_id,
            scheduled_at,
            attempt,
            duration,
            outcome.status,
            f" error={outcome.error}" if outcome.error else "",
            extra={"job_id": job_id, "attempt": attempt, "event": "end"},
        )

    # --- running ------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(HEARTBEAT_EVERY):
            try:
                self.presence.heartbeat()
            except Exception as exc:
                log.warning("worker heartbeat failed: %s", str(exc).splitlines()[0])

    async def _main(self) -> None:
        from runner.executors import procrastinate_app

        app = procrastinate_app.build(_conninfo(self.db_url), TASK_NAME, self.run_attempt)
        self.pool.prewarm()
        try:
            async with procrastinate_app.opened(app):
                await procrastinate_app.run_worker(
                    app,
                    queues=self.queues or None,
                    concurrency=self.concurrency,
                    name=self.name,
                    grace=self.grace,
                    poll=POLL_EVERY,
                )
        finally:
            await self.pool.shutdown()

    def run(self) -> int:
        # procrastinate logs every job's arguments (a job's whole spec) at INFO: ours says
        # what ran, once per attempt.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        if not is_postgres(self.engine):
            from runner.errors import StoreError

            raise StoreError("runner worker needs PostgreSQL (the database procrastinate uses)")
        migrate.ensure(self.engine)
        ensure_schema(self.engine)
        self.presence.heartbeat()
        beat = threading.Thread(target=self._heartbeat_loop, name="runner-heartbeat", daemon=True)
        beat.start()
        log.info(
            "runner worker %s: queues %s, concurrency %d",
            self.name,
            ", ".join(self.queues) or "all",
            self.concurrency,
        )
        try:
            asyncio.run(self._main())
        finally:
            self._stopped.set()
            beat.join(timeout=5)
            self.presence.resign()
            self.threads.shutdown(wait=False, cancel_futures=True)
            self.engine.dispose()
        log.info("runner worker %s stopped", self.name)
        stuck = self.threads.busy
        if stuck:
            # A sync target without a timeout cannot be stopped; Python would wait for it.
            log.warning("%d sync job thread(s) still running; exiting without them", stuck)
            logging.shutdown()
            os._exit(0)
        return 0
