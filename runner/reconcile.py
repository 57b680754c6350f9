"""Apply a plan to the store in one transaction; `--dry-run` stops just before the writes."""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Integer, Text, bindparam, delete, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from runner import jobstate, triggers, unchanged
from runner.errors import InvalidJobFiles, StoreError
from runner.models import Trigger
from runner.plan import Desired, Known, Plan, Stored, Wanted, compute, needs_full, spec_text
from runner.store import bulk, migrate, tables
from runner.store.batches import chunks
from runner.store.engine import READ_ONLY, describe_failure, is_postgres

log = logging.getLogger("runner.reconcile")

APPLY_LOCK = 0x52554E41  # "RUNA": one apply at a time per PostgreSQL database
CHANGE_CHANNEL = "runner_changed"


def read_stored(conn: Connection) -> dict[str, Stored]:
    t = tables.runner_jobs
    rows = conn.execute(
        select(t.c.id, t.c.spec_hash, t.c.spec_format, t.c.file, t.c.line, t.c.paused_override)
    )
    stored = {}
    for row in rows:
        if row.spec_format > tables.SPEC_FORMAT:
            raise StoreError(
                f"job {row.id} was stored by a newer runner (spec format {row.spec_format}); "
                "upgrade runner"
            )
        stored[row.id] = Stored(row.id, row.spec_hash, row.file, row.line, row.paused_override)
    return stored


def _spec_reader(conn: Connection) -> Callable[[list[str]], dict[str, dict[str, Any]]]:
    def read(ids: list[str]) -> dict[str, dict[str, Any]]:
        t = tables.runner_jobs
        specs: dict[str, dict[str, Any]] = {}
        for chunk in chunks(ids):
            for job_id, spec in conn.execute(select(t.c.id, t.c.spec).where(t.c.id.in_(chunk))):
                specs[job_id] = json.loads(spec)
        return specs

    return read


Complete = Callable[[Mapping[str, Stored]], Sequence[Wanted]]
"""Given the stored jobs, the jobs to plan with (files whose Known jobs do not do are read in
full first)."""


def apply(
    engine: Engine,
    desired: Sequence[Wanted],
    *,
    dry_run: bool = False,
    prune: bool = True,
    now: datetime | None = None,
    expand: Callable[[set[str]], Sequence[Wanted]] | None = None,
) -> tuple[Plan, bool]:
    """Returns the plan and whether it was written.

    `desired` may hold `Known` jobs only with `expand`, which gives the jobs again with those
    of the named files full (the ones the store does not hold as they are)."""

    def complete(stored: Mapping[str, Stored]) -> Sequence[Wanted]:
        known = [w for w in desired if isinstance(w, Known)]
        files = needs_full(known, stored) if known else set()
        if not files:
            return desired
        if expand is None:
            raise TypeError("Known jobs the store does not hold, and no way to read them")
        return expand(files)

    return _apply(engine, complete, dry_run, prune, now, None)


def apply_files(
    engine: Engine,
    paths: Sequence[str],
    *,
    dry_run: bool = False,
    prune: bool = True,
    now: datetime | None = None,
) -> tuple[Plan, bool]:
    """Validate the job files and apply them: `apply` and `apply --dry-run`.

    Files unchanged since the last successful apply to this database are not parsed again
    (runner.unchanged says why that is sound). Raises InvalidJobFiles with every problem,
    before anything is written.
    """
    memo = unchanged.read(engine)
    reader = unchanged.Reader(memo, import_targets=True)
    prepared = reader.load(paths)
    if prepared.problems:
        raise InvalidJobFiles(prepared.problems)

    def complete(stored: Mapping[str, Stored]) -> Sequence[Wanted]:
        nonlocal prepared
        while True:
            known = [w for w in prepared.wanted if isinstance(w, Known)]
            files = needs_full(known, stored) - prepared.full
            if not files:
                return prepared.wanted
            prepared = reader.load(paths, prepared.full | files)
            if prepared.problems:  # a file changed on disk meanwhile
                raise InvalidJobFiles(prepared.problems)

    def record(conn: Connection) -> None:
        unchanged.write(conn, prepared.entries, memo)

    return _apply(engine, complete, dry_run, prune, now, record)


