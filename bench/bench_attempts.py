"""Start lag of a sync target: the thread path (no timeout) against child processes (timeout).

    python bench/bench_attempts.py [--calls 200] [--burst 20] [--rounds 10]

Start lag is the time from handing the call over to the target's first line, read from the
system-wide monotonic clock on both sides. Rows: calls one after another, and bursts of
`--burst` calls at once (many jobs due the same second). "cold" starts a new process for
every call, as a job whose last call was killed gets; "first" bursts find only the warm
children (4) and start the rest, later ones find them lingering. Prints a markdown table; nothing
asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = "bench_attempts:stamp"
PREFIXES = ("bench_attempts",)


def stamp(path: str) -> None:
    """The target: note when it began."""
    began = time.monotonic()
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{began}\n")


Call = Callable[[str], Awaitable[None]]
_NAMES = itertools.count()


async def lags(call: Call, calls: int, burst: int, folder: Path) -> list[float]:
    """Milliseconds from hand-over to start, for `calls` calls made `burst` at a time."""
    out: list[float] = []
    for _ in range(calls // burst):
        paths = [str(folder / f"{next(_NAMES)}") for _ in range(burst)]
        handed = time.monotonic()
        await asyncio.gather(*(call(p) for p in paths))
        out.extend((float(Path(p).read_text()) - handed) * 1000 for p in paths)
    return out


def thread_path(pool: ThreadPoolExecutor) -> Call:
    async def call(path: str) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, stamp, path)

    return call


def process_path(pool: object, cold: bool = False) -> Call:
    from runner.executors.processes import ProcessPool

    assert isinstance(pool, ProcessPool)
    env = dict(os.environ)

    async def call(path: str) -> None:
        if cold:  # a key whose last call was killed: a new process, used once
            pool._suspects["cold"] = None
        await pool.call(TARGET, PREFIXES, [path], {}, None, env, key="cold" if cold else None)

    return call


async def measure(args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    from runner.executors.processes import ProcessPool

    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        threads = ThreadPoolExecutor(32)
        processes = ProcessPool(warm=4)
        processes.prewarm()
        try:
            await process_path(processes)(str(folder / "warm-up"))  # imports the target
            for name, call in [
                ("threads (no timeout; the old path for all)", thread_path(threads)),
                ("child processes", process_path(processes)),
            ]:
                rows.append((f"{name}, one at a time", await lags(call, args.calls, 1, folder)))
                burst = args.burst
                rows.append(
                    (f"{name}, first {burst} at once", await lags(call, burst, burst, folder))
                )
                rows.append(
                    (
                        f"{name}, then {burst} at once",
                        await lags(call, burst * args.rounds, burst, folder),
                    )
                )
            cold = process_path(processes, cold=True)
            rows.append(("child processes, cold", await lags(cold, args.rounds, 1, folder)))
        finally:
            threads.shutdown()
            processes.close()
    return rows


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    os.environ["RUNNER_ALLOWED_TARGETS"] = "bench_attempts"
    rows = asyncio.run(measure(args))
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| sync call path | calls | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rows:
        print(
            f"| {name} | {len(values)} | {statistics.median(values):.2f} | "
            f"{pct(values, 0.99):.2f} | {max(values):.2f} |"
        )


if __name__ == "__main__":
    main()
