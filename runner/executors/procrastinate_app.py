"""The few procrastinate calls the worker makes, behind plain types."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import procrastinate


def build(conninfo: str, task_name: str, func: Callable[..., Awaitable[None]]) -> Any:
    """An App on `conninfo` with `func` as its one task (retried by the leader, never here)."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    app.task(name=task_name, pass_context=False)(func)
    return app


@contextlib.asynccontextmanager
async def opened(app: Any) -> AsyncIterator[None]:
    async with app.open_async():
        yield


async def run_worker(
    app: Any,
    queues: list[str] | None,
    concurrency: int,
    name: str,
    grace: float,
    poll: float,
) -> None:
    """Until SIGTERM/SIGINT; then running attempts get `grace` seconds before cancellation."""
    await app.run_worker_async(
        queues=queues,
        concurrency=concurrency,
        name=name,
        shutdown_graceful_timeout=grace,
        install_signal_handlers=True,
        fetch_job_polling_interval=poll,
        delete_jobs="always",
    )
