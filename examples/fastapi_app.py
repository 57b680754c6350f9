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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from runner.embed import Runner

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
