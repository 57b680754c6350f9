"""The warm pool of child processes for sync targets, used directly: real processes, no mocks.

Targets report through files (they run in another process), and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.executors.base import TargetRaised
from runner.executors.processes import ProcessPool

PREFIXES = ("sampleapp",)
TESTS = Path(__file__).resolve().parents[1]


def calls_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def alive(pid: int) -> bool:
    """Running, that is: a zombie waiting to be reaped has ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_well_behaved_calls_reuse_a_warm_child_and_see_the_callers_environment(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls.jsonl"

    async def main() -> None:
        pool = ProcessPool(warm=1)
        try:
            env = {"SAMPLEAPP_CALLS": str(calls), "GREETING": "one"}
            await pool.call("sampleapp.jobs:tick", PREFIXES, ["a"], {}, None, env, key="j")
            await pool.call("sampleapp.jobs:tick", PREFIXES, ["b"], {}, None, env, key="j")
            env = {**env, "GREETING": "two"}
            await pool.call("sampleapp.jobs:echo_env", PREFIXES, ["x"], {}, None, env, key="j")
            assert pool.busy == 0
        finally:
            pool.close()

    asyncio.run(main())
    recorded = calls_of(calls)
    assert [c["name"] for c in recorded] == ["tick", "tick", "echo_env"]
    assert len({c["pid"] for c in recorded}) == 1  # one warm child served all three
    assert recorded[0]["pid"] != os.getpid()


def test_a_burst_of_calls_starts_one_child_per_call_beyond_the_warm_ones(tmp_path: Path) -> None:
    """Each call of a burst that finds no idle child starts its own; the pool tops the idle
    ones up to `warm` once, not once per call (that left 19 children after 10 calls)."""
    calls = tmp_path / "calls.jsonl"
    env = {"SAMPLEAPP_CALLS": str(calls)}
    burst, warm = 8, 2

    async def main() -> int:
        pool = ProcessPool(warm=warm)
        try:
            pool.prewarm()
            deadline = time.monotonic() + 30
            while len(pool._idle) < warm:
                assert time.monotonic() < deadline, "the warm children did not start"
                await asyncio.sleep(0.02)
            target = "sampleapp.jobs:slow"
            await asyncio.gather(
                *(pool.call(target, PREFIXES, [0.5], {}, 30, env) for _ in range(burst))
            )
            deadline = time.monotonic() + 30
            while pool._warming:  # the top-up started during the burst has finished
                assert time.monotonic() < deadline, "the top-up did not finish"
                await asyncio.sleep(0.02)
            return pool.size
        finally:
            pool.close()

    size = asyncio.run(main())
    starts = [c for c in calls_of(calls) if c["name"] == "slow_start"]
    assert len({c["pid"] for c in starts}) == burst  # all ran at once, each in a child
    assert size == burst + warm


def test_a_killed_jobs_next_call_gets_a_new_process_of_its_own(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    env = {"SAMPLEAPP_CALLS": str(calls)}

    async def main() -> tuple[int, int]:
        pool = ProcessPool(warm=1)
        try:
            with pytest.raises(TimeoutError):
                await pool.call("sampleapp.misbehaving:hang", PREFIXES, [], {}, 1, env, key="h")
            await pool.call("sampleapp.jobs:tick", PREFIXES, [], {}, None, env, key="h")
            await pool.call("sampleapp.jobs:tick", PREFIXES, [], {}, None, env, key="other")
            return pool.busy, pool.size
        finally:
            pool.close()

    busy, _ = asyncio.run(main())
    assert busy == 0
    hang, after, other = calls_of(calls)
    assert hang["name"] == "hang_start"
    assert len({hang["pid"], after["pid"], other["pid"]}) == 3
    wait_for(lambda: not alive(hang["pid"]), 10, "the hung child to be gone")


def test_a_timeout_also_ends_the_processes_the_target_started(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    env = {"SAMPLEAPP_CALLS": str(calls)}
    target = "sampleapp.misbehaving:hang_with_grandchild"

    async def main() -> None:
        pool = ProcessPool(warm=0)
        try:
            with pytest.raises(TimeoutError):
                await pool.call(target, PREFIXES, [], {}, 2, env)
        finally:
            pool.close()

    asyncio.run(main())
    (started,) = calls_of(calls)
    wait_for(lambda: not alive(started["pid"]), 10, "the target's process to end")
    wait_for(lambda: not alive(started["grandchild"]), 10, "the process it started to end")


def test_a_child_that_dies_or_raises_base_exceptions_is_reported(tmp_path: Path) -> None:
    env = {"SAMPLEAPP_CALLS": str(tmp_path / "calls.jsonl")}

    async def main() -> list[str]:
        pool = ProcessPool(warm=0)
        errors = []
        try:
            for target in ("sync_dies", "sync_exit", "sync_custom"):
                with pytest.raises(TargetRaised) as raised:
                    await pool.call(f"sampleapp.misbehaving:{target}", PREFIXES, [], {}, 5, env)
                errors.append(raised.value.error)
            await pool.call("sampleapp.jobs:tick", PREFIXES, [], {}, 5, env)
        finally:
            pool.close()
        return errors

    dies, exits, custom = asyncio.run(main())
    assert dies == "the process running the target exited (exit code 3)"
    assert exits == "SystemExit: 4"
    assert custom == "Custom: custom base exception"


def test_children_do_not_outlive_a_killed_runner(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    script = textwrap.dedent(
        f"""
        import asyncio
        from runner.executors.processes import ProcessPool
        env = {{"SAMPLEAPP_CALLS": {str(calls)!r}}}
        async def main():
            pool = ProcessPool(warm=0)
            await pool.call("sampleapp.misbehaving:hang", ("sampleapp",), [], {{}}, None, env)
        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        wait_for(lambda: bool(calls_of(calls)), 60, "the hung call to start")
        (started,) = calls_of(calls)
        assert started["ppid"] == parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: not alive(started["pid"]), 10, "the orphaned child to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
