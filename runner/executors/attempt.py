"""Run one fire of a job: its attempts, retries with backoff and timeout.

Async targets run on the event loop and are cancelled at their timeout. Sync targets run in
a worker thread: Python cannot kill a thread, so at the timeout the attempt is recorded as
`timed_out` and the runner stops waiting, but the thread runs on until the function returns.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from runner import interpolate, targets
from runner.models import Retries

log = logging.getLogger("runner.execute")


class Status:
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


class Recorder(Protocol):
    """Where attempts go; the history store in production, a list in unit tests."""

    def started(self, fire: Fire, attempt: int, at: datetime) -> None: ...

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=4096)
def _resolve(target: str, prefixes: tuple[str, ...]) -> Callable[..., Any]:
    """Imported modules stay imported anyway; this saves the lookup on every run (failures
    are not cached: a target that cannot be imported is tried again next time)."""
    return targets.resolve(target, prefixes)


@functools.lru_cache(maxsize=4096)
def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func)


@functools.lru_cache(maxsize=64)
def _prefixes(setting: str) -> tuple[str, ...]:
    return targets.allowed_prefixes({targets.ENV_ALLOWED: setting})


@functools.lru_cache(maxsize=1024)
def _retries(items: tuple[tuple[str, Any], ...]) -> Retries:
    return Retries.model_validate(dict(items), strict=False)


def retries_of(spec: Mapping[str, Any]) -> Retries:
    raw = spec.get("retries") or {}
    try:
        return _retries(tuple(sorted(raw.items())))
    except TypeError:  # an unhashable value: not from a valid spec, but do not crash on it
        return Retries.model_validate(raw, strict=False)


async def _call(
    func: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    threads: Executor | None,
) -> None:
    if _is_async(func):
        await asyncio.wait_for(func(*args, **kwargs), timeout)
        return
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(threads, functools.partial(func, *args, **kwargs))
    result = await asyncio.wait_for(asyncio.shield(future), timeout) if timeout else await future
    if inspect.isawaitable(result):
        await asyncio.wait_for(result, timeout)


async def attempt(fire: Fire, threads: Executor | None, environ: Mapping[str, str]) -> Outcome:
    """One attempt; never raises except CancelledError (shutdown)."""
    spec = fire.spec
    secrets: set[str] = set()
    try:
        func = _resolve(spec["target"], _prefixes(environ.get(targets.ENV_ALLOWED, "")))
        args = interpolate.resolve(spec.get("args", []), environ, secrets)
        kwargs = interpolate.resolve(spec.get("kwargs", {}), environ, secrets)
    except (targets.TargetError, interpolate.MissingVariable) as exc:
        return Outcome(Status.FAILED, str(exc))
    timeout = spec.get("timeout")
    try:
        await _call(func, args, kwargs, timeout, threads)
    except TimeoutError:
        return Outcome(Status.TIMED_OUT, f"timed out after {timeout}s")
    except asyncio.CancelledError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a job's sys.exit() is a failure
        # The message and traceback may quote an argument: never record a resolved secret.
        return Outcome(
            Status.FAILED,
            interpolate.redact(f"{type(exc).__name__}: {exc}", secrets),
            interpolate.redact(traceback.format_exc(), secrets),
        )
    return Outcome(Status.SUCCEEDED)


async def run_fire(
    fire: Fire,
    recorder: Recorder,
    threads: Executor | None = None,
    environ: Mapping[str, str] = os.environ,
    first_attempt: int = 1,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Outcome:
    """All attempts of one fire; waits between them as `retries` says."""
    retries = retries_of(fire.spec)
    outcome = Outcome(Status.FAILED, "not run")
    for number in range(first_attempt, retries.max_attempts + 1):
        if number > first_attempt:
            await sleep(retries.wait_before(number))
        started = _now()
        clock = time.monotonic()
        recorder.started(fire, number, started)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "run start job=%s scheduled=%s attempt=%d/%d",
                fire.job_id,
                fire.scheduled_at.isoformat(),
                number,
                retries.max_attempts,
                extra={"job_id": fire.job_id, "attempt": number, "event": "start"},
            )
        try:
            outcome = await attempt(fire, threads, environ)
        except asyncio.CancelledError:
            duration = time.monotonic() - clock
            recorder.finished(
                fire, number, _now(), duration, Outcome(Status.INTERRUPTED, "runner stopped")
            )
            log.warning("run interrupted job=%s attempt=%d", fire.job_id, number)
            raise
        duration = time.monotonic() - clock
        recorder.finished(fire, number, _now(), duration, outcome)
        level = logging.INFO if outcome.status == Status.SUCCEEDED else logging.WARNING
        if log.isEnabledFor(level):
            log.log(
                level,
                "run end job=%s scheduled=%s attempt=%d duration=%.3fs outcome=%s%s",
                fire.job_id,
                fire.scheduled_at.isoformat(),
                number,
                duration,
                outcome.status,
                f" error={outcome.error}" if outcome.error else "",
                extra={
                    "job_id": fire.job_id,
                    "attempt": number,
                    "event": "end",
                    "outcome": outcome.status,
                    "duration": duration,
                },
            )
        if outcome.status == Status.SUCCEEDED:
            break
    return outcome


class _NullRecorder:
    def started(self, fire: Fire, attempt: int, at: datetime) -> None:
        return None

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None:
        return None


def run_job(job_id: str, spec: Mapping[str, Any]) -> None:
    """The callable stored in every APScheduler row; lets a stock scheduler run the job too."""
    fire = Fire(job_id, spec, _now())
    outcome = asyncio.run(run_fire(fire, _NullRecorder()))
    if outcome.status != Status.SUCCEEDED:
        raise RuntimeError(f"job {job_id} {outcome.status}: {outcome.error}")
