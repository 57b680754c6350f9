"""The job store `serve` schedules from: the runner's rows, held in memory.

APScheduler 3's SQLAlchemyJobStore writes one transaction per fired job and deletes any row
it cannot unpickle. This store reads the same `apscheduler_jobs` rows (only those the runner
owns), keeps them in memory, reloads only what an apply changed, and writes the progress of
next run times in one batch per scheduling pass. A row that fails to load is logged and left
in place, never deleted.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from sqlalchemy import Engine, and_, bindparam, exists, select, update

from runner import jobstate
from runner.store import tables
from runner.store.engine import READ_ONLY

log = logging.getLogger("runner.jobstore")
_CHUNK = 500


class RunnerJobStore(BaseJobStore):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, tuple[str, bool | None]] = {}
        self._dirty: set[str] = set()
        self._lock = threading.RLock()

    # --- loading -------------------------------------------------------------------------
    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        with self._lock:
            for job in self._jobs.values():
                job._scheduler = scheduler
                job._jobstore_alias = alias
        self.reload()

    def reload(self) -> set[str]:
        """Bring the memory view in line with the database; return the ids that changed."""
        own, aps = tables.runner_jobs, tables.apscheduler_jobs
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            keys = {
                row.id: (row.spec_hash, row.paused_override)
                for row in conn.execute(select(own.c.id, own.c.spec_hash, own.c.paused_override))
            }
            with self._lock:
                changed = [i for i, key in keys.items() if self._keys.get(i) != key]
                gone = [i for i in self._keys if i not in keys]
            blobs: dict[str, bytes] = {}
            for start in range(0, len(changed), _CHUNK):
                chunk = changed[start : start + _CHUNK]
                blobs.update(
                    conn.execute(select(aps.c.id, aps.c.job_state).where(aps.c.id.in_(chunk))).all()
                )
        with self._lock:
            for job_id in gone:
                self._jobs.pop(job_id, None)
                self._keys.pop(job_id, None)
                self._dirty.discard(job_id)
            for job_id in changed:
                blob = blobs.get(job_id)
                job = self._restore(job_id, blob) if blob is not None else None
                if job is None:
                    self._jobs.pop(job_id, None)
                else:
                    self._jobs[job_id] = job
                self._keys[job_id] = keys[job_id]
                self._dirty.discard(job_id)
        return {*changed, *gone}

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

    def spec_hash(self, job_id: str) -> str | None:
        key = self._keys.get(job_id)
        return key[0] if key else None

    # --- the BaseJobStore interface --------------------------------------------------------
    def lookup_job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        moment = now.timestamp()
        with self._lock:
            due = [
                j
                for j in self._jobs.values()
                if j.next_run_time is not None and j.next_run_time.timestamp() <= moment
            ]
        due.sort(key=lambda j: j.next_run_time)
        return due

    def get_next_run_time(self) -> datetime | None:
        with self._lock:
            times = [j.next_run_time for j in self._jobs.values() if j.next_run_time is not None]
        return min(times, key=lambda t: t.timestamp()) if times else None

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
                "jobs are added with `runner apply`, not through the scheduler"
            )

    def update_job(self, job: Job) -> None:
        with self._lock:
            if job.id not in self._jobs:
                raise JobLookupError(job.id)
            self._jobs[job.id] = job
            self._dirty.add(job.id)

    def remove_job(self, job_id: str) -> None:
        # Owned jobs leave the store only through an apply; a finished one-off keeps its row.
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobLookupError(job_id)
            job.next_run_time = None
            self._dirty.add(job_id)

    def remove_all_jobs(self) -> None:
        raise NotImplementedError("jobs are removed with `runner apply`")

    # --- write-behind -------------------------------------------------------------------
    def flush(self) -> int:
        """Persist next run times advanced since the last flush, unless an apply replaced the job."""
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
