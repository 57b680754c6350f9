"""The job store `serve` schedules from: the runner's rows, with only what is due in memory.

APScheduler 3's SQLAlchemyJobStore writes one transaction per fired job and deletes any row
it cannot unpickle. This store reads the same `apscheduler_jobs` rows (only those the runner
owns), reloads only what an apply changed, and writes the progress of next run times in
batches. A row that fails to load is logged and left in place, never deleted.

What is held per stored job is small: its spec key and its next run time, in a heap keyed by
that time. A job is unpickled only when it comes due (or is looked up), and dropped again once
its progress is written and it has not been used for `keep_for` seconds. So a scheduling pass
and the memory cost what is due, not what is stored: 100,000 idle jobs cost nothing per pass.

For a job not held, the database row holds its state and `_due_at` its next run time (the two
agree, except when another node moved the row on: the later wins, as in `swap`).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from sqlalchemy import Engine, and_, bindparam, exists, select, update

from runner import jobstate
from runner.store import tables
from runner.store.batches import chunks
from runner.store.engine import READ_ONLY, end_if_frozen

log = logging.getLogger("runner.jobstore")

KEEP_FOR = 60.0
"""Seconds a loaded job stays in memory after its last use (once its progress is written)."""

Key = tuple[str, bool | None]
"""A row's spec hash and operator pause override: what an apply or the API changes."""


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

    keys: dict[str, Key]
    changed: list[str]
    gone: list[str]
    jobs: dict[str, Job | None]
    """Changed rows of jobs held in memory, unpickled (None: cannot be loaded)."""
    times: dict[str, float | None] = field(default_factory=dict)
    """The `next_run_time` column of the other rows read (changed ones; every one when full)."""


