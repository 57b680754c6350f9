"""Jobs an application adds while serving (`POST /api/jobs`, `Runner.add_job`), beside the files.

A body is checked exactly as a job file is: it is read as a one-job file by the same reader
and models, then its target against the same allowlist, with the same signature check. It is
stored with the owner `api` (see `plan.RUNTIME_FILE`), which every apply leaves alone; an id
belongs either to a file or to the API, so a collision is refused in both directions. Each
change bumps the store's generation, so every replica reloads it at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Integer, delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from runner import jobfiles, reconcile, validate
from runner.errors import JobNotFound, Problem, RunnerError, StoreError, printable
from runner.jobfiles import SourcedJob
from runner.plan import RUNTIME_FILE, RUNTIME_LINE, Desired, IdTaken, is_runtime
from runner.store import migrate, tables
from runner.store.engine import describe_failure, is_postgres


class InvalidJob(RunnerError):
    """The job given at run time is not valid; the message names the job and the field."""


class NotRuntime(RunnerError):
    """The job comes from a file: only its file (and an apply) may remove it."""


def _say(problem: Problem) -> str:
    parts = [f"job {problem.job}"] if problem.job else []
    if problem.field:
        parts.append(problem.field)
    parts.append(problem.message)
    return printable(": ".join(parts))


def parse(job: Mapping[str, Any]) -> Desired:
    """The job as an apply would store it, or InvalidJob listing every problem on one line."""
    if not isinstance(job, Mapping):
        raise InvalidJob(f"a job must be an object of job fields, got {type(job).__name__}")
    try:
        text = json.dumps({"jobs": [dict(job)]}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"a job holds JSON values only: {exc}") from None
    jobs, problems = jobfiles.parse_file(RUNTIME_FILE, text.encode())
    if not problems:
        problems = validate.check_targets(jobs, import_targets=True)
    if problems:
        raise InvalidJob("; ".join(_say(p) for p in problems))
    return Desired.of(SourcedJob(jobs[0].job, RUNTIME_FILE, RUNTIME_LINE, {}))


def _locked(conn: Connection) -> None:
    """One writer at a time with applies, so a file cannot take the id meanwhile."""
    if is_postgres(conn.engine):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({reconcile.APPLY_LOCK})")


def _holder(conn: Connection, job_id: str) -> tuple[str, int] | None:
    own = tables.runner_jobs
    row = conn.execute(select(own.c.file, own.c.line).where(own.c.id == job_id)).first()
    return None if row is None else (row.file, row.line)


def add(engine: Engine, job: Mapping[str, Any], now: datetime | None = None) -> str:
    """Validate and store one job with the owner `api`; returns its id."""
    want = parse(job)
    job_id = want.sourced.job.id
    migrate.ensure(engine)
    try:
        _insert(engine, want, now or datetime.now(UTC))
    except SQLAlchemyError as exc:
        raise StoreError(describe_failure(exc, str(engine.url))) from None
    return job_id


def _insert(engine: Engine, want: Desired, now: datetime) -> None:
    job_id = want.sourced.job.id
    with engine.begin() as conn:
        _locked(conn)
        held = _holder(conn, job_id)
        if held is not None and is_runtime(*held):
            raise IdTaken(
                f"job {job_id}: id: a job added at run time already has this id; "
                f"delete it first (DELETE /api/jobs/{job_id})"
            )
        if held is not None:
            raise IdTaken(
                f"job {job_id}: id: already defined in the job file {held[0]}:{held[1]}; "
                "a job added at run time never replaces a file job: choose another id"
            )
        try:
            reconcile.insert_new(conn, [want], now, reconcile.applied_by())
        except StoreError as exc:  # a row of apscheduler_jobs the runner did not create
            raise IdTaken(str(exc)) from None
        _raise_schema_version(conn)
        reconcile.bump_generation(conn)


def _raise_schema_version(conn: Connection) -> None:
    """An older runner would prune this job as missing from its files: make it refuse."""
    meta = tables.runner_meta
    conn.execute(
        update(meta)
        .where(
            meta.c.key == "schema_version",
            meta.c.value.cast(Integer) < tables.SCHEMA_VERSION,
        )
        .values(value=str(tables.SCHEMA_VERSION))
    )


def remove(engine: Engine, job_id: str) -> None:
    """Delete a job added at run time (its run history stays); a file job is refused."""
    try:
        _delete(engine, job_id)
    except SQLAlchemyError as exc:
        raise StoreError(describe_failure(exc, str(engine.url))) from None


def _delete(engine: Engine, job_id: str) -> None:
    own, aps = tables.runner_jobs, tables.apscheduler_jobs
    with engine.begin() as conn:
        _locked(conn)
        held = _holder(conn, job_id)
        if held is None:
            raise JobNotFound(f"no stored job {job_id!r}; run `runner jobs` to list them")
        if not is_runtime(*held):
            raise NotRuntime(
                f"job {job_id}: comes from the job file {held[0]}:{held[1]}; "
                "remove it there and apply, only jobs added at run time are deleted here"
            )
        conn.execute(delete(aps).where(aps.c.id == job_id))
        conn.execute(delete(own).where(own.c.id == job_id))
        reconcile.bump_generation(conn)
