"""One fire of a job: attempts, retries and their waits, timeouts, interruptions.

The recorder is a list (the `Recorder` protocol exists for this); targets are real functions
in `sampleapp` or this module, run on a real event loop; sync ones in real child processes,
so what they do is seen through files.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runner import execute
from runner.execute import Fire, Outcome, Status, run_fire
from runner.models import Retries

ENV = {
    "RUNNER_ALLOWED_TARGETS": "sampleapp,test_attempts_fire",
    "RUNNER_JOB_ENV": "API_TOKEN,PASSWORD,NOT_SET_*",
}
EVENTS: list[tuple[str, Any]] = []


# --- targets ---------------------------------------------------------------------------------


def write_pid(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


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


def fails(message: str = "nope") -> None:
    raise RuntimeError(message)


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
    yield


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment whose sampleapp targets record their calls in a file: the one passed
    to the run (what a child process gets) and this process's (what a thread sees)."""
    monkeypatch.setenv("SAMPLEAPP_CALLS", str(tmp_path / "calls.jsonl"))
    return {**ENV, "SAMPLEAPP_CALLS": str(tmp_path / "calls.jsonl")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def fire(target: str, **spec: Any) -> Fire:
    return Fire("job-1", {"target": target, **spec}, datetime.now(UTC))


def run(f: Fire, environ: Mapping[str, str] = ENV, **kwargs: Any) -> tuple[Outcome, ListRecorder]:
    recorder = ListRecorder()
    outcome = asyncio.run(run_fire(f, recorder, None, environ, **kwargs))
    return outcome, recorder


# --- tests -----------------------------------------------------------------------------------


def test_sync_target_with_a_timeout_succeeds_in_a_child_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    f = fire("test_attempts_fire:write_pid", args=[str(pid_file)], timeout=60)
    outcome, recorder = run(f)
    assert outcome.status == Status.SUCCEEDED and outcome.error is None
    assert recorder.statuses == [Status.SUCCEEDED]
    assert [(j, a) for j, a, _ in recorder.started_calls] == [("job-1", 1)]
    assert int(pid_file.read_text()) != os.getpid()


def test_sync_target_without_a_timeout_runs_in_a_thread_of_this_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    outcome, _ = run(fire("test_attempts_fire:write_pid", args=[str(pid_file)]))
    assert outcome.status == Status.SUCCEEDED
    assert int(pid_file.read_text()) == os.getpid()


@pytest.mark.parametrize("timeout", [None, 60])
@pytest.mark.parametrize(
    ("target", "error"),
    [("sync_exit", "SystemExit: 4"), ("sync_custom", "Custom: custom base exception")],
)
def test_sync_base_exceptions_are_failures_in_a_thread_or_a_process(
    calls: dict[str, str], target: str, error: str, timeout: int | None
) -> None:
    spec: dict[str, Any] = {"retries": {"max_attempts": 2, "delay": 1}}
    if timeout:
        spec["timeout"] = timeout

    async def no_wait(_: float) -> None:
        return None

    outcome, recorder = run(fire(f"sampleapp.misbehaving:{target}", **spec), calls, sleep=no_wait)
    assert outcome.status == Status.FAILED and outcome.error == error
    assert recorder.statuses == [Status.FAILED, Status.FAILED]


def test_async_target_is_awaited_not_just_created() -> None:
    outcome, _ = run(fire("test_attempts_fire:record_async", kwargs={"value": 7}))
    assert outcome.status == Status.SUCCEEDED
    assert EVENTS == [("async", 7)]


def test_callable_object_with_async_call_is_awaited() -> None:
    outcome, _ = run(fire("test_attempts_fire:async_callable", args=["x"]))
    assert outcome.status == Status.SUCCEEDED
    assert EVENTS == [("async-callable", "x")]


def test_failure_records_error_and_traceback() -> None:
    outcome, recorder = run(fire("test_attempts_fire:fails", kwargs={"message": "bad"}))
    assert outcome.status == Status.FAILED
    assert outcome.error == "RuntimeError: bad"
    assert outcome.traceback is not None and "raise RuntimeError(message)" in outcome.traceback
    assert recorder.statuses == [Status.FAILED]


def test_unknown_or_forbidden_target_fails_the_run_with_a_reason() -> None:
    outcome, _ = run(fire("test_attempts_fire:no_such_function"))
    assert outcome.status == Status.FAILED and "no attribute" in (outcome.error or "")
    outcome, _ = run(fire("os:system", args=["true"]))
    assert outcome.status == Status.FAILED and "not allowed" in (outcome.error or "")


def test_retries_until_success_with_backoff_waits(calls: dict[str, str]) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retries = {"max_attempts": 5, "delay": 10, "backoff": 3, "max_delay": 3600}
    outcome, recorder = run(
        fire("sampleapp.jobs:flaky", kwargs={"fail_times": 3}, retries=retries),
        calls,
        sleep=sleep,
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
    outcome, recorder = run(fire("test_attempts_fire:fails", retries=retries), sleep=sleep)
    assert outcome.status == Status.FAILED
    assert recorder.statuses == [Status.FAILED] * 4
    assert waits == [60.0, 100.0, 100.0]


def test_one_attempt_by_default_and_first_attempt_offset() -> None:
    outcome, recorder = run(fire("test_attempts_fire:fails"))
    assert outcome.status == Status.FAILED
    assert recorder.statuses == [Status.FAILED]
    outcome, recorder = run(
        fire("test_attempts_fire:fails", retries={"max_attempts": 3, "delay": 1}),
        first_attempt=3,
    )
    assert outcome.status == Status.FAILED
    assert [a for _, a, _ in recorder.started_calls] == [3]


def test_real_wait_between_attempts(calls: dict[str, str]) -> None:
    retries = {"max_attempts": 2, "delay": 1, "backoff": 2}
    outcome, recorder = run(
        fire("sampleapp.jobs:flaky", kwargs={"fail_times": 1}, retries=retries), calls
    )
    assert outcome.status == Status.SUCCEEDED
    first, second = (at for _, _, at in recorder.started_calls)
    first_duration = recorder.finished_calls[0][3]
    waited = (second - first).total_seconds() - first_duration
    assert waited == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize(
    ("attempt", "expected"), [(2, 10.0), (3, 20.0), (4, 40.0), (5, 80.0), (6, 100.0), (20, 100.0)]
)
def test_wait_before_formula(attempt: int, expected: float) -> None:
    retries = Retries(max_attempts=30, delay=10, backoff=2, max_delay=100)
    assert retries.wait_before(attempt) == expected


def test_async_timeout_cancels_the_coroutine() -> None:
    started = time.monotonic()
    outcome, recorder = run(fire("test_attempts_fire:never_ends", timeout=0.1))
    assert outcome.status == Status.TIMED_OUT
    assert outcome.error == "timed out after 0.1s"
    assert ("cancelled", None) in EVENTS and ("ended", None) not in EVENTS
    assert time.monotonic() - started < 1
    assert recorder.statuses == [Status.TIMED_OUT]


def test_sync_timeout_kills_the_process(calls: dict[str, str]) -> None:
    started = time.monotonic()
    outcome, _ = run(fire("sampleapp.jobs:slow", kwargs={"seconds": 60}, timeout=2), calls)
    assert outcome.status == Status.TIMED_OUT
    assert outcome.error == "timed out after 2s"
    assert time.monotonic() - started < 30  # not the target's 60 s
    lines = [json.loads(line) for line in Path(calls["SAMPLEAPP_CALLS"]).read_text().splitlines()]
    assert [line["name"] for line in lines] == ["slow_start"]
    pid = lines[0]["pid"]
    assert pid != os.getpid()
    deadline = time.monotonic() + 10  # killed at once, reaped in the background
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


def test_timed_out_attempts_are_retried() -> None:
    async def sleep(_: float) -> None:
        return None

    outcome, recorder = run(
        fire(
            "test_attempts_fire:never_ends", timeout=0.05, retries={"max_attempts": 2, "delay": 1}
        ),
        sleep=sleep,
    )
    assert outcome.status == Status.TIMED_OUT
    assert recorder.statuses == [Status.TIMED_OUT, Status.TIMED_OUT]


def test_cancellation_records_interrupted_and_propagates() -> None:
    recorder = ListRecorder()

    async def main() -> None:
        task = asyncio.create_task(
            run_fire(fire("test_attempts_fire:never_ends"), recorder, None, ENV)
        )
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
    f = fire("test_attempts_fire:record_async", kwargs=spec_kwargs)
    outcome, _ = run(f, environ={**ENV, "API_TOKEN": "s3cret"})
    assert outcome.status == Status.SUCCEEDED
    assert EVENTS == [("async", "token=s3cret")]
    assert f.spec["kwargs"] == {"value": "token=${API_TOKEN}"}


def test_unset_variable_fails_the_run_clearly_and_at_once() -> None:
    retries = {"max_attempts": 3, "delay": 1}
    outcome, recorder = run(
        fire("test_attempts_fire:record_async", args=["${NOT_SET_ANYWHERE}"], retries=retries)
    )
    assert outcome.status == Status.FAILED
    assert outcome.error == "environment variable NOT_SET_ANYWHERE is not set and has no default"
    assert recorder.statuses == [Status.FAILED]
    assert EVENTS == []


def test_resolved_secrets_are_redacted_from_recorded_errors() -> None:
    outcome, _ = run(
        fire("test_attempts_fire:fails", kwargs={"message": "login with ${PASSWORD} refused"}),
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