def _apply(
    engine: Engine,
    complete: Complete,
    dry_run: bool,
    prune: bool,
    now: datetime | None,
    record: Callable[[Connection], None] | None,
) -> tuple[Plan, bool]:
    try:
        if dry_run:
            return _plan_only(engine, complete, prune), False
        migrate.ensure(engine)
        with engine.begin() as conn:
            if is_postgres(engine):
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
            stored = read_stored(conn)
            desired = complete(stored)
            plan = compute(desired, stored, prune, _spec_reader(conn))
            if plan.changed or plan.moved:
                _write(conn, plan, desired, now or datetime.now(UTC))
            if plan.changed:
                bump_generation(conn)
            if record is not None:
                record(conn)
            return plan, plan.changed
    except StoreError:
        raise
    except (DBAPIError, SQLAlchemyError) as exc:
        raise StoreError(describe_failure(exc, str(engine.url))) from None


def _plan_only(engine: Engine, complete: Complete, prune: bool) -> Plan:
    """The plan a real apply would carry out, read without writing anything, not even the schema.

    A collision with a job the runner does not own fails here too, as the apply would.
    """
    if missing_sqlite_file(engine):  # connecting would create the file
        return compute(complete({}), {}, prune, lambda ids: {})
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        names = migrate.existing_tables(conn)
        stored = read_stored(conn) if tables.runner_jobs.name in names else {}
        plan = compute(complete(stored), stored, prune, _spec_reader(conn))
        if tables.apscheduler_jobs.name in names:
            refuse_foreign(conn, plan.create)
        return plan


def missing_sqlite_file(engine: Engine) -> bool:
    """Whether connecting would create the SQLite file (so a reader must not connect)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return False
    return not database.startswith("file:") and not os.path.exists(database)


def bump_generation(conn: Connection) -> None:
    """Tell running schedulers the store changed: a counter to poll, and NOTIFY on PostgreSQL."""
    meta = tables.runner_meta
    conn.execute(
        update(meta)
        .where(meta.c.key == "generation")
        .values(value=(meta.c.value.cast(Integer) + 1).cast(Text))
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {CHANGE_CHANNEL}")


def read_generation(conn: Connection) -> int:
    meta = tables.runner_meta
    value = conn.execute(select(meta.c.value).where(meta.c.key == "generation")).scalar()
    return int(value or 0)


def applied_by() -> str:
    """Who wrote a stored job, as `runner show` prints it: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry and no $USER (containers)
        user = f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def owned_row(want: Desired, now: datetime, by: str) -> dict[str, Any]:
    """The `runner_jobs` row of a job: its spec and where it came from."""
    return {
        "id": want.sourced.job.id,
        "spec": want.text if want.text is not None else spec_text(want.spec),
        "spec_hash": want.hash,
        "spec_format": tables.SPEC_FORMAT,
        "file": want.sourced.file,
        "line": want.sourced.line,
        "applied_at": now,
        "applied_by": by,
    }


def insert_new(conn: Connection, wants: Sequence[Desired], now: datetime, by: str) -> None:
    """Store jobs that are not stored yet: both rows, scheduled from `now`."""
    refuse_foreign(conn, [w.sourced.job.id for w in wants])
    # Rows are made as the database takes them in, so it stores while the next are made.
    bulk.insert(conn, tables.runner_jobs, (owned_row(w, now, by) for w in wants))
    built: Built = {}
    dumper = jobstate.StateDumper()
    rows = (fresh_row(w, now, None, built, dumper) for w in wants)
    bulk.insert(conn, tables.apscheduler_jobs, rows)


def _write(conn: Connection, plan: Plan, desired: Sequence[Wanted], now: datetime) -> None:
    """Creates and updates are always of Desired jobs (see plan.compute); moves need only
    a position."""
    wanted = {w.id: w for w in desired}
    by_id = {i: w for i, w in wanted.items() if isinstance(w, Desired)}
    by = applied_by()

    def runner_row(want: Desired) -> dict[str, Any]:
        return owned_row(want, now, by)

    aps, own = tables.apscheduler_jobs, tables.runner_jobs
    if plan.create:
        insert_new(conn, [by_id[i] for i in plan.create], now, by)
    if plan.update:
        _update(conn, plan, by_id, now, runner_row)
    if plan.moved:
        conn.execute(
            update(own)
            .where(own.c.id == bindparam("b_id"))
            .values(file=bindparam("b_file"), line=bindparam("b_line")),
            [{"b_id": i, "b_file": wanted[i].file, "b_line": wanted[i].line} for i in plan.moved],
        )
    for chunk in chunks(plan.delete):
        conn.execute(delete(aps).where(aps.c.id.in_(chunk)))
        conn.execute(delete(own).where(own.c.id.in_(chunk)))


