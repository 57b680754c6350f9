"""Operational pause and resume: kept in the database beside the job, never in the YAML.

An override records the state an operator chose when it differs from the file's `paused`.
It outlives applies (the plan shows it as `! override`) until an operator lifts it with the
opposite command, which returns the job to what its file says.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, update

from runner import jobstate
from runner.errors import JobNotFound
from runner.reconcile import APPLY_LOCK, bump_generation
from runner.store import migrate, tables
from runner.store.engine import is_postgres


def set_paused(engine: Engine, job_id: str, paused: bool, now: datetime | None = None) -> bool:
    """Pause or resume a job; returns whether anything changed."""
    migrate.ensure(engine)
    own, aps = tables.runner_jobs, tables.apscheduler_jobs
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        if is_postgres(engine):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
        row = conn.execute(
            select(own.c.spec, own.c.paused_override).where(own.c.id == job_id)
        ).first()
        if row is None:
            raise JobNotFound(f"no stored job {job_id!r}; run `runner jobs` to list them")
        spec = json.loads(row.spec)
        file_paused = bool(spec.get("paused", False))
        current = row.paused_override if row.paused_override is not None else file_paused
        if current == paused:
            return False
        override = None if paused == file_paused else paused
        blob = conn.execute(select(aps.c.job_state).where(aps.c.id == job_id)).scalar()
        if blob is not None:
            state = jobstate.loads(blob)
            if paused:
                state["next_run_time"] = None
            else:
                zone = ZoneInfo(spec["trigger"].get("timezone") or spec.get("timezone", "UTC"))
                state["next_run_time"] = state["trigger"].get_next_fire_time(
                    None, now.astimezone(zone)
                )
            conn.execute(
                update(aps)
                .where(aps.c.id == job_id)
                .values(
                    next_run_time=jobstate.timestamp(state["next_run_time"]),
                    job_state=jobstate.dumps(state),
                )
            )
        # The hash changes with the override so running schedulers reload the row.
        conn.execute(update(own).where(own.c.id == job_id).values(paused_override=override))
        bump_generation(conn)
    return True
