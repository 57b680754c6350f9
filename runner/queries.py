"""Read the store for `runner jobs`, the API and the status page, and run a job by hand."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from runner import fileproblems, history, jobstate
from runner.errors import JobNotFound, StoreError
from runner.execute import Fire, Outcome, run_fire
from runner.executors.procrastinate import WORKER_SUFFIX
from runner.leadership import MANUAL_SUFFIX, NODE_STALE_SECONDS, RENEW_EVERY, Leadership
from runner.plan import source
from runner.reconcile import missing_sqlite_file
from runner.store import migrate, tables
from runner.store.engine import READ_ONLY, connect, describe_failure, is_postgres, masked
from runner.triggers import next_fire_times


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
            names = migrate.existing_tables(conn)
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
            own.c.file,
            own.c.line,
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
    in_flight = (
        select(runs.c.job_id, runs.c.status, func.count())
        .where(runs.c.status.in_(IN_FLIGHT))
        .group_by(runs.c.job_id, runs.c.status)
    )
    if job_id is not None:
        statement = statement.where(own.c.id == job_id)
        in_flight = in_flight.where(runs.c.job_id == job_id)
    out = []
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        counts = {(j, status): int(n) for j, status, n in conn.execute(in_flight)}
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
                    "target": spec.get("target"),
                    "command": spec.get("command"),
                    "trigger": trigger,
                    "next_run_time": _iso(next_run),
                    "paused": bool(paused),
                    "last_status": row.status,
                    "last_run_at": _iso(row.finished_at),
                    "source": source(row.file, row.line),
                    # Attempts handed over and waiting for a worker, and running anywhere.
                    "queued": counts.get((row.id, "queued"), 0),
                    "running": counts.get((row.id, "running"), 0),
                }
            )
    return out


def runs(
    conn: Connection,
    job_id: str | None = None,
    statuses: Sequence[str] = (),
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """History rows, newest first, filtered as `runner runs` and `/api/runs` offer."""
    table = tables.runner_runs
    statement = select(table).order_by(table.c.run_id.desc()).limit(limit)
    if job_id is not None:
        statement = statement.where(table.c.job_id == job_id)
    if statuses:
        statement = statement.where(table.c.status.in_(list(statuses)))
    if since is not None:
        statement = statement.where(table.c.scheduled_at >= history.as_utc(since))
    return [dict(row._mapping) for row in conn.execute(statement)]


def duration(row: dict[str, Any]) -> float | None:
    """Seconds the attempt ran: recorded when it finished, else measured from its times."""
    if row.get("duration") is not None:
        return float(row["duration"])
    if row.get("started_at") is not None and row.get("finished_at") is not None:
        started, finished = history.as_utc(row["started_at"]), history.as_utc(row["finished_at"])
        return max(0.0, (finished - started).total_seconds())
    return None


def show(engine: Engine, job_id: str, runs_count: int = 10, next_count: int = 5) -> dict[str, Any]:
    """Everything about one job for `runner show`: as stored, when next, how it went."""
    listed = jobs(engine, job_id)
    if not listed:
        raise JobNotFound(f"no stored job {job_id!r}; run `runner jobs` to list them")
    own, aps, table = tables.runner_jobs, tables.apscheduler_jobs, tables.runner_runs
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        row = conn.execute(select(own).where(own.c.id == job_id)).one()
        blob = conn.execute(select(aps.c.job_state).where(aps.c.id == job_id)).scalar()
        recent = runs(conn, job_id, limit=runs_count)
        failure = conn.execute(
            select(table)
            .where(table.c.job_id == job_id, table.c.status.in_(FAILED_STATUSES))
            .order_by(table.c.run_id.desc())
            .limit(1)
        ).first()
    job = listed[0]
    upcoming: list[datetime] = []
    if blob is not None and not job["paused"] and next_count:
        upcoming = next_fire_times(jobstate.loads(blob)["trigger"], next_count, datetime.now(UTC))
    last_failure = None
    if failure is not None:
        failed = dict(failure._mapping)
        last_failure = {**run_json(failed), "traceback": failed["traceback"]}
    return {
        **job,
        "spec": json.loads(row.spec),
        "override": None if row.paused_override is None else bool(row.paused_override),
        "applied_at": _iso(row.applied_at),
        "applied_by": row.applied_by,
        "next": [_iso(t) for t in upcoming],
        "runs": [run_json(r) for r in recent],
        "last_failure": last_failure,
    }


FAILED_STATUSES = ("failed", "timed_out", "interrupted")
IN_FLIGHT = ("queued", "running")


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    """A run as `runner runs --output json` prints it, plus its duration in seconds."""
    return {**history.run_as_json(row), "duration": duration(row)}


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
    node = node or f"{socket.gethostname()}:{os.getpid()}{MANUAL_SUFFIX}"
    fire = Fire(job_id, spec, datetime.now(UTC))
    # A node like any other while it runs: if this process dies, its heartbeat stops and the
    # serving leader closes the run `interrupted`, as for a serve node that died.
    presence = Leadership(engine, node)
    presence.heartbeat()
    beating = threading.Event()
    threading.Thread(
        target=_heartbeat, args=(presence, beating), name="runner-run-heartbeat", daemon=True
    ).start()
    try:
        with engine.begin() as conn:
            history.claim(conn, [(job_id, fire.scheduled_at)], node)
        writer = history.Writer(engine, node)
        writer.start()
        try:
            return asyncio.run(run_fire(fire, writer))
        finally:
            writer.stop()
    finally:
        beating.set()
        presence.resign()


def _heartbeat(presence: Leadership, done: threading.Event) -> None:
    while not done.wait(RENEW_EVERY):
        try:
            presence.heartbeat()
        except Exception:  # the database is away: the next beat tries again
            continue


FORGET_DEAD_AFTER = 3600.0
"""A node silent this long is left out of `runner status` (shown with --all)."""


def status(engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """Leadership and node liveness, for `runner status` and the API.

    A node is `dead` once its heartbeat is older than the leadership's stale limit, however
    it ended (SIGKILL, a crash, a lost host); `stopped` once it shut down cleanly. On SQLite
    there is no lease (one node only), so the live node is the leader.
    """
    lease, nodes = tables.runner_lease, tables.runner_nodes
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        row = conn.execute(select(lease).where(lease.c.name == "scheduler")).first()
        node_rows = conn.execute(select(nodes).order_by(nodes.c.node)).all()
        problems = fileproblems.by_node(conn)
    now = now or datetime.now(UTC)
    listed = []
    for node_row in node_rows:
        age = max(0.0, (now - history.as_utc(node_row.heartbeat_at)).total_seconds())
        stopped = node_row.stopped_at is not None
        role = "stopped" if stopped else ("dead" if age > NODE_STALE_SECONDS else "live")
        listed.append(
            {
                "node": node_row.node,
                "role": role,
                "started_at": _iso(node_row.started_at),
                "heartbeat_at": _iso(node_row.heartbeat_at),
                "heartbeat_age_seconds": round(age, 1),
                "stopped_at": _iso(node_row.stopped_at),
                "file_problems": [] if stopped else problems.get(node_row.node, []),
            }
        )
    leader = None
    lease_row = row if row is not None and row.holder and row.lease_until else None
    if is_postgres(engine) and lease_row and history.as_utc(lease_row.lease_until) > now:
        leader = {
            "node": lease_row.holder,
            "since": _iso(lease_row.since),
            "term": lease_row.term,
            "lease_until": _iso(lease_row.lease_until),
        }
    elif not is_postgres(engine):
        live = [n for n in listed if n["role"] == "live"]
        if live:
            leader = {
                "node": live[0]["node"],
                "since": live[0]["started_at"],
                "term": None,
                "lease_until": None,
            }
    for n in listed:
        if n["role"] == "live" and n["node"].endswith(WORKER_SUFFIX):
            n["role"] = "worker"  # a `runner worker`: heartbeats, never leads
        elif n["role"] == "live":
            n["role"] = "leader" if leader and leader["node"] == n["node"] else "standby"
    return {"leader": leader, "nodes": listed}


def current_nodes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes worth an operator's eye: not stopped, and not silent for long."""
    return [
        n
        for n in report["nodes"]
        if n["role"] != "stopped"
        and not (n["role"] == "dead" and n["heartbeat_age_seconds"] > FORGET_DEAD_AFTER)
    ]
