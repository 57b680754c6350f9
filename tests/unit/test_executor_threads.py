"""The thread pool for sync targets without a timeout: elastic, reused, settles on the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runner.executors.threads import ThreadPool

DEADLINE = 10


def test_start_runs_in_another_thread_and_settles_on_the_loop() -> None:
    pool = ThreadPool()

    async def main() -> tuple[str, str]:
        loop_thread = threading.current_thread().name
        ran_in = await pool.start(
            asyncio.get_running_loop(), lambda: threading.current_thread().name
        )
        return loop_thread, ran_in

    try:
        loop_thread, ran_in = asyncio.run(main())
    finally:
        pool.shutdown(wait=False)
    assert ran_in != loop_thread and ran_in.startswith("runner-job")


def test_an_exception_reaches_the_awaiting_task() -> None:
    pool = ThreadPool()

    def boom() -> None:
        raise ValueError("from the target")

    async def main() -> None:
        await pool.start(asyncio.get_running_loop(), boom)

    try:
        with pytest.raises(ValueError, match="from the target"):
            asyncio.run(main())
    finally:
        pool.shutdown(wait=False)


def test_an_idle_thread_is_reused() -> None:
    pool = ThreadPool()
    names: set[str] = set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            names.add(await pool.start(loop, lambda: threading.current_thread().name))

    try:
        asyncio.run(main())
    finally:
        pool.shutdown(wait=False)
    assert len(names) == 1


def test_a_hung_call_holds_only_its_own_thread() -> None:
    pool = ThreadPool()
    release = threading.Event()

    async def main() -> str:
        loop = asyncio.get_running_loop()
        hung = pool.start(loop, lambda: release.wait(DEADLINE))
        other = await asyncio.wait_for(pool.start(loop, lambda: "ran"), DEADLINE)
        assert pool.busy == 1 and not hung.done()
        release.set()
        await asyncio.wait_for(hung, DEADLINE)
        return other

    try:
        assert asyncio.run(main()) == "ran"
    finally:
        release.set()
        pool.shutdown(wait=False)
    assert pool.busy == 0


def test_submit_keeps_the_executor_interface() -> None:
    pool = ThreadPool()
    try:
        assert pool.submit(lambda a, b: a + b, 2, b=3).result(DEADLINE) == 5
        failing = pool.submit(int, "not a number")
        with pytest.raises(ValueError):
            failing.result(DEADLINE)
    finally:
        pool.shutdown(wait=False)


def test_after_shutdown_nothing_new_starts() -> None:
    pool = ThreadPool()
    assert pool.submit(lambda: 1).result(DEADLINE) == 1
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: 2)


def test_shutdown_waits_for_running_calls_when_asked() -> None:
    pool = ThreadPool()
    release = threading.Event()
    running = pool.submit(release.wait, DEADLINE)
    waiter = threading.Thread(target=pool.shutdown)
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive(), "shutdown(wait=True) returned while a call was still running"
    release.set()
    waiter.join(DEADLINE)
    assert not waiter.is_alive() and running.result(0) is True


def test_a_burst_of_calls_that_wait_for_each_other_all_run_at_once() -> None:
    # Each call returns only once all of them are running: a pool that made any call wait for
    # another to end (too few threads started for a burst) fails the barrier.
    count = 50
    barrier = threading.Barrier(count, timeout=DEADLINE)
    pool = ThreadPool()

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(pool.start(loop, barrier.wait) for _ in range(count))))

    try:
        assert sorted(asyncio.run(main())) == list(range(count))
    finally:
        pool.shutdown(wait=False)
