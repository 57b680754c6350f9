"""An existing FastAPI application that runs its scheduled jobs in-process with `runner`.

    pip install 'runner[http]'
    RUNNER_JOBS=jobs.d RUNNER_DATABASE_URL=postgresql://app@db/app \\
        RUNNER_HTTP_TOKEN=change-me uvicorn examples.fastapi_app:app

The job files come from $RUNNER_JOBS (default ./jobs.d), the database from
$RUNNER_DATABASE_URL (default sqlite:///runner.db). Under /runner the app serves the runner's
status page (/runner/), its JSON API (/runner/api/...), health (/runner/healthz,
/runner/readyz) and metrics (/runner/metrics). Control actions need RUNNER_HTTP_TOKEN.

Run several replicas against one PostgreSQL database: one leads and schedules, the others
stand by, exactly as with `runner serve`.

`PUT /users/{user}/weekly-report` schedules a job for one user from a request (a job added at
run time, beside the files: every replica runs it, applies leave it alone);
`DELETE /users/{user}/weekly-report` cancels it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel

from runner import runtimejobs
from runner.embed import Runner
from runner.errors import JobNotFound
from runner.plan import IdTaken
from runner.runtimejobs import InvalidJob

runner = Runner()  # paths from $RUNNER_JOBS, database from $RUNNER_DATABASE_URL


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # Start anything else the app needs here too; the runner starts once the database answers
    # and stops gracefully (running jobs get their grace period) when uvicorn shuts down.
    async with runner.running():
        yield


app = FastAPI(title="example app", lifespan=lifespan)
app.include_router(runner.router(), prefix="/runner")


@app.get("/hello")
def hello() -> dict[str, str]:
    """The application's own route, served beside the runner's."""
    return {"hello": "world"}


class ReportRequest(BaseModel):
    cron: str = "0 8 * * mon"
    timezone: str = "UTC"


def report_id(user: str) -> str:
    return f"weekly-report-{user}"


@app.put("/users/{user}/weekly-report", status_code=201)
def schedule_report(user: str, wanted: ReportRequest) -> dict[str, object]:
    """Schedule (or reschedule) this user's report. Put the app's own authentication here."""
    job = {
        "id": report_id(user),
        # In an application: its own function, e.g. "myapp.reports:send_weekly" with
        # kwargs {"user": user}, and "myapp" in RUNNER_ALLOWED_TARGETS.
        "target": "runner.tasks:heartbeat",
        "kwargs": {"message": f"weekly report for {user}"},
        "trigger": {"cron": wanted.cron, "timezone": wanted.timezone},
        "labels": {"user": user},
    }
    try:
        runtimejobs.parse(job)  # a bad schedule must not cancel the old one
        with suppress(JobNotFound):
            runner.remove_job(report_id(user))  # the new schedule replaces the old one
        return runner.add_job(job)
    except InvalidJob as exc:
        raise HTTPException(422, str(exc)) from None
    except IdTaken as exc:
        raise HTTPException(409, str(exc)) from None


@app.delete("/users/{user}/weekly-report", status_code=204)
def cancel_report(user: str) -> Response:
    try:
        runner.remove_job(report_id(user))
    except JobNotFound:
        raise HTTPException(404, f"{user} has no weekly report") from None
    return Response(status_code=204)
