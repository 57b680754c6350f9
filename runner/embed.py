"""Run the runner inside an existing FastAPI application.

    from contextlib import asynccontextmanager
    from fastapi import FastAPI
    from runner.embed import Runner

    runner = Runner(["jobs.d"], db_url="postgresql://app@db/app")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with runner.running():
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(runner.router(), prefix="/runner")

Jobs may also be added while the application runs, from a user's request:

    runner.add_job(id=f"report-{user}", target="myapp.jobs:report", kwargs={"user": user},
                   trigger={"cron": "0 8 * * mon"})
    runner.remove_job(f"report-{user}")

The runner works as `runner serve` does (it applies the files, follows their changes, takes
part in leader election) but installs no signal handlers: the application's server (uvicorn)
owns SIGTERM and stops the runner through the lifespan. Start and stop block (waiting for
the database, draining runs), so the async helpers run them in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from runner.errors import RunnerError
from runner.serve import Options, Server
from runner.store.engine import database_url_from_env

if TYPE_CHECKING:
    from fastapi import APIRouter


class Runner:
    """A `runner serve` node living in this process."""

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]] | None = None,
        db_url: str | None = None,
        *,
        watch: bool = True,
        grace: float = 30.0,
    ) -> None:
        if paths is None:
            from runner.jobfiles import default_paths

            resolved = default_paths()
        else:
            resolved = [os.fspath(p) for p in paths]
        self.server = Server(
            Options(resolved, db_url or database_url_from_env(), watch=watch, grace=grace)
        )
        self._started = False
        self._up = False
        self._stopped = False

    def start(self) -> None:
        """Start scheduling in background threads; waits for the database first."""
        if self._started:
            raise RunnerError("this Runner was already started; create a new one")
        self._started = True
        if not self.server.start():
            raise RunnerError("the runner was stopped while waiting for its database")
        self._up = True

    def stop(self) -> None:
        """Stop gracefully: no new runs, running ones get `grace` seconds. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._up:
            self.server.stop()
        else:  # still waiting for the database, or never started: just let go
            self.server.stopping.set()
        # Runtime.stop stops the runs' event loop without closing it; close it here so an
        # application that stops the runner does not leak its sockets.
        loop = getattr(self.server.runtime, "loop", None)  # none without a local executor
        if loop is None:
            return
        if (self._up or not self._started) and not loop.is_running() and not loop.is_closed():
            loop.close()

    async def astart(self) -> None:
        from anyio import to_thread

        await to_thread.run_sync(self.start)

    async def astop(self) -> None:
        from anyio import to_thread

        await to_thread.run_sync(self.stop)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runner]:
        """Started for the duration of the block; for a FastAPI lifespan."""
        await self.astart()
        try:
            yield self
        finally:
            await self.astop()

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """Pass as `FastAPI(lifespan=runner.lifespan)` when the app has nothing else to start."""
        async with self.running():
            yield

    def add_job(self, job: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Add a job at run time: one job in the job-file format, as a mapping or as keywords.

        Checked like a file job (same models, same target allowlist); raises
        `runtimejobs.InvalidJob` naming the field, or `plan.IdTaken` when the id is in use.
        Stored with the owner `api`, so applies never change or prune it; every node running
        on this database schedules it. Returns the job as `runner jobs --output json` lists it.
        """
        from runner import queries, runtimejobs

        job_id = runtimejobs.add(self.server.engine, {**(job or {}), **fields})
        self._refresh(job_id)
        return queries.jobs(self.server.engine, job_id)[0]

    def remove_job(self, job_id: str) -> None:
        """Delete a job added at run time; a file job is refused (`runtimejobs.NotRuntime`)."""
        from runner import runtimejobs

        runtimejobs.remove(self.server.engine, job_id)
        self._refresh(job_id)

    def _refresh(self, job_id: str) -> None:
        if self._up and not self._stopped:  # else the change signal or the start loads it
            self.server.scheduler.refresh(ids=[job_id])

    def router(self) -> APIRouter:
        """Health, metrics, the JSON API and the status page, to include under a prefix."""
        from runner.http.server import routes

        return routes(self.server)
