"""The local executor: runs execute in this process, on one asyncio loop in its own thread.

The scheduling thread only decides and records; it never waits on a job. Async targets run
on the loop; sync targets with a timeout run in warm child processes
(`processes.ProcessPool`), killed at their timeout, and those without one in threads, so
neither kind blocks the other or the scheduler, and a hung sync target holds only its own
job's capacity.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from runner.executors.attempt import Fire, Outcome, Recorder, Status, run_fire
from runner.executors.base import Executor
from runner.executors.processes import ProcessPool
from runner.executors.threads import ThreadPool

log = logging.getLogger("runner.runtime")

SKIP_REASON = "previous run still going (max_instances)"
LOST_LEADERSHIP = "not started: its node lost leadership"
WARM_ENV = "RUNNER_WARM_PROCESSES"
DEFAULT_WARM = 4


class Runtime:
    """Implements `base.Executor`. `warm` child processes (default: $RUNNER_WARM_PROCESSES,
    else 4) are kept ready for sync targets."""

    def __init__(self, recorder: Recorder, warm: int | None = None) -> None:
        self.recorder = recorder
        if warm is None:
            warm = int(os.environ.get(WARM_ENV, "") or DEFAULT_WARM)
        self.processes = ProcessPool(warm=warm)
        self.threads = ThreadPool()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="runner-loop", daemon=True)
        self._running: Counter[str] = Counter()
        self._loop_tasks: set[asyncio.Task[Outcome]] = set()
        # Fires claimed ahead of their time, waiting on the loop for it (loop thread only).
        self._timers: dict[int, tuple[asyncio.TimerHandle, list[tuple[Fire, int]]]] = {}
        self._timer_ids = itertools.count()
        self.may_start: Callable[[], bool] = lambda: True
        """Checked again when a fire claimed ahead comes due (the scheduler's leadership)."""
        self.vet: Callable[[Fire], Fire | None] | None = None
        """Called at the time of a fire claimed ahead: the fire to start (its job may have been
        edited meanwhile), or None to give the claim back instead."""
        self._lock = threading.Lock()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.processes.prewarm)
        while True:
            try:
                self.loop.run_forever()
                return
            except BaseException as exc:
                # A task a target started itself raised SystemExit or KeyboardInterrupt,
                # which asyncio lets out of the loop: every other run is still on it.
                log.error("a job's task stopped the event loop (%r); it keeps running", exc)

    def start(self) -> None:
        self._thread.start()

    def running(self, job_id: str) -> int:
        with self._lock:
            return self._running[job_id]

    def active(self) -> int:
        """Runs going (or handed to the loop and about to start)."""
        with self._lock:
            return sum(self._running.values())

    def busy_threads(self) -> int:
        """Sync targets without a timeout still executing in a thread (nothing stops them;
        those with one run in processes, killed when the runtime stops)."""
        return self.threads.busy

    def try_submit(self, fire: Fire, max_instances: int, first_attempt: int = 1) -> bool:
        """Start the fire unless the job already has `max_instances` runs going."""
        return self.try_submit_many([fire], max_instances, first_attempt)

    def try_submit_many(
        self, fires: Sequence[Fire], max_instances: int, first_attempt: int = 1
    ) -> bool:
        """Run fires of one job one after another, as one instance (catch-up without coalescing)."""
        return self.submit_batch([(fires, max_instances)], first_attempt)[0]

    def submit_batch(
        self, batch: Sequence[tuple[Sequence[Fire], int]], first_attempt: int = 1
    ) -> list[bool]:
        """Start many jobs' fires with one wake-up of the loop; per job, whether it started.

        Each entry is one job's fires (run in turn, as one instance) and its max_instances.
        """
        accepted: list[list[Fire]] = []
        verdicts: list[bool] = []
        with self._lock:
            for fires, max_instances in batch:
                if not fires:
                    verdicts.append(True)
                    continue
                job_id = fires[0].job_id
                if self._running[job_id] >= max_instances:
                    verdicts.append(False)
                    continue
                self._running[job_id] += 1
                accepted.append(list(fires))
                verdicts.append(True)
        if accepted:
            self.loop.call_soon_threadsafe(self._spawn, accepted, first_attempt)
        return verdicts

    def submit_at(self, when: datetime, batch: Sequence[tuple[Fire, int]]) -> None:
        """Start these fires (each with its job's max_instances) at `when`, on the loop's clock.

        They were claimed ahead of time; a job that still has `max_instances` runs going at
        `when` records its fire as skipped.
        """
        if batch:
            self.loop.call_soon_threadsafe(self._schedule, when, list(batch))

    def _schedule(self, when: datetime, batch: list[tuple[Fire, int]]) -> None:
        delay = max(0.0, (when - datetime.now(UTC)).total_seconds())
        key = next(self._timer_ids)
        handle = self.loop.call_at(self.loop.time() + delay, self._start_due, key)
        self._timers[key] = (handle, batch)

    def _start_due(self, key: int) -> None:
        _, batch = self._timers.pop(key)
        if not self.may_start():
            # Claimed while leading, due now that this node cannot confirm it still leads
            # (it was frozen, or lost the database): starting could overlap the new leader.
            now = datetime.now(UTC)
            for fire, _ in batch:
                log.warning(
                    "fire of %s at %s not started: leadership lost", fire.job_id, fire.scheduled_at
                )
                self.recorder.finished(
                    fire,
                    1,
                    now,
                    0.0,
                    Outcome(Status.MISSED, LOST_LEADERSHIP),
                )
            return
        accepted: list[list[Fire]] = []
        skipped: list[Fire] = []
        if self.vet is not None:
            vetted = []
            release = getattr(self.recorder, "release", None)
            for fire, max_instances in batch:
                current = self.vet(fire)
                if current is not None:
                    vetted.append((current, max_instances))
                elif release is not None:
                    log.info(
                        "fire of %s at %s dropped: its job changed", fire.job_id, fire.scheduled_at
                    )
                    release(fire)
            batch = vetted
        with self._lock:
            for fire, max_instances in batch:
                if self._running[fire.job_id] >= max_instances:
                    skipped.append(fire)
                    continue
                self._running[fire.job_id] += 1
                accepted.append([fire])
        self._spawn(accepted, 1)
        if skipped:
            now = datetime.now(UTC)
            for fire in skipped:
                log.warning(
                    "run of %s at %s skipped: %s", fire.job_id, fire.scheduled_at, SKIP_REASON
                )
                self.recorder.finished(fire, 1, now, 0.0, Outcome(Status.SKIPPED, SKIP_REASON))

    def cancel_pending(self) -> list[Fire]:
        """Cancel the fires waiting for their time; return them (they never started)."""
        if not self._thread.is_alive():
            return [fire for _, batch in self._timers.values() for fire, _ in batch]

        async def cancel() -> list[Fire]:
            fires: list[Fire] = []
            for handle, batch in self._timers.values():
                handle.cancel()
                fires.extend(fire for fire, _ in batch)
            self._timers.clear()
            return fires

        try:
            return asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(timeout=5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            return []

    def _spawn(self, accepted: list[list[Fire]], first_attempt: int) -> None:
        """On the loop: one task per job instance.

        Claimed while leading, but the loop may only get here after the process was frozen
        (SIGSTOP, a stalled host) past its lease: then a new leader may be deciding the same
        fires, and starting them could overlap it. They are recorded as not started instead.
        """
        if accepted and first_attempt == 1 and not self.may_start():
            now = datetime.now(UTC)
            for fires in accepted:
                for fire in fires:
                    log.warning(
                        "fire of %s at %s not started: leadership lost",
                        fire.job_id,
                        fire.scheduled_at,
                    )
                    self.recorder.finished(
                        fire, 1, now, 0.0, Outcome(Status.MISSED, LOST_LEADERSHIP)
                    )
                self._release_slot(fires[0].job_id)
            return
        for fires in accepted:
            task = self.loop.create_task(self._run_in_turn(fires, first_attempt))
            self._loop_tasks.add(task)
            task.add_done_callback(functools.partial(self._done, fires[0].job_id))

    async def _run_in_turn(self, fires: list[Fire], first_attempt: int) -> Outcome:
        outcome = Outcome(Status.FAILED, "not run")
        for index, fire in enumerate(fires):
            try:
                outcome = await run_fire(
                    fire,
                    self.recorder,
                    self.processes,
                    first_attempt=first_attempt,
                    threads=self.threads,
                )
            except asyncio.CancelledError:
                now = datetime.now(UTC)
                for queued in fires[index + 1 :]:
                    self.recorder.finished(
                        queued,
                        1,
                        now,
                        0.0,
                        Outcome(Status.INTERRUPTED, "runner stopped before this fire started"),
                    )
                raise
        return outcome

    def _done(self, job_id: str, task: asyncio.Task[Outcome]) -> None:
        self._loop_tasks.discard(task)
        self._release_slot(job_id)
        if not task.cancelled() and task.exception() is not None:
            log.error("run of %s crashed: %r", job_id, task.exception())

    def _release_slot(self, job_id: str) -> None:
        with self._lock:
            self._running[job_id] -= 1
            if self._running[job_id] <= 0:
                del self._running[job_id]

    def stop(self, grace: float, abort: threading.Event | None = None) -> int:
        """Wait up to `grace` seconds (less if `abort` is set) for runs to end, then cancel the
        rest; return how many were cancelled. Fires still waiting for their time are released
        (see `cancel_pending`)."""
        release = getattr(self.recorder, "release", None)
        for fire in self.cancel_pending():
            if release is not None:
                release(fire)
        deadline = time.monotonic() + grace
        while self.active() and time.monotonic() < deadline:
            if abort is not None and abort.is_set():
                break
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        cancelled = 0
        if self._thread.is_alive():
            try:
                cancelled = asyncio.run_coroutine_threadsafe(self._cancel_all(), self.loop).result(
                    timeout=10
                )
            except (concurrent.futures.TimeoutError, RuntimeError) as exc:
                log.warning("runs did not stop after being cancelled: %r", exc)
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.processes.shutdown(), self.loop).result(10)
            except (concurrent.futures.TimeoutError, RuntimeError) as exc:
                log.warning("processes for sync targets did not stop: %r", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
        self.processes.close()
        self.threads.shutdown(wait=False, cancel_futures=True)
        return cancelled

    async def _cancel_all(self) -> int:
        """Cancel every run and wait until each has recorded its interruption."""
        tasks = [t for t in self._loop_tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=8)
        return len(tasks)


if TYPE_CHECKING:

    def _is_an_executor(runtime: Runtime) -> Executor:
        return runtime  # mypy checks that Runtime keeps to the interface
