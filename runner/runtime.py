"""Where runs execute: one asyncio loop in its own thread, plus a thread pool for sync targets.

The scheduling thread only decides and records; it never waits on a job. Async targets run
on the loop; sync targets run in the pool, so neither kind blocks the other or the scheduler.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from runner.execute import Fire, Outcome, Recorder, run_fire

log = logging.getLogger("runner.runtime")


class Runtime:
    def __init__(self, recorder: Recorder, max_threads: int = 32) -> None:
        self.recorder = recorder
        self.threads = concurrent.futures.ThreadPoolExecutor(
            max_threads, thread_name_prefix="runner-job"
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="runner-loop", daemon=True)
        self._running: Counter[str] = Counter()
        self._tasks: set[concurrent.futures.Future[Outcome]] = set()
        self._lock = threading.Lock()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def running(self, job_id: str) -> int:
        with self._lock:
            return self._running[job_id]

    def active(self) -> int:
        with self._lock:
            return len(self._tasks)

    def try_submit(self, fire: Fire, max_instances: int, first_attempt: int = 1) -> bool:
        """Start the fire unless the job already has `max_instances` runs going."""
        with self._lock:
            if self._running[fire.job_id] >= max_instances:
                return False
            self._running[fire.job_id] += 1
        future = asyncio.run_coroutine_threadsafe(
            run_fire(fire, self.recorder, self.threads, first_attempt=first_attempt), self.loop
        )
        with self._lock:
            self._tasks.add(future)
        future.add_done_callback(lambda f: self._done(fire.job_id, f))
        return True

    def _done(self, job_id: str, future: concurrent.futures.Future[Outcome]) -> None:
        with self._lock:
            self._running[job_id] -= 1
            if not self._running[job_id]:
                del self._running[job_id]
            self._tasks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("run of %s crashed: %r", job_id, future.exception())

    def stop(self, grace: float) -> int:
        """Wait up to `grace` seconds for runs to end, then cancel the rest; return how many were cancelled."""
        with self._lock:
            pending = list(self._tasks)
        _, still = concurrent.futures.wait(pending, timeout=grace) if pending else (set(), set())
        for future in still:
            future.cancel()
        if still:
            concurrent.futures.wait(still, timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.threads.shutdown(wait=False, cancel_futures=True)
        return len(still)


def stats(runtime: Runtime) -> Mapping[str, Any]:
    return {"active": runtime.active()}
