"""The APScheduler 3 job rows the runner writes.

A stored job never references user code: its callable is the runner's own entry point and
its arguments are the job id and the JSON spec. APScheduler's SQLAlchemyJobStore deletes
rows it cannot unpickle, so a user module that fails to import must never be able to make
a row unloadable.
"""

from __future__ import annotations

import pickle
from datetime import datetime
from typing import Any

from runner.models import Job

ENTRY_POINT = "runner.execute:run_job"
STATE_VERSION = 1


def build_state(
    job: Job, spec: dict[str, Any], trigger: Any, next_run_time: datetime | None
) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "id": job.id,
        "func": ENTRY_POINT,
        "trigger": trigger,
        "executor": "default",
        "args": (job.id, spec),
        "kwargs": {},
        "name": job.id,
        "misfire_grace_time": job.misfire_grace_time,
        "coalesce": job.coalesce,
        "max_instances": job.max_instances,
        "next_run_time": next_run_time,
    }


def refresh_state(state: dict[str, Any], job: Job, spec: dict[str, Any]) -> dict[str, Any]:
    """A stored state with everything but its trigger and next run time replaced."""
    fresh = dict(state)
    fresh.update(
        args=(job.id, spec),
        misfire_grace_time=job.misfire_grace_time,
        coalesce=job.coalesce,
        max_instances=job.max_instances,
    )
    return fresh


def dumps(state: dict[str, Any]) -> bytes:
    return pickle.dumps(state, pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes) -> dict[str, Any]:
    state = pickle.loads(blob)
    if not isinstance(state, dict):
        raise ValueError("job_state is not a mapping")
    return state


def timestamp(moment: datetime | None) -> float | None:
    """The `next_run_time` column: UTC epoch seconds, as SQLAlchemyJobStore writes it."""
    return moment.timestamp() if moment is not None else None