def refuse_foreign(conn: Connection, ids: Sequence[str]) -> None:
    aps = tables.apscheduler_jobs
    if ids and conn.execute(select(aps.c.id).limit(1)).first() is None:
        return  # an empty table holds no job of anyone's (a first apply)
    for chunk in chunks(ids):
        taken = conn.execute(select(aps.c.id).where(aps.c.id.in_(chunk))).scalars().first()
        if taken is not None:
            raise StoreError(
                f"job {taken}: apscheduler_jobs already holds a job with this id that runner did "
                "not create; rename one of them"
            )


def _effective_paused(want: Desired, override: bool | None) -> bool:
    return override if override is not None else want.sourced.job.paused


Built = dict[tuple[Trigger, str], tuple[Any, datetime | None]]
"""Triggers built for one `now`, with their first fire, by trigger spec and zone."""


def fresh_row(
    want: Desired,
    now: datetime,
    override: bool | None,
    built: Built | None = None,
    dumper: jobstate.StateDumper | None = None,
) -> dict[str, Any]:
    """`built` shares one trigger (and its first fire) among the jobs of one write whose
    trigger and zone are equal: a trigger depends on nothing else, and is pickled into each
    row as it is. Not with jitter, whose draw is each job's own. `dumper` writes the states
    of one write, pickling what they share once."""
    job = want.sourced.job
    local_now = now.astimezone(ZoneInfo(job.zone))
    shared = built if built is not None and job.trigger.jitter is None else {}
    key = (job.trigger, job.zone)
    if key in shared:
        trigger, first = shared[key]
    else:
        trigger = triggers.build(job, now=local_now)
        first = trigger.get_next_fire_time(None, local_now)
        shared[key] = (trigger, first)
    next_run = None if _effective_paused(want, override) else first
    # A one-off whose time had passed beyond its misfire grace before it was ever applied
    # never runs and is not "missed": in a repository it is usually one that already ran.
    stale = next_run is not None and (now - next_run).total_seconds() > job.misfire_grace_time
    if job.trigger.at is not None and stale:
        next_run = None
    if dumper is not None:
        blob = dumper.state(job, want.spec, trigger, next_run)
    else:
        blob = jobstate.dumps(jobstate.build_state(job, want.spec, trigger, next_run))
    return {"id": job.id, "next_run_time": jobstate.timestamp(next_run), "job_state": blob}


def _update(
    conn: Connection, plan: Plan, by_id: dict[str, Desired], now: datetime, runner_row: Any
) -> None:
    aps, own = tables.apscheduler_jobs, tables.runner_jobs
    ids = [u.id for u in plan.update]
    current: dict[str, Any] = {}
    overrides: dict[str, bool | None] = {}
    for chunk in chunks(ids):
        current.update(
            conn.execute(select(aps.c.id, aps.c.job_state).where(aps.c.id.in_(chunk))).all()
        )
        overrides.update(
            conn.execute(select(own.c.id, own.c.paused_override).where(own.c.id.in_(chunk))).all()
        )
    rows = []
    for upd in plan.update:
        want = by_id[upd.id]
        override = overrides.get(upd.id)
        blob = current.get(upd.id)
        paused_changed = "paused" in upd.changes
        if blob is None or upd.retrigger or (paused_changed and override is None):
            rows.append(fresh_row(want, now, override))
            continue
        state = jobstate.refresh_state(jobstate.loads(blob), want.sourced.job, want.spec)
        rows.append(
            {
                "id": upd.id,
                "next_run_time": jobstate.timestamp(state["next_run_time"]),
                "job_state": jobstate.dumps(state),
            }
        )
    missing = [r for r in rows if r["id"] not in current]
    present = [r for r in rows if r["id"] in current]
    if missing:
        conn.execute(aps.insert(), missing)
    if present:
        conn.execute(
            update(aps)
            .where(aps.c.id == bindparam("b_id"))
            .values(next_run_time=bindparam("b_next"), job_state=bindparam("b_state")),
            [
                {"b_id": r["id"], "b_next": r["next_run_time"], "b_state": r["job_state"]}
                for r in present
            ],
        )
    columns = ("spec", "spec_hash", "spec_format", "file", "line", "applied_at", "applied_by")
    conn.execute(
        update(own)
        .where(own.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in columns}),
        [{f"b_{k}": v for k, v in runner_row(by_id[i]).items()} for i in ids],
    )
