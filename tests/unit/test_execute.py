"""One fire of a job: attempts, retries and their waits, timeouts, interruptions.

The recorder is a list (the `Recorder` protocol exists for this); targets are real functions
in `sampleapp` or this module, run on a real event loop and a real thread pool.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from runner import execute
from runner.execute import Fire, Outcome, Status, run_fire
from runner.models import Retries

ENV = {
    "RUNNER_ALLOWED_TARGETS": "sampleapp,test_execute",
    "RUNNER_JOB_ENV": "API_TOKEN,PASSWORD,NOT_SET_*",
}
EVENTS: list[tuple[str, Any]] = []
RELEASE = threading.Event()


# --- targets ---------------------------------------------------------------------------------


def record(value: object = None) -> None:
    EVENTS.append(("record", value))


def record_thread() -> None:
    EVENTS.append(("thread", threading.current_thread().name))


async def record_async(value: object = None) -> None:
    await asyncio.sleep(0)
    EVENTS.append(("async", value))


async def never_ends() -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        EVENTS.append(("cancelled", None))
        raise
    EVENTS.append(("ended", None))


def blocks_until_released() -> None:
    RELEASE.wait(10)
    EVENTS.append(("released", None))


def fails(message: str = "nope") -> None:
    raise RuntimeError(message)


class CountingFailure:
    """Fails `times` times, then succeeds."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, times: int) -> None:
        self.calls += 1
        if self.calls <= times:
            raise ValueError(f"failure {self.calls}")


counting = CountingFailure()


class AsyncCallable:
    async def __call__(self, value: str) -> None:
        await asyncio.sleep(0)
        EVENTS.append(("async-callable", value))


async_callable = AsyncCallable()


# --- fixtures --------------------------------------------------------------------------------


@dataclass
class ListRecorder:
    started_calls: list[tuple[str, int, datetime]] = field(default_factory=list)
    finished_calls: list[tuple[str, int, Outcome, float]] = field(default_factory=list)

    def started(self, fire: Fire, attempt: int, at: datetime) -> None:
        self.started_calls.append((fire.job_id, attempt, at))

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None:
        self.finished_calls.append((fire.job_id, attempt, outcome, duration))

    @property
    def statuses(self) -> list[str]:
        return [outcome.status for _, _, outcome, _ in self.finished_calls]


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    EVENTS.clear()
    RELEASE.clear()
    counting.calls = 0
    yield
    RELEASE.set()


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(4, thread_name_prefix="test-job")
    yield pool
    RELEASE.set()
    pool.shutdown(wait=True)


def fire(target: str, **spec: Any) -> Fire:
    return Fire("job-1", {"target": target, **spec}, datetime.now(UTC))


def run(
    f: Fire,
    threads: ThreadPoolExecutor | None = None,
    environ: Mapping[str, str] = ENV,
    **kwargs: Any,
) -> tuple[Outcome, ListRecorder]:
    recorder = ListRecorder()
    outcome = asyncio.run(run_fire(f, recorder, threads, environ, **kwargs))
    return outcome, recorder


# --- tests -----------------------------------------------------------------------------------


def test_sync_target_succeeds_in_a_worker_thread(threads: ThreadPoolExecutor) -> None:
    outcome, recorder = run(fire("test_execute:record_thread"), threads)
    assert outcome.status == Status.SUCCEEDED and outcome.error is None
    assert recorder.statuses == [Status.SUCCEEDED]
    assert [(j, a) for j, a, _ in recorder.started_calls] == [("job-1", 1)]
    ((_, name),) = EVENTS
    assert name.startswith("test-job")


def test_async_target_is_awaited_not_just_created(threads: ThreadPoolExecutor) -> None:
    outcome, _ = run(fire("test_execute:record_async", kwargs={"value": 7}), threads)
    assert outcome.status == Status.SUCCEEDED
    assert EVENTS == [("async", 7)]


def test_callable_object_with_async_call_is_awaited(threads: ThreadPoolExecutor) -> None:
    outcome, _ = run(fire("test_execute:async_callable", args=["x"]), threads)
    assert outcome.status == Status.SUCCEEDED
    assert EVENTS == [("async-callable", "x")]


def test_failure_records_error_and_traceback(threads: ThreadPoolExecutor) -> None:
    outcome, recorder = run(fire("test_execute:fails", kwargs={"message": "bad"}), threads)
    assert outcome.status == Status.FAILED
    assert outcome.error == "RuntimeError: bad"
    assert outcome.traceback is not None and "raise RuntimeError(message)" in outcome.traceback
    assert recorder.statuses == [Status.FAILED]


def test_unknown_or_forbidden_target_fails_the_run_with_a_reason() -> None:
    outcome, _ = run(fire("test_execute:no_such_function"))
    assert outcome.status == Status.FAILED and "no attribute" in (outcome.error or "")
    outcome, _ = run(fire("os:system", args=["true"]))
    assert outcome.status == Status.FAILED and "not allowed" in (outcome.error or "")


def test_retries_until_success_with_backoff_waits() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retries = {"max_attempts": 5, "delay": 10, "backoff": 3, "max_delay": 3600}
    outcome, recorder = run(
        fire("test_execute:counting", kwargs={"times": 3}, retries=retries), sleep=sleep
    )
    assert outcome.status == Status.SUCCEEDED
    assert recorder.statuses == [Status.FAILED] * 3 + [Status.SUCCEEDED]
    assert [a for _, a, _ in recorder.started_calls] == [1, 2, 3, 4]
    # delay * backoff**(n-1) before attempt n+1
    assert waits == [10.0, 30.0, 90.0]


