"""What the status page reads, bounded so a store of 100,000 jobs still answers at once.

The job list is a page of PAGE_SIZE jobs (keyset on the id, so page 1,000 costs what page 1
costs); their last STRIP outcomes come in one query with a window function (SQLite and
PostgreSQL both have them), never one query per job; the timeline unpickles the triggers of
at most TIMELINE_JOBS jobs, those due first, and previews at most FIRES_PER_JOB fires each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from runner import jobstate, queries
from runner.plan import source
from runner.store import tables
from runner.store.engine import READ_ONLY
from runner.triggers import next_fire_times

PAGE_SIZE = 100
STRIP = 30
"""Outcomes per job in the list's strip, the way CI systems show the last builds."""
TIMELINE_HOURS = 24
TIMELINE_JOBS = 50
TIMELINE_SCAN = 500
"""Rows read, soonest first, to find TIMELINE_JOBS unpaused ones (paused is in the spec)."""
FIRES_PER_JOB = 48
DUE_COUNT_LIMIT = 10_000
"""Jobs due in the window are counted up to here ("10000+"): the exact number costs a scan."""
FAILURES = 10


@dataclass(frozen=True, slots=True)
class Listing:
    jobs: list[dict[str, Any]]
    total: int
    next_after: str | None
    """The id to pass as `?after=` for the next page; None on the last page."""


@dataclass(frozen=True, slots=True)
class Lane:
    job_id: str
    fires: list[datetime]
    more: bool
    """True when the job fires more often in the window than FIRES_PER_JOB."""


@dataclass(frozen=True, slots=True)
class Timeline:
    start: datetime
    end: datetime
    lanes: list[Lane]
    due: int
    """Jobs due in the window (paused ones counted), of which `lanes` shows the soonest."""
    shown_limit: int = TIMELINE_JOBS
    notes: list[str] = field(default_factory=list)


def _read(engine: Engine) -> Connection:
    return engine.connect().execution_options(**{READ_ONLY: True})


def paused_state(spec: dict[str, Any], override: bool | None) -> tuple[bool, str]:
    """Whether the job is paused, and who decided: the file or an operator."""
    in_file = bool(spec.get("paused", False))
    if override is None:
        return in_file, "paused in its file" if in_file else ""
    if override:
        return True, "paused by an operator"
    return False, "resumed by an operator (its file says paused)" if in_file else ""


def listing(engine: Engine, after: str | None = None, limit: int = PAGE_SIZE) -> Listing:
    own, aps = tables.runner_jobs, tables.apscheduler_jobs
    page = select(own.c.id).order_by(own.c.id).limit(limit + 1)
    if after is not None:
        page = page.where(own.c.id > after)
    # The page's ids first: joined whole, PostgreSQL merges from the first row of both tables.
    ids = page.subquery()
    statement = (
        select(own.c.id, own.c.spec, own.c.file, own.c.line, own.c.paused_override)
        .add_columns(aps.c.next_run_time)
        .select_from(ids.join(own, own.c.id == ids.c.id).outerjoin(aps, aps.c.id == own.c.id))
        .order_by(own.c.id)
    )
    with _read(engine) as conn, conn.begin():
        rows = conn.execute(statement).all()
        total = conn.execute(select(func.count()).select_from(own)).scalar_one()
    jobs = []
    for row in rows[:limit]:
        spec = json.loads(row.spec)
        paused, why = paused_state(spec, row.paused_override)
        trigger = dict(spec["trigger"])
        trigger.setdefault("timezone", spec.get("timezone", "UTC"))
        next_run = (
            datetime.fromtimestamp(row.next_run_time, UTC)
            if row.next_run_time is not None
            else None
        )
        jobs.append(
            {
                "id": row.id,
                "target": spec.get("target"),
                "command": spec.get("command"),
                "description": spec.get("description"),
                "trigger": trigger,
                "next_run_time": next_run,
                "paused": paused,
                "paused_why": why,
                "source": source(row.file, row.line),
            }
        )
    more = len(rows) > limit
    return Listing(jobs, int(total), jobs[-1]["id"] if more and jobs else None)


