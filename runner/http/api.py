"""The JSON control API: the same data as `runner jobs` / `runner runs`, plus run, pause, resume,
and jobs added or deleted at run time (see `runner.runtimejobs`).

Reads go straight to the database, so any node (leader or standby) answers the same.
Control actions need the token (see `runner.http.auth`). "Run now" runs the job in this
server's own runtime, like a scheduled fire: its retries, timeout, `max_instances` and the
history all apply, and a graceful stop waits for it.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from runner import history, jobstate, metrics, queries, runtimejobs
from runner.errors import JobNotFound, StoreError
from runner.execute import Fire, Status
from runner.executors.procrastinate import ProcrastinateExecutor
from runner.http import auth
from runner.overrides import set_paused
from runner.plan import IdTaken
from runner.store import tables
from runner.store.engine import READ_ONLY, describe_failure
from runner.triggers import next_fire_times

if TYPE_CHECKING:
    from runner.http.host import Host

DateTimeText = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
StatusName = Literal[
    "queued", "running", "succeeded", "failed", "timed_out", "interrupted", "missed", "skipped"
]


class Error(BaseModel):
    detail: str = Field(description="What went wrong, for a human.")


class Invalid(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="One line naming the job and the field; a list when the body is not an object."
    )


class JobOut(BaseModel):
    """One job, exactly as `runner jobs --output json` prints it."""

    id: str
    target: str | None = Field(description="`module:attribute`; null for a command job.")
    command: list[str] | None = Field(None, description="The argv of a command job.")
    trigger: dict[str, Any]
    next_run_time: DateTimeText | None
    paused: bool
    last_status: StatusName | None
    last_run_at: DateTimeText | None
    source: str = Field(description="`FILE:LINE` of a file job; `api` for one added at run time.")
    queued: int = Field(
        description="Its attempts handed over to workers and waiting for one (`queued`)."
    )
    running: int = Field(description="Its attempts running now, on any node or worker.")


class RunOut(BaseModel):
    """One attempt, exactly as `runner runs --output json` prints it."""

    run_id: int
    job_id: str
    scheduled_at: DateTimeText
    started_at: DateTimeText | None
    finished_at: DateTimeText | None
    status: StatusName
    attempt: int
    error: str | None
    node: str


class JobDetail(JobOut):
    description: str | None
    labels: dict[str, str]
    spec: dict[str, Any] = Field(
        description="The stored job, with `${VAR}` references unresolved (no secrets)."
    )
    next: list[DateTimeText] = Field(
        description="The next fire times after now, ignoring jitter; empty while paused."
    )
    runs: list[RunOut] = Field(description="The job's most recent attempts, newest first.")


class PauseOut(BaseModel):
    """As `runner pause|resume --output json` prints it."""

    id: str
    paused: bool
    changed: bool


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "No such job"}}
CONTROL: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "Missing or wrong token"},
    403: {"model": Error, "description": "Control actions are disabled, or cross-origin"},
    **NOT_FOUND,
    503: {"model": Error, "description": "Database unreachable, or the runner is not running"},
}
READ: dict[int | str, dict[str, Any]] = {
    503: {"model": Error, "description": "Database unreachable"}
}

JobIdPath = Annotated[str, Path(description="The job id.")]
EXAMPLE_JOB = {
    "id": "weekly-report-alice",
    "target": "myapp.jobs:send_report",
    "kwargs": {"user": "alice"},
    "trigger": {"cron": "0 8 * * mon", "timezone": "Europe/Berlin"},
}


@contextmanager
def database_errors(server: Host) -> Iterator[None]:
    """Database trouble becomes a 503 with a one-line reason, never a 500 with a traceback."""
    try:
        yield
    except runtimejobs.InvalidJob as exc:
        raise HTTPException(422, str(exc)) from None
    except (IdTaken, runtimejobs.NotRuntime) as exc:
        raise HTTPException(409, str(exc)) from None
    except JobNotFound as exc:  # without the CLI's "run `runner jobs`" hint
        raise HTTPException(404, str(exc).split("; run `runner jobs`")[0]) from None
    except StoreError as exc:
        raise HTTPException(503, str(exc)) from None
    except SQLAlchemyError as exc:
        raise HTTPException(503, describe_failure(exc, server.options.db_url)) from None


def control(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(auth.bearer)],
) -> None:
    """Dependency of every control action: the token check."""
    try:
        auth.check(request, auth.bearer_token(request))
    except auth.Denied as denied:
        headers = {"WWW-Authenticate": "Bearer"} if denied.status == 401 else None
        raise HTTPException(denied.status, denied.message, headers=headers) from None


# --- operations shared with the status page -------------------------------------------------
def job_detail(server: Host, job_id: str, count: int = 5, runs: int = 20) -> dict[str, Any]:
    rows = queries.jobs(server.engine, job_id)
    if not rows:
        raise JobNotFound(f"no stored job {job_id!r}")
    job = rows[0]
    spec = queries.stored_spec(server.engine, job_id)
    with server.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        recent = [history.run_as_json(r) for r in history.recent(conn, job_id, runs)]
    upcoming = [] if job["paused"] else fire_times(server, job_id, count)
    return {
        **job,
        "description": spec.get("description"),
        "labels": spec.get("labels", {}),
        "spec": spec,
        "next": [t.astimezone(UTC).isoformat() for t in upcoming],
        "runs": recent,
    }


def fire_times(server: Host, job_id: str, count: int) -> list[datetime]:
    """From the trigger the scheduler holds (a copy: previewing must not touch it)."""
    if count == 0:
        return []
    held = server.scheduler.store.lookup_job(job_id)
    if held is not None:
        trigger = copy.deepcopy(held.trigger)
    else:  # not loaded here yet: the stored row (the runner's own, from runner_jobs)
        aps = tables.apscheduler_jobs
        with server.engine.connect() as conn:
            blob = conn.execute(select(aps.c.job_state).where(aps.c.id == job_id)).scalar()
        if blob is None:
            return []
        trigger = jobstate.loads(blob)["trigger"]
    return next_fire_times(trigger, count, datetime.now(UTC))


def run_now(server: Host, job_id: str) -> dict[str, Any]:
    """Start one run of the job in this server; the claimed attempt row, status `running`."""
    if server.stopping.is_set() or not server.scheduler.running:
        raise HTTPException(503, "the runner is not running (starting or stopping)")
    spec = queries.stored_spec(server.engine, job_id)
    limit = int(spec.get("max_instances", 1))
    if server.runtime.running(job_id) >= limit:
        raise HTTPException(409, f"{job_id} already has {limit} run(s) going (max_instances)")
    fire = Fire(job_id, spec, datetime.now(UTC))
    runs = tables.runner_runs
    key = (
        runs.c.job_id == job_id,
        runs.c.scheduled_at == history.as_utc(fire.scheduled_at),
        runs.c.attempt == 1,
    )
    with server.engine.begin() as conn:
        history.claim(conn, [(job_id, fire.scheduled_at)], server.node)
        row = conn.execute(select(runs).where(*key)).first()
    if row is None:  # cannot happen short of two clicks in one microsecond
        raise HTTPException(409, f"{job_id} was just started by another request")
    if not server.runtime.try_submit(fire, limit):
        with server.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(*key)
                .values(
                    status=Status.SKIPPED,
                    error="previous run still going (max_instances)",
                    finished_at=datetime.now(UTC),
                )
            )
        metrics.fire_marked(job_id, Status.SKIPPED)
        raise HTTPException(409, f"{job_id} already has {limit} run(s) going (max_instances)")
    return history.run_as_json(dict(row._mapping))


def pause(server: Host, job_id: str, paused: bool) -> dict[str, Any]:
    changed = set_paused(server.engine, job_id, paused)
    return {"id": job_id, "paused": paused, "changed": changed}


def add_job(server: Host, job: Any) -> dict[str, Any]:
    """Store a job added at run time and schedule it here now; other nodes follow the signal."""
    job_id = runtimejobs.add(server.engine, job)
    server.scheduler.refresh(ids=[job_id])
    return queries.jobs(server.engine, job_id)[0]


def remove_job(server: Host, job_id: str) -> None:
    runtimejobs.remove(server.engine, job_id)
    server.scheduler.refresh(ids=[job_id])


def iso(moment: datetime | None) -> str | None:
    return history.as_utc(moment).isoformat() if moment is not None else None


# --- health ------------------------------------------------------------------------------
DB_CHECK_TIMEOUT = 2.0


class Ready(BaseModel):
    ready: bool
    reason: str | None = Field(description="Why not ready; null when ready.")
    leader: bool
    scheduler_running: bool
    last_pass_error: str | None
    last_reconcile_error: str | None = Field(
        description="The first of `reconcile_errors`, or the last store error; null when none."
    )
    reconcile_errors: list[str] = Field(
        description="Every problem of the job files now (`FILE:LINE:COL: ...`); not fatal: "
        "a broken file's last valid jobs keep running and other files' changes apply."
    )
    broken_files: list[str] = Field(description="The job files that are invalid now.")


class _Ping:
    """One database round trip in a daemon thread, so a hung database cannot hang a probe."""

    def __init__(self, server: Host) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._server = server
        threading.Thread(target=self._run, name="runner-readyz", daemon=True).start()

    def _run(self) -> None:
        try:
            with self._server.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


_pings: weakref.WeakKeyDictionary[Host, _Ping] = weakref.WeakKeyDictionary()
_pings_lock = threading.Lock()


def database_problem(server: Host, timeout: float = DB_CHECK_TIMEOUT) -> str | None:
    """None when the database answers within `timeout`; a hung check is never stacked up."""
    with _pings_lock:
        ping = _pings.get(server)
        if ping is None or ping.done.is_set():
            ping = _pings[server] = _Ping(server)
    if not ping.done.wait(timeout):
        return f"database did not answer within {timeout:.0f}s"
    if ping.error is not None:
        return describe_failure(ping.error, server.options.db_url)
    return None


def readiness(server: Host) -> tuple[bool, dict[str, Any]]:
    """The database answers and, on the leader, the scheduler runs and its last pass worked."""
    scheduler = server.scheduler
    leading = server.leadership.leading
    pass_error = scheduler.last_pass_error  # read once: the scheduler thread sets it meanwhile
    details: dict[str, Any] = {
        "leader": leading,
        "scheduler_running": bool(scheduler.running),
        "last_pass_error": pass_error,
        "last_reconcile_error": server.last_reconcile_error,
        "reconcile_errors": list(server.reconcile_problems),
        "broken_files": list(server.broken_files),
    }
    reason: str | None = None
    if server.stopping.is_set():
        reason = "stopping"
    elif not scheduler.running:
        reason = "scheduler not running"
    else:
        reason = database_problem(server)
        if reason is None and leading and pass_error:
            reason = f"last scheduling pass failed: {pass_error}"
    return reason is None, {"ready": reason is None, "reason": reason, **details}


def health_router(server: Host) -> APIRouter:
    """`/healthz`, `/readyz` and `/metrics`."""
    health = APIRouter(tags=["health"])
    metrics.watch(server.engine, workers=isinstance(server.runtime, ProcrastinateExecutor))

    @health.get("/healthz", name="runner_healthz", summary="Liveness")
    def healthz() -> dict[str, str]:
        """200 while the process serves HTTP."""
        return {"status": "ok"}

    @health.get(
        "/readyz",
        response_model=Ready,
        responses={503: {"model": Ready, "description": "Not ready; `reason` says why"}},
        name="runner_readyz",
        summary="Readiness",
    )
    def readyz() -> JSONResponse:
        """200 when the database answers and, on the leader, scheduling works; else 503."""
        ready, details = readiness(server)
        return JSONResponse(details, status_code=200 if ready else 503)

    @health.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            501: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        },
        name="runner_metrics",
        summary="Prometheus metrics",
    )
    def prometheus() -> Response:
        """The Prometheus text exposition (see docs/http.md for the names)."""
        if not metrics.ENABLED:
            return PlainTextResponse("prometheus-client is not installed\n", status_code=501)
        metrics.set_leader(server.leadership.leading)
        metrics.set_ready(readiness(server)[0])
        metrics.set_jobs(server.scheduler.store.count())
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return health


# --- the router ----------------------------------------------------------------------------
def router(server: Host) -> APIRouter:
    """The `/api` routes over `server` (include it with any prefix)."""
    api = APIRouter(prefix="/api", tags=["api"])

    @api.get(
        "/jobs",
        response_model=list[JobOut],
        responses=READ,
        summary="List jobs",
        name="runner_api_jobs",
    )
    def list_jobs() -> list[dict[str, Any]]:
        """The stored jobs the runner owns, as `runner jobs --output json`."""
        with database_errors(server):
            return queries.jobs(server.engine)

    @api.post(
        "/jobs",
        status_code=201,
        response_model=JobOut,
        responses={
            **CONTROL,
            400: {"model": Error, "description": "The body is not JSON"},
            409: {"model": Error, "description": "The id is taken (by a file job or another)"},
            422: {
                "model": Invalid,
                "description": "Not a valid job; the message names the field",
            },
        },
        dependencies=[Depends(control)],
        summary="Add a job",
        name="runner_api_add_job",
    )
    def post_job(
        job: Annotated[
            dict[str, Any],
            Body(description="One job in the job-file format, as JSON.", examples=[EXAMPLE_JOB]),
        ],
    ) -> dict[str, Any]:
        """Add a job at run time (source `api`): every node schedules it; applies leave it be."""
        with database_errors(server):
            return add_job(server, job)

    @api.delete(
        "/jobs/{job_id}",
        status_code=204,
        responses={**CONTROL, 409: {"model": Error, "description": "A file job"}},
        dependencies=[Depends(control)],
        summary="Delete a job added at run time",
        name="runner_api_delete_job",
    )
    def delete_job(job_id: JobIdPath) -> Response:
        """Only jobs added at run time; a file job is removed from its file. Runs are kept."""
        with database_errors(server):
            remove_job(server, job_id)
        return Response(status_code=204)

    @api.get(
        "/jobs/{job_id}",
        response_model=JobDetail,
        responses={**NOT_FOUND, **READ},
        summary="One job",
        name="runner_api_job",
    )
    def get_job(
        job_id: JobIdPath,
        next_count: Annotated[
            int, Query(alias="next", ge=0, le=100, description="How many fire times.")
        ] = 5,
        runs: Annotated[int, Query(ge=0, le=1000, description="How many recent runs.")] = 20,
    ) -> dict[str, Any]:
        """The job, its next fire times and its recent runs."""
        with database_errors(server):
            return job_detail(server, job_id, next_count, runs)

    @api.get(
        "/runs",
        response_model=list[RunOut],
        responses=READ,
        summary="Run history",
        name="runner_api_runs",
    )
    def list_runs(
        job: Annotated[str | None, Query(description="Only this job's runs.")] = None,
        status: Annotated[
            list[StatusName] | None,
            Query(description="Only runs with this status; repeat for several."),
        ] = None,
        since: Annotated[
            datetime | None,
            Query(description="Only fires scheduled at or after this time (ISO 8601)."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100000)] = 50,
    ) -> list[dict[str, Any]]:
        """Attempts, newest first, as `runner runs --output json` (same filters)."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        with (
            database_errors(server),
            server.engine.connect().execution_options(**{READ_ONLY: True}) as conn,
            conn.begin(),
        ):
            rows = queries.runs(conn, job, status or (), since, limit)
            return [history.run_as_json(r) for r in rows]

    @api.post(
        "/jobs/{job_id}/run",
        status_code=202,
        response_model=RunOut,
        responses={**CONTROL, 409: {"model": Error, "description": "Already running"}},
        dependencies=[Depends(control)],
        summary="Run now",
        name="runner_api_run",
    )
    def run_job(job_id: JobIdPath) -> dict[str, Any]:
        """Start a run now in this server; poll `/api/runs?job=ID` for its outcome."""
        with database_errors(server):
            return run_now(server, job_id)

    @api.post(
        "/jobs/{job_id}/pause",
        response_model=PauseOut,
        responses=CONTROL,
        dependencies=[Depends(control)],
        summary="Pause",
        name="runner_api_pause",
    )
    def pause_job(job_id: JobIdPath) -> dict[str, Any]:
        """Stop scheduling the job until resumed; kept across applies (see docs/http.md)."""
        with database_errors(server):
            return pause(server, job_id, True)

    @api.post(
        "/jobs/{job_id}/resume",
        response_model=PauseOut,
        responses=CONTROL,
        dependencies=[Depends(control)],
        summary="Resume",
        name="runner_api_resume",
    )
    def resume_job(job_id: JobIdPath) -> dict[str, Any]:
        """Lift a pause; the job is scheduled again from now."""
        with database_errors(server):
            return pause(server, job_id, False)

    return api