def test_retries_give_up_after_max_attempts_and_waits_are_capped() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retries = {"max_attempts": 4, "delay": 60, "backoff": 2, "max_delay": 100}
    outcome, recorder = run(fire("test_execute:fails", retries=retries), sleep=sleep)
    assert outcome.status == Status.FAILED
    assert recorder.statuses == [Status.FAILED] * 4
    assert waits == [60.0, 100.0, 100.0]


def test_one_attempt_by_default_and_first_attempt_offset() -> None:
    outcome, recorder = run(fire("test_execute:fails"))
    assert outcome.status == Status.FAILED
    assert recorder.statuses == [Status.FAILED]
    outcome, recorder = run(
        fire("test_execute:fails", retries={"max_attempts": 3, "delay": 1}),
        first_attempt=3,
    )
    assert outcome.status == Status.FAILED
    assert [a for _, a, _ in recorder.started_calls] == [3]


def test_real_wait_between_attempts() -> None:
    retries = {"max_attempts": 2, "delay": 1, "backoff": 2}
    started = time.monotonic()
    outcome, recorder = run(fire("test_execute:counting", kwargs={"times": 1}, retries=retries))
    assert outcome.status == Status.SUCCEEDED
    first, second = (at for _, _, at in recorder.started_calls)
    assert (second - first).total_seconds() == pytest.approx(1.0, abs=0.2)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("attempt", "expected"), [(2, 10.0), (3, 20.0), (4, 40.0), (5, 80.0), (6, 100.0), (20, 100.0)]
)
def test_wait_before_formula(attempt: int, expected: float) -> None:
    retries = Retries(max_attempts=30, delay=10, backoff=2, max_delay=100)
    assert retries.wait_before(attempt) == expected


def test_async_timeout_cancels_the_coroutine(threads: ThreadPoolExecutor) -> None:
    started = time.monotonic()
    outcome, recorder = run(fire("test_execute:never_ends", timeout=0.1), threads)
    assert outcome.status == Status.TIMED_OUT
    assert outcome.error == "timed out after 0.1s"
    assert ("cancelled", None) in EVENTS and ("ended", None) not in EVENTS
    assert time.monotonic() - started < 1
    assert recorder.statuses == [Status.TIMED_OUT]


def test_sync_timeout_stops_waiting_but_thread_runs_on(threads: ThreadPoolExecutor) -> None:
    started = time.monotonic()
    outcome, _ = run(fire("test_execute:blocks_until_released", timeout=0.1), threads)
    assert outcome.status == Status.TIMED_OUT
    assert time.monotonic() - started < 1
    assert EVENTS == []
    RELEASE.set()
    threads.shutdown(wait=True)
    assert EVENTS == [("released", None)]


def test_timed_out_attempts_are_retried() -> None:
    async def sleep(_: float) -> None:
        return None

    outcome, recorder = run(
        fire("test_execute:never_ends", timeout=0.05, retries={"max_attempts": 2, "delay": 1}),
        sleep=sleep,
    )
    assert outcome.status == Status.TIMED_OUT
    assert recorder.statuses == [Status.TIMED_OUT, Status.TIMED_OUT]


def test_cancellation_records_interrupted_and_propagates() -> None:
    recorder = ListRecorder()

    async def main() -> None:
        task = asyncio.create_task(run_fire(fire("test_execute:never_ends"), recorder, None, ENV))
        while not recorder.started_calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert recorder.statuses == [Status.INTERRUPTED]
    assert recorder.finished_calls[0][2].error == "runner stopped"


def test_variables_are_resolved_at_run_time_and_never_kept() -> None:
    spec_kwargs = {"value": "token=${API_TOKEN}"}
    f = fire("test_execute:record", kwargs=spec_kwargs)
    outcome, _ = run(f, environ={**ENV, "API_TOKEN": "s3cret"})
    assert outcome.status == Status.SUCCEEDED
    assert EVENTS == [("record", "token=s3cret")]
    assert f.spec["kwargs"] == {"value": "token=${API_TOKEN}"}


def test_unset_variable_fails_the_run_clearly() -> None:
    outcome, recorder = run(fire("test_execute:record", args=["${NOT_SET_ANYWHERE}"]))
    assert outcome.status == Status.FAILED
    assert outcome.error == "environment variable NOT_SET_ANYWHERE is not set and has no default"
    assert recorder.statuses == [Status.FAILED]
    assert EVENTS == []


def test_resolved_secrets_are_redacted_from_recorded_errors() -> None:
    outcome, _ = run(
        fire("test_execute:fails", kwargs={"message": "login with ${PASSWORD} refused"}),
        environ={**ENV, "PASSWORD": "hunter22"},
    )
    assert outcome.status == Status.FAILED
    assert outcome.error == "RuntimeError: login with *** refused"
    assert "hunter22" not in (outcome.traceback or "")


def test_stored_entry_point_raises_on_failure() -> None:
    # `run_job` is what APScheduler rows reference; a stock scheduler sees failures as errors.
    execute.run_job("job-1", {"target": "runner.tasks:heartbeat", "kwargs": {"message": "hi"}})
    with pytest.raises(RuntimeError, match="job job-1 failed: RuntimeError: boom"):
        execute.run_job("job-1", {"target": "runner.tasks:fail", "args": ["boom"]})