def strips(
    engine: Engine, job_ids: Sequence[str], size: int = STRIP
) -> dict[str, list[dict[str, Any]]]:
    """The last `size` attempts of each job, oldest first, in one query."""
    if not job_ids:
        return {}
    runs = tables.runner_runs
    ranked = (
        select(
            runs.c.run_id,
            runs.c.job_id,
            runs.c.scheduled_at,
            runs.c.started_at,
            runs.c.finished_at,
            runs.c.duration,
            runs.c.status,
            runs.c.attempt,
            func.row_number()
            .over(partition_by=runs.c.job_id, order_by=runs.c.run_id.desc())
            .label("rank"),
        )
        .where(runs.c.job_id.in_(list(job_ids)))
        .subquery()
    )
    statement = (
        select(ranked).where(ranked.c.rank <= size).order_by(ranked.c.job_id, ranked.c.run_id)
    )
    out: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
    with _read(engine) as conn, conn.begin():
        for row in conn.execute(statement):
            run = dict(row._mapping)
            run["duration"] = queries.duration(run)
            out[row.job_id].append(run)
    return out


def failures(engine: Engine, limit: int = FAILURES) -> list[dict[str, Any]]:
    runs = tables.runner_runs
    statement = (
        select(runs.c.run_id, runs.c.job_id, runs.c.attempt, runs.c.status, runs.c.finished_at)
        .add_columns(runs.c.error)
        .where(runs.c.status.in_(queries.FAILED_STATUSES))
        .order_by(runs.c.run_id.desc())
        .limit(limit)
    )
    with _read(engine) as conn, conn.begin():
        return [dict(row._mapping) for row in conn.execute(statement)]


def timeline(
    engine: Engine,
    now: datetime | None = None,
    hours: int = TIMELINE_HOURS,
    max_jobs: int = TIMELINE_JOBS,
) -> Timeline:
    """The fires of the next `hours` of the soonest-due unpaused jobs."""
    start = (now or datetime.now(UTC)).astimezone(UTC)
    end = start + timedelta(hours=hours)
    own, aps = tables.runner_jobs, tables.apscheduler_jobs
    window = and_(aps.c.next_run_time.is_not(None), aps.c.next_run_time <= end.timestamp())
    # The next_run_time index alone first, then the few rows it names: a join ordered by
    # next_run_time would sort the whole store.
    soonest = (
        select(aps.c.id).where(window).order_by(aps.c.next_run_time, aps.c.id).limit(TIMELINE_SCAN)
    )
    with _read(engine) as conn, conn.begin():
        ids = list(conn.execute(soonest).scalars())
        specs = {
            row.id: paused_state(json.loads(row.spec), row.paused_override)[0]
            for row in conn.execute(
                select(own.c.id, own.c.spec, own.c.paused_override).where(own.c.id.in_(ids))
            )
        }
        chosen = [job_id for job_id in ids if specs.get(job_id) is False][:max_jobs]
        counted = select(aps.c.id).where(window).limit(DUE_COUNT_LIMIT).subquery()
        due = conn.execute(select(func.count()).select_from(counted)).scalar_one()
        blobs = dict(
            conn.execute(select(aps.c.id, aps.c.job_state).where(aps.c.id.in_(chosen))).all()
        )
    lanes = []
    for job_id in chosen:
        trigger = jobstate.loads(blobs[job_id])["trigger"]
        fires = [f for f in next_fire_times(trigger, FIRES_PER_JOB + 1, start) if f <= end]
        if fires:
            lanes.append(Lane(job_id, fires[:FIRES_PER_JOB], len(fires) > FIRES_PER_JOB))
    notes = []
    if len(ids) == TIMELINE_SCAN and len(chosen) < max_jobs:
        notes.append(f"only the {TIMELINE_SCAN} soonest-due jobs were looked at")
    return Timeline(start, end, lanes, int(due), max_jobs, notes)
