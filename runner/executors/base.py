"""What every executor shares: the record types of a run and the two small interfaces.

`Executor` is what the scheduler hands fires to (the local executor runs them in this
process; another may hand them to workers). `SyncCalls` is how one attempt runs a sync
target; the attempt logic in `attempt.py` needs nothing else, so a worker reuses it as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class Status:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    MISSED = "missed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Fire:
    """One scheduled occurrence of a job."""

    job_id: str
    spec: Mapping[str, Any]
    scheduled_at: datetime


@dataclass(slots=True)
class Outcome:
    status: str
    error: str | None = None
    traceback: str | None = None
    permanent: bool = False
    """Retrying cannot help (target not allowed or not importable, a variable unset)."""


class Recorder(Protocol):
    """Where attempts go; the history store in production, a list in unit tests."""

    def started(self, fire: Fire, attempt: int, at: datetime) -> None: ...

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None: ...


class TargetRaised(Exception):
    """A target ended with an exception (any BaseException); carries its text, not the object,
    since it may come from another process and need not pickle."""

    def __init__(self, error: str, traceback: str | None) -> None:
        super().__init__(error)
        self.error = error
        self.traceback = traceback


class SyncCalls(Protocol):
    """Runs a sync target so that it really ends at its timeout.

    Raises TimeoutError at the timeout (the call is stopped), TargetRaised when the target
    raised, `targets.TargetError` when it cannot be resolved where it runs. On cancellation
    the call is stopped too. `key` names the job, so that one job's hangs can be kept from
    using capacity others need.
    """

    async def call(
        self,
        target: str,
        prefixes: tuple[str, ...],
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
        environ: Mapping[str, str],
        key: str | None = None,
    ) -> None: ...


class Executor(Protocol):
    """What the scheduler uses; the local executor (`local.Runtime`) is one."""

    may_start: Callable[[], bool]
    """Checked again when a fire claimed ahead comes due (the scheduler's leadership)."""
    vet: Callable[[Fire], Fire | None] | None
    """At the time of a fire claimed ahead: the fire to start, or None to give it back."""

    def start(self) -> None: ...

    def running(self, job_id: str) -> int: ...

    def active(self) -> int: ...

    def try_submit(self, fire: Fire, max_instances: int, first_attempt: int = 1) -> bool: ...

    def submit_batch(
        self, batch: Sequence[tuple[Sequence[Fire], int]], first_attempt: int = 1
    ) -> list[bool]: ...

    def submit_at(self, when: datetime, batch: Sequence[tuple[Fire, int]]) -> None: ...

    def cancel_pending(self) -> list[Fire]: ...

    def stop(self, grace: float, abort: Any = None) -> int: ...
