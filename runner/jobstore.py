"""The job store `serve` schedules from: the runner's rows, held in memory.

APScheduler 3's SQLAlchemyJobStore writes one transaction per fired job and deletes any row
it cannot unpickle. This store reads the same `apscheduler_jobs` rows (only those the runner
owns), keeps them in memory, reloads only what an apply changed, and writes the progress of
next run times in batches. A row that fails to load is logged and left in place, never
deleted.

Due jobs come from a heap keyed by next run time, so a scheduling pass costs what is due,
not what is loaded: 10,000 idle jobs cost nothing per pass.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from sqlalchemy import Engine, and_, bindparam, exists, select, update

from runner import jobstate
from runner.store import tables
from runner.store.batches import chunks
from runner.store.engine import READ_ONLY

log = logging.getLogger("runner.jobstore")


def _when(job: Job) -> float | None:
    moment = job.next_run_time
    return moment.timestamp() if moment is not None else None


def same_trigger(a: Any, b: Any) -> bool:
    """Two triggers that fire at the same times (APScheduler's triggers have no __eq__)."""
    if type(a) is not type(b):
        return False
    try:
        return bool(a.__getstate__() == b.__getstate__())
    except Exception:
        return False


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What `RunnerJobStore.fetch` read, for `swap` to install."""

    keys: dict[str, tuple[str, bool | None]]
    changed: list[str]
    gone: list[str]
    jobs: dict[str, Job | None]


class RunnerJobStore(BaseJobStore):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, tuple[str, bool | None]] = {}
        self._dirty: set[str] = set()
        # Next run times: the truth in `_due_at`, a heap of (time, id) with stale entries
        # skipped lazily.
        self._due_at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.RLock()

    # --- the time index -------------------------------------------------------------------
    def _index(self, job: Job) -> None:
        when = _when(job)
        if when is None:
            self._due_at.pop(job.id, None)
            return
        if self._due_at.get(job.id) != when:
            self._due_at[job.id] = when
            heapq.heappush(self._heap, (when, job.id))
        if len(self._heap) > 2 * len(self._due_at) + 64:
            self._heap = [(w, i) for i, w in self._due_at.items()]
            heapq.heapify(self._heap)

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._due_at.pop(job_id, None)

    # --- loading -------------------------------------------------------------------------
    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        with self._lock:
            for job in self._jobs.values():
                job._scheduler = scheduler
                job._jobstore_alias = alias
        self.reload()

    def reload(self, ids: Iterable[str] | None = None, full: bool = False) -> set[str]:
        """Bring the memory view in line with the database; return the ids whose spec changed."""
        return self.swap(self.fetch(ids, full))

    def fetch(self, ids: Iterable[str] | None = None, full: bool = False) -> Reloaded:
        """Read what changed, without touching the memory view (so passes go on meanwhile).

        Only rows whose spec (or operator override) changed are read; only the rows `ids`
        names are compared when given (the ids an apply of our own touched); every row is read
        when `full`, to take up the next run times another node advanced.
        """
        own, aps = tables.runner_jobs, tables.apscheduler_jobs
        wanted_ids = None if ids is None or full else list(ids)
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            keys: dict[str, tuple[str, bool | None]] = {}
            statement = select(own.c.id, own.c.spec_hash, own.c.paused_override)
            slices = [None] if wanted_ids is None else list(chunks(wanted_ids))
            for chunk in slices:
                query = statement if chunk is None else statement.where(own.c.id.in_(chunk))
                for job_id, spec_hash, override in conn.execute(query):
                    keys[job_id] = (spec_hash, override)
            with self._lock:
                changed = [i for i, key in keys.items() if self._keys.get(i) != key]
                scope = self._keys if wanted_ids is None else wanted_ids
                gone = [i for i in scope if i not in keys and i in self._keys]
            wanted = list(keys) if full else changed
            blobs: dict[str, bytes] = {}
            for chunk in chunks(wanted):
                for job_id, blob in conn.execute(
                    select(aps.c.id, aps.c.job_state).where(aps.c.id.in_(chunk))
                ):
                    blobs[job_id] = blob
        jobs = {i: self._restore(i, blobs[i]) if i in blobs else None for i in wanted}
        return Reloaded(keys, changed, gone, jobs)

    def swap(self, reloaded: Reloaded) -> set[str]:
        """Install what `fetch` read; a job whose trigger did not change keeps the later of its
        two next run times: fires before the later one have been decided and recorded."""
        with self._lock:
            for job_id in reloaded.gone:
                self._forget(job_id)
                self._keys.pop(job_id, None)
                self._dirty.discard(job_id)
            for job_id, job in reloaded.jobs.items():
                old = self._jobs.get(job_id)
                if job is None:
                    self._forget(job_id)
                else:
                    job._scheduler = self._scheduler
                    job._jobstore_alias = self._alias
                    if old is not None and same_trigger(old.trigger, job.trigger):
                        mine, theirs = old.next_run_time, job.next_run_time
                        # In UTC: two times of one zone compare on the wall clock.
                        if (
                            mine is not None
                            and theirs is not None
                            and mine.timestamp() > theirs.timestamp()
                        ):
                            job.next_run_time = mine
                    self._jobs[job_id] = job
                    self._index(job)
                self._keys[job_id] = reloaded.keys[job_id]
                self._dirty.discard(job_id)
        return {*reloaded.changed, *reloaded.gone}

    def _restore(self, job_id: str, blob: bytes) -> Job | None:
        try:
            state = jobstate.loads(blob)
            job = Job.__new__(Job)
            job.__setstate__(state)
        except Exception as exc:
            log.error(
                "job %s: cannot load its stored row (%s: %s); left in place, not scheduled",
                job_id,
                type(exc).__name__,
                exc,
            )
            return None
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job

    def paused(self, job_id: str) -> bool:
        """Paused by its file or by an operator."""
        with self._lock:
            job, key = self._jobs.get(job_id), self._keys.get(job_id)
        if job is None or key is None:
            return False
        override = key[1]
        return bool(override if override is not None else job.args[1].get("paused", False))

    def spec_hash(self, job_id: str) -> str | None:
        key = self._keys.get(job_id)
        return key[0] if key else None

    # --- the BaseJobStore interface --------------------------------------------------------
    def lookup_job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        moment = now.timestamp()
        due: list[Job] = []
        with self._lock:
            heap, due_at = self._heap, self._due_at
            keep: list[tuple[float, str]] = []
            while heap and heap[0][0] <= moment:
                entry = heapq.heappop(heap)
                when, job_id = entry
                if due_at.get(job_id) == when and job_id in self._jobs:
                    keep.append(entry)
            # Still due until the pass advances them: a failed pass must not lose them.
            seen: set[str] = set()
            for entry in keep:
                if entry[1] not in seen:
                    seen.add(entry[1])
                    heapq.heappush(heap, entry)
                    due.append(self._jobs[entry[1]])
        return due

    def get_next_run_time(self) -> datetime | None:
        with self._lock:
            heap = self._heap
            while heap:
                when, job_id = heap[0]
                job = self._jobs.get(job_id)
                if self._due_at.get(job_id) == when and job is not None:
                    return job.next_run_time  # type: ignore[no-any-return]
                heapq.heappop(heap)
        return None

    def get_all_jobs(self) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        jobs.sort(
            key=lambda j: (
                j.next_run_time is None,
                j.next_run_time.timestamp() if j.next_run_time else 0,
                j.id,
            )
        )
        return jobs

    def add_job(self, job: Job) -> None:
        with self._lock:
            if job.id in self._jobs:
                raise ConflictingIdError(job.id)
            raise NotImplementedError(
                "jobs are added with `runner apply` or `POST /api/jobs`, not through the scheduler"
            )

    def update_job(self, job: Job) -> None:
        with self._lock:
            if job.id not in self._jobs:
                raise JobLookupError(job.id)
            self._jobs[job.id] = job
            self._index(job)
            self._dirty.add(job.id)

    def advanced_many(self, jobs: Iterable[Job]) -> None:
        """The scheduling pass moved these jobs' next run times on; persist them at the next
        flush, unless a reload replaced a job meanwhile."""
        with self._lock:
            held = self._jobs
            for job in jobs:
                job_id: str = job.id
                if held.get(job_id) is job:  # not replaced by a reload meanwhile
                    self._index(job)
                    self._dirty.add(job_id)

    def remove_job(self, job_id: str) -> None:
        # Owned jobs leave the store only through an apply; a finished one-off keeps its row.
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobLookupError(job_id)
            job.next_run_time = None
            self._index(job)
            self._dirty.add(job_id)

    def remove_all_jobs(self) -> None:
        raise NotImplementedError("jobs are removed with `runner apply`")

    # --- write-behind -------------------------------------------------------------------
    def flush(self) -> int:
        """Persist next run times advanced since the last flush, unless an apply replaced a job."""
        with self._lock:
            dirty = [(i, self._jobs[i], self._keys[i]) for i in self._dirty if i in self._jobs]
            self._dirty.clear()
        if not dirty:
            return 0
        aps, own = tables.apscheduler_jobs, tables.runner_jobs
        rows = [
            {
                "b_id": job_id,
                "b_hash": key[0],
                "b_override": key[1],
                "b_next": jobstate.timestamp(job.next_run_time),
                "b_state": jobstate.dumps(job.__getstate__()),
            }
            for job_id, job, key in dirty
        ]
        same_spec = exists().where(
            and_(
                own.c.id == bindparam("b_id"),
                own.c.spec_hash == bindparam("b_hash"),
                own.c.paused_override.is_not_distinct_from(bindparam("b_override")),
            )
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(aps)
                    .where(aps.c.id == bindparam("b_id"), same_spec)
                    .values(next_run_time=bindparam("b_next"), job_state=bindparam("b_state")),
                    rows,
                )
        except Exception:
            with self._lock:
                self._dirty.update(i for i, _, _ in dirty)
            raise
        return len(rows)
