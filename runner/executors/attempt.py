"""Run one fire of a job: its attempts, retries with backoff and timeout.

Shared by every executor. Async targets run on the caller's event loop and are cancelled at
their timeout. A sync target with a timeout goes to a `SyncCalls` (a pool of child
processes) that kills it at its timeout; one without a timeout, which nothing would stop,
runs in a thread, where it starts at once and costs no process. Whatever a target raises,
`SystemExit`, `CancelledError` or a custom `BaseException` included, or a child process
that dies, is one failed attempt: it never reaches the event loop or the caller, and the
job's retries apply. Errors that no retry can fix (a target not allowed or not importable,
an unset variable) fail the fire at once. A command job runs its program in a child process
of its own (`commands.run`), checked against this process's allowlist.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from runner import commands, interpolate, targets
from runner.executors.base import Fire, Outcome, Recorder, Status, SyncCalls, TargetRaised
from runner.executors.threads import ThreadPool
from runner.models import Retries

__all__ = ["Fire", "Outcome", "Recorder", "Status", "attempt", "retries_of", "run_fire", "run_job"]

log = logging.getLogger("runner.execute")


def _now() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=4096)
def _resolve(target: str, prefixes: tuple[str, ...]) -> Callable[..., Any]:
    """Imported modules stay imported anyway; this saves the lookup on every run (failures
    are not cached: a target that cannot be imported is tried again next time)."""
    return targets.resolve(target, prefixes)


@functools.lru_cache(maxsize=4096)
def _is_async(func: Callable[..., Any]) -> bool:
    """Coroutine functions, and objects whose `__call__` is one, run on the event loop."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


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


async def _call_async(
    func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], timeout: float | None
) -> None:
    """Await the target in this task, so that what it raises is caught here: in a task of its
    own, SystemExit or KeyboardInterrupt would stop the event loop."""
    task = asyncio.current_task()
    async with asyncio.timeout(timeout):
        try:
            await func(*args, **kwargs)
        except asyncio.CancelledError:
            if task is not None and task.cancelling():
                raise  # our timeout, or the runner stopping
            raise TargetRaised(_describe(), traceback.format_exc()) from None
        except BaseException:
            raise TargetRaised(_describe(), traceback.format_exc()) from None


def _describe() -> str:
    exc = sys.exc_info()[1]
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # a __str__ that raises
        return f"{type(exc).__name__}: <unprintable>"


async def _call_in_thread(
    func: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    threads: concurrent.futures.Executor | None,
    begin: Callable[[], None],
) -> None:
    def guarded() -> Any:
        try:
            return func(*args, **kwargs)
        except BaseException:  # SystemExit or a custom BaseException must not end the thread
            raise TargetRaised(_describe(), traceback.format_exc()) from None

    loop = asyncio.get_running_loop()
    running = (
        threads.start(loop, guarded)
        if isinstance(threads, ThreadPool)
        else loop.run_in_executor(threads, guarded)
    )
    try:
        # Let the other fires due in this loop iteration be handed over before the
        # bookkeeping of this one: at an instant with many fires due, each waits only for
        # the hand-overs before it.
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        running.cancel()
        raise
    finally:
        begin()
    result = await running
    if inspect.isawaitable(result):
        await _call_async(lambda: result, [], {}, None)


async def attempt(
    fire: Fire,
    calls: SyncCalls,
    environ: Mapping[str, str],
    threads: concurrent.futures.Executor | None = None,
    on_start: Callable[[], None] | None = None,
) -> Outcome:
    """One attempt; never raises except CancelledError (shutdown).

    `on_start` (the start's bookkeeping) is called once, before the attempt ends; for a
    sync target in a thread, just after the hand-over (see `_call_in_thread`).
    """
    pending = [on_start] if on_start is not None else []

    def begin() -> None:
        while pending:
            pending.pop()()

    try:
        return await _attempt(fire, calls, environ, threads, begin)
    finally:
        begin()


async def _attempt(
    fire: Fire,
    calls: SyncCalls,
    environ: Mapping[str, str],
    threads: concurrent.futures.Executor | None,
    begin: Callable[[], None],
) -> Outcome:
    spec = fire.spec
    secrets: set[str] = set()
    if "command" in spec:
        begin()
        return await commands.run(spec["command"], spec.get("timeout"), environ, secrets)
    prefixes = _prefixes(environ.get(targets.ENV_ALLOWED, ""))
    try:
        func = _resolve(spec["target"], prefixes)
        args = interpolate.resolve(spec.get("args", []), environ, secrets)
        kwargs = interpolate.resolve(spec.get("kwargs", {}), environ, secrets)
    except (targets.TargetError, interpolate.MissingVariable) as exc:
        return Outcome(Status.FAILED, str(exc), permanent=True)
    timeout = spec.get("timeout")
    try:
        if _is_async(func):
            begin()
            await _call_async(func, args, kwargs, timeout)
        elif not timeout:  # nothing to stop it for: a thread starts in microseconds
            await _call_in_thread(func, args, kwargs, threads, begin)
        else:
            begin()
            await calls.call(
                spec["target"], prefixes, args, kwargs, timeout, environ, key=fire.job_id
            )
    except TimeoutError:
        return Outcome(Status.TIMED_OUT, f"timed out after {timeout}s")
    except targets.TargetError as exc:  # resolved here, but not where the call ran
        return Outcome(Status.FAILED, str(exc), permanent=True)
    except TargetRaised as exc:
        # The message and traceback may quote an argument: never record a resolved secret.
        return Outcome(
            Status.FAILED,
            interpolate.redact(exc.error, secrets),
            interpolate.redact(exc.traceback, secrets),
        )
    except Exception as exc:  # no process could be started for it, or the pool is closing
        return Outcome(
            Status.FAILED, interpolate.redact(f"could not run the target: {exc}", secrets)
        )
    return Outcome(Status.SUCCEEDED)


async def run_fire(
    fire: Fire,
    recorder: Recorder,
    calls: SyncCalls | None = None,
    environ: Mapping[str, str] = os.environ,
    first_attempt: int = 1,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    threads: concurrent.futures.Executor | None = None,
) -> Outcome:
    """All attempts of one fire; waits between them as `retries` says.

    Without `calls`, sync targets get a process pool of their own for this fire.
    """
    if calls is None:
        from runner.executors.processes import ProcessPool

        pool = ProcessPool(warm=0)
        try:
            return await run_fire(fire, recorder, pool, environ, first_attempt, sleep, threads)
        finally:
            pool.close()
    retries = retries_of(fire.spec)
    outcome = Outcome(Status.FAILED, "not run")
    for number in range(first_attempt, retries.max_attempts + 1):
        if number > first_attempt:
            await sleep(retries.wait_before(number))
        started = _now()
        clock = time.monotonic()
        begin = functools.partial(_record_start, recorder, fire, number, started, retries)
        try:
            outcome = await attempt(fire, calls, environ, threads, on_start=begin)
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
        if outcome.status == Status.SUCCEEDED or outcome.permanent:
            break
    return outcome


def _record_start(
    recorder: Recorder, fire: Fire, number: int, started: datetime, retries: Retries
) -> None:
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
