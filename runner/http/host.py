"""What the HTTP control plane needs from the process that serves it.

`runner.serve` starts the HTTP server, so the http modules must not import `runner.serve`
back: they see the serving process only through this protocol, which `serve.Server` meets.
"""

from __future__ import annotations

import threading
from typing import Protocol

from sqlalchemy import Engine

from runner.executors.procrastinate import ProcrastinateExecutor
from runner.leadership import Leadership
from runner.runtime import Runtime
from runner.scheduler import RunnerScheduler


class HostOptions(Protocol):
    @property
    def db_url(self) -> str: ...
    @property
    def grace(self) -> float: ...


class Host(Protocol):
    @property
    def options(self) -> HostOptions: ...
    @property
    def node(self) -> str: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def stopping(self) -> threading.Event: ...
    @property
    def scheduler(self) -> RunnerScheduler: ...
    @property
    def leadership(self) -> Leadership: ...
    @property
    def runtime(self) -> Runtime | ProcrastinateExecutor: ...
    @property
    def last_reconcile_error(self) -> str | None: ...
    @property
    def reconcile_problems(self) -> list[str]: ...
    @property
    def broken_files(self) -> dict[str, list[str]]: ...