class RunnerJobStore(BaseJobStore):  # type: ignore[misc]
    def __init__(self, engine: Engine, keep_for: float = KEEP_FOR) -> None:
        super().__init__()
        self.engine = engine
        self.keep_for = keep_for
        self._jobs: dict[str, Job] = {}
        """Jobs held in memory (due, or used lately); the truth of their state."""
        self._used: dict[str, float] = {}
        """When each held job was last used (monotonic)."""
        self._keys: dict[str, Key] = {}
        self._broken: set[str] = set()
        """Rows that cannot be loaded at their current key: not scheduled until changed."""
        self._dirty: set[str] = set()
        # Next run times: the truth in `_due_at`, a heap of (time, id) with stale entries
        # skipped lazily.
        self._due_at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.RLock()

    # --- the time index -------------------------------------------------------------------
    def _index(self, job: Job) -> None:
        self._set_due(job.id, _when(job))

    def _set_due(self, job_id: str, when: float | None) -> None:
        if when is None:
            self._due_at.pop(job_id, None)
            return
        if self._due_at.get(job_id) != when:
            self._due_at[job_id] = when
            heapq.heappush(self._heap, (when, job_id))
        if len(self._heap) > 2 * len(self._due_at) + 64:
            self._heap = [(w, i) for i, w in self._due_at.items()]
            heapq.heapify(self._heap)

    def _hold(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._used[job.id] = time.monotonic()

    def _drop(self, job_id: str) -> None:
        """Forget the loaded object (the row and `_due_at` stay the truth)."""
        self._jobs.pop(job_id, None)
        self._used.pop(job_id, None)
        self._dirty.discard(job_id)

    def _forget(self, job_id: str) -> None:
        self._drop(job_id)
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
        names are compared when given (the ids an apply of our own touched); the next run
        times of every row are read when `full`, to take up those another node advanced.
        Only the changed rows of jobs held in memory are unpickled.
        """
        own, aps = tables.runner_jobs, tables.apscheduler_jobs
        wanted_ids = None if ids is None or full else list(ids)
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            keys: dict[str, Key] = {}
            times: dict[str, float | None] = {}
            statement = select(
                own.c.id, own.c.spec_hash, own.c.paused_override, aps.c.next_run_time
            ).select_from(own.outerjoin(aps, aps.c.id == own.c.id))
            slices = [None] if wanted_ids is None else list(chunks(wanted_ids))
            for chunk in slices:
                query = statement if chunk is None else statement.where(own.c.id.in_(chunk))
                for job_id, spec_hash, override, next_run in conn.execute(query):
                    keys[job_id] = (spec_hash, override)
                    times[job_id] = next_run
            with self._lock:
                changed = [i for i, key in keys.items() if self._keys.get(i) != key]
                scope = self._keys if wanted_ids is None else wanted_ids
                gone = [i for i in scope if i not in keys and i in self._keys]
                held = [i for i in changed if i in self._jobs]
            blobs: dict[str, bytes] = {}
            for chunk in chunks(held):
                for job_id, blob in conn.execute(
                    select(aps.c.id, aps.c.job_state).where(aps.c.id.in_(chunk))
                ):
                    blobs[job_id] = blob
        jobs = {i: self._restore(i, blobs[i]) if i in blobs else None for i in held}
        if not full:
            times = {i: times[i] for i in changed if i not in jobs}
        return Reloaded(keys, changed, gone, jobs, times)

    def swap(self, reloaded: Reloaded) -> set[str]:
        """Install what `fetch` read; a job whose trigger did not change keeps the later of its
        two next run times: fires before the later one have been decided and recorded."""
        changed = set(reloaded.changed)
        with self._lock:
            for job_id in reloaded.gone:
                self._forget(job_id)
                self._keys.pop(job_id, None)
                self._broken.discard(job_id)
            for job_id, job in reloaded.jobs.items():
                old = self._jobs.get(job_id)
                self._broken.discard(job_id)
                if job is None:
                    self._forget(job_id)
                    self._broken.add(job_id)
                else:
                    job._scheduler = self._scheduler
                    job._jobstore_alias = self._alias
                    kept = False
                    if old is not None and same_trigger(old.trigger, job.trigger):
                        mine, theirs = old.next_run_time, job.next_run_time
                        # In UTC: two times of one zone compare on the wall clock.
                        if (
                            mine is not None
                            and theirs is not None
                            and mine.timestamp() > theirs.timestamp()
                        ):
                            job.next_run_time = mine
                            kept = True
                    self._dirty.discard(job_id)
                    self._hold(job)
                    self._index(job)
                    if kept:  # the row is behind: write our progress into it
                        self._dirty.add(job_id)
                self._keys[job_id] = reloaded.keys[job_id]
            for job_id, theirs in reloaded.times.items():
                if job_id in changed:
                    # Not held: the new row is the truth (loaded when it comes due).
                    self._broken.discard(job_id)
                    self._drop(job_id)
                    self._set_due(job_id, theirs)
                    self._keys[job_id] = reloaded.keys[job_id]
                elif job_id not in self._broken:
                    self._take_later(job_id, theirs)
        return {*reloaded.changed, *reloaded.gone}

    def _take_later(self, job_id: str, theirs: float | None) -> None:
        """The row of an unchanged job, as another node may have advanced it: its next run
        time is taken unless the one here is later."""
        mine = self._due_at.get(job_id)
        if mine == theirs or (mine is not None and theirs is not None and mine > theirs):
            return
        self._drop(job_id)  # the row is ahead of what is held: loaded from it when due
        self._set_due(job_id, theirs)

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

    def _load(self, ids: list[str]) -> None:
        """Unpickle the rows of these jobs, not held yet, and hold them."""
        aps = tables.apscheduler_jobs
        blobs: dict[str, bytes] = {}
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            for chunk in chunks(ids):
                for job_id, blob in conn.execute(
                    select(aps.c.id, aps.c.job_state).where(aps.c.id.in_(chunk))
                ):
                    blobs[job_id] = blob
        restored = {i: self._restore(i, blobs[i]) if i in blobs else None for i in ids}
        with self._lock:
            for job_id, job in restored.items():
                if job_id in self._jobs or job_id not in self._keys:
                    continue  # loaded or removed meanwhile
                if job is None:
                    self._broken.add(job_id)
                    self._due_at.pop(job_id, None)
                    continue
                mine, theirs = self._due_at.get(job_id), _when(job)
                if mine is not None and (theirs is None or mine > theirs):
                    # Advanced here past the row (its write was refused or is pending).
                    zone = job.next_run_time.tzinfo if job.next_run_time is not None else UTC
                    job.next_run_time = datetime.fromtimestamp(mine, zone)
                    self._dirty.add(job_id)
                self._hold(job)
                self._index(job)

    def _held(self, ids: Iterable[str]) -> list[Job]:
        """The jobs of these ids that can be loaded, loading those not held."""
        with self._lock:
            wanted = [i for i in ids if i in self._keys and i not in self._broken]
            missing = [i for i in wanted if i not in self._jobs]
        if missing:
            self._load(missing)
        now = time.monotonic()
        with self._lock:
            jobs = [self._jobs[i] for i in wanted if i in self._jobs]
            for job in jobs:
                self._used[job.id] = now
        return jobs

    def paused(self, job_id: str) -> bool:
        """Paused by its file or by an operator."""
        job = self.lookup_job(job_id)
        key = self._keys.get(job_id)
        if job is None or key is None:
            return False
        override = key[1]
        return bool(override if override is not None else job.args[1].get("paused", False))

    def spec_hash(self, job_id: str) -> str | None:
        key = self._keys.get(job_id)
        return key[0] if key else None

    def count(self) -> int:
        """Jobs stored and loadable (without loading them)."""
        with self._lock:
            return len(self._keys) - len(self._broken)

    def held(self) -> int:
        """Jobs loaded in memory now."""
        with self._lock:
            return len(self._jobs)

    # --- the BaseJobStore interface --------------------------------------------------------
    def lookup_job(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._used[job_id] = time.monotonic()
                return job
        found = self._held([job_id])
        return found[0] if found else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        moment = now.timestamp()
        with self._lock:
            heap, due_at = self._heap, self._due_at
            keep: list[tuple[float, str]] = []
            while heap and heap[0][0] <= moment:
                entry = heapq.heappop(heap)
                when, job_id = entry
                if due_at.get(job_id) == when:
                    keep.append(entry)
            # Still due until the pass advances them: a failed pass must not lose them.
            ids: dict[str, None] = {}
            for entry in keep:
                if entry[1] not in ids:
                    ids[entry[1]] = None
                    heapq.heappush(heap, entry)
        jobs = self._held(ids)
        with self._lock:
            # As loaded: a row may be due later than its index said.
            return [j for j in jobs if due_at.get(j.id, moment + 1) <= moment]

    def get_next_run_time(self) -> datetime | None:
        with self._lock:
            heap = self._heap
            while heap:
                when, job_id = heap[0]
                if self._due_at.get(job_id) == when:
                    job = self._jobs.get(job_id)
                    if job is not None:
                        return job.next_run_time  # type: ignore[no-any-return]
                    return datetime.fromtimestamp(when, UTC)
                heapq.heappop(heap)
        return None

    def get_all_jobs(self) -> list[Job]:
        """Every job, loading them all: for tests and tools, not for a serving path (see
        `count`)."""
        with self._lock:
            ids = list(self._keys)
        jobs = self._held(ids)
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
            if job.id in self._keys:
                raise ConflictingIdError(job.id)
            raise NotImplementedError(
                "jobs are added with `runner apply` or `POST /api/jobs`, not through the scheduler"
            )

    def update_job(self, job: Job) -> None:
        with self._lock:
            if job.id not in self._keys:
                raise JobLookupError(job.id)
            self._hold(job)
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
        job = self.lookup_job(job_id)
        with self._lock:
            if job is None or self._jobs.get(job_id) is not job:
                raise JobLookupError(job_id)
            assert job is not None
            job.next_run_time = None
            self._index(job)
            self._dirty.add(job_id)

    def remove_all_jobs(self) -> None:
        raise NotImplementedError("jobs are removed with `runner apply`")

    # --- write-behind -------------------------------------------------------------------
    def flush(self) -> int:
        """Persist next run times advanced since the last flush, unless an apply replaced a job;
        then let go of the jobs not used for `keep_for` seconds."""
        written = self._write()
        self._evict()
        return written

    def _evict(self) -> None:
        """Only under the scheduler's pass lock: a pass holds on to the objects it decides."""
        limit = time.monotonic() - self.keep_for
        with self._lock:
            idle = [i for i, used in self._used.items() if used <= limit and i not in self._dirty]
            for job_id in idle:
                self._drop(job_id)

    def _write(self) -> int:
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
                end_if_frozen(conn)
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
