"""Read the store for `runner jobs`, the API and the status page, and run a job by hand."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from runner import history
from runner.errors import JobNotFound, StoreError
from runner.execute import Fire, Outcome, run_fire
from runner.reconcile import missing_sqlite_file
from runner.store import schema, tables
from runner.store.engine import READ_ONLY, connect, describe_failure, masked


def open_existing(url: str, hint: str = "") -> Engine:
    """An engine on a database the runner has already set up; never creates one.

    Commands that read or act on stored jobs must not leave an empty database behind a
    typo in `--db` (SQLite would create the file) and then report that nothing is there.
    """
    engine = connect(url)
    if missing_sqlite_file(engine):
        engine.dispose()
        raise StoreError(
            f"no runner database at {masked(url)}: the file does not exist{hint}; "
            "nothing was created (`runner apply` creates it)"
        )
    try:
        with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            names = schema.existing_tables(conn)
    except StoreError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(describe_failure(exc, url)) from None
    if not {tables.runner_jobs.name, tables.runner_meta.name} <= names:
        engine.dispose()
        raise StoreError(
            f"database {masked(url)} holds no runner tables{hint}; "
            "`runner apply` or `runner serve` sets it up"
        )
    return engine


def _iso(moment: datetime | None) -> str | None:
    return history.as_utc(moment).isoformat() if moment is not None else None


def jobs(engine: Engine, job_id: str | None = None) -> list[dict[str, Any]]:
    """Owned jobs with their next run and last outcome; never unpickles or deletes anything."""
    own, aps, runs = tables.runner_jobs, tables.apscheduler_jobs, tables.runner_runs
    latest = (
        select(runs.c.job_id, func.max(runs.c.run_id).label("run_id"))
        .where(runs.c.status != "running")
        .group_by(runs.c.job_id)
        .subquery()
    )
    statement = (
        select(
            own.c.id,
            own.c.spec,
            own.c.paused_override,
            aps.c.next_run_time,
            runs.c.status,
            runs.c.finished_at,
        )
        .select_from(
            own.outerjoin(aps, aps.c.id == own.c.id)
            .outerjoin(latest, latest.c.job_id == own.c.id)
            .outerjoin(runs, runs.c.run_id == latest.c.run_id)
        )
        .order_by(own.c.id)
    )
    if job_id is not None:
        statement = statement.where(own.c.id == job_id)
    out = []
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        for row in conn.execute(statement):
            spec = json.loads(row.spec)
            paused = (
                row.paused_override
                if row.paused_override is not None
                else spec.get("paused", False)
            )
            next_run = (
                datetime.fromtimestamp(row.next_run_time, UTC)
                if row.next_run_time is not None
                else None
            )
            trigger = dict(spec["trigger"])
            trigger.setdefault("timezone", spec.get("timezone", "UTC"))
            out.append(
                {
                    "id": row.id,
                    "target": spec["target"],
                    "trigger": trigger,
                    "next_run_time": _iso(next_run),
                    "paused": bool(paused),
                    "last_status": row.status,
                    "last_run_at": _iso(row.finished_at),
                }
            )
    return out


def stored_spec(engine: Engine, job_id: str) -> dict[str, Any]:
    own = tables.runner_jobs
    with engine.connect() as conn:
        spec = conn.execute(select(own.c.spec).where(own.c.id == job_id)).scalar()
    if spec is None:
        raise JobNotFound(f"no stored job {job_id!r}; run `runner jobs` to list them")
    return json.loads(spec)  # type: ignore[no-any-return]


def run_once(engine: Engine, job_id: str, node: str | None = None) -> Outcome:
    """Run a stored job now, in this process, with its retries and timeout, recorded."""
    spec = stored_spec(engine, job_id)
    node = node or f"{socket.gethostname()}:{os.getpid()}:manual"
    fire = Fire(job_id, spec, datetime.now(UTC))
    with engine.begin() as conn:
        history.claim(conn, [(job_id, fire.scheduled_at)], node)
    writer = history.Writer(engine, node)
    writer.start()
    try:
        return asyncio.run(run_fire(fire, writer))
    finally:
        writer.stop()


def status(engine: Engine) -> dict[str, Any]:
    """Leadership and node heartbeats, for `runner status` and the API."""
    lease, nodes = tables.runner_lease, tables.runner_nodes
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        row = conn.execute(select(lease).where(lease.c.name == "scheduler")).first()
        node_rows = conn.execute(select(nodes).order_by(nodes.c.node)).all()
    now = datetime.now(UTC)
    leader = None
    if row is not None and row.holder and row.lease_until and history.as_utc(row.lease_until) > now:
        leader = {
            "node": row.holder,
            "since": _iso(row.since),
            "term": row.term,
            "lease_until": _iso(row.lease_until),
        }
    listed = []
    for n in node_rows:
        role = (
            "stopped"
            if n.stopped_at
            else ("leader" if leader and leader["node"] == n.node else "standby")
        )
        listed.append(
            {
                "node": n.node,
                "role": role,
                "started_at": _iso(n.started_at),
                "heartbeat_at": _iso(n.heartbeat_at),
                "stopped_at": _iso(n.stopped_at),
            }
        )
    return {"leader": leader, "nodes": listed}
