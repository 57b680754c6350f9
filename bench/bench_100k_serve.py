"""`runner serve --http` with 100,000 jobs stored: start-up, memory, and CPU while serving.

    python bench/bench_100k_serve.py [--window 60] [--sets issue,daily] [--pg URL]

Each set is generated (bench/gen_100k.py), applied to a database of its own (created on the
server at `--pg`, else $RUNNER_BENCH_PG, else $RUNNER_TEST_PG, else the local one, and dropped
at the end), then served with `runner serve DIR --http 127.0.0.1:PORT` (history on, the local
executor):

* start: from spawning the process to the first `/readyz` 200, with the jobs already applied;
* RSS: resident memory of the process once ready (/proc);
* CPU: user+sys seconds of the process over the window, as a share of one core, and the
  fires the window held (attempts scheduled in it, from the runs table).

Two sets of 100,000 jobs:

* `issue`: the set of issue #12 (half daily crons in four zones, half hourly intervals), about
  14 fires a second;
* `daily`: every job a daily cron spread over the day in four zones, about 1.2 fires a
  second (the "about one fire a second" of the issue).

From the two, the cost splits into what serving costs with nothing due (the intercept: the
passes, lease renewals and polls, which must not grow with the jobs stored) and the CPU per
fire (the slope: the pass deciding it, the claim, the run, its history). Prints markdown
tables; asserts nothing. CPU time is the steady figure on a shared host; wall times grow with
the load average printed above the table.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import DEFAULT_PG, cpu_seconds, fresh_database, query, rss_mb, wait_for
from gen_100k import generate

BEFORE = {
    "issue": {"start": 38.5, "start_cpu": 22.3, "rss": 1006.0, "cpu": 60.2},
    "daily": {"start": 21.7, "start_cpu": 19.2, "rss": 996.0, "cpu": 62.4},
}
"""Measured on main before the serving work of issue #12, load average 5-6 (see the README)."""
TARGETS = {"start": "<= 8 s", "rss": "<= 400 MB", "cpu": "<= 5 % at ~1 fire/s"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def measure(admin: str, name: str, window: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="runner-100k-") as tmp, fresh_database(admin) as url:
        folder = Path(tmp) / "jobs.d"
        count = generate(folder, daily=name == "daily")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            runner("apply", str(folder), "--db", url), env=env, check=True, capture_output=True
        )
        port = free_port()
        log = (Path(tmp) / "serve.log").open("w")
        began = time.monotonic()
        proc = subprocess.Popen(
            [
                *runner("serve", str(folder), "--db", url, "--log-level", "WARNING"),
                "--http",
                f"127.0.0.1:{port}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def up() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited: {(Path(tmp) / 'serve.log').read_text()}")
                return ready(port)

            wait_for(up, 300, "/readyz 200", 0.05)
            start = time.monotonic() - began
            start_cpu = cpu_seconds(proc.pid)
            rss = rss_mb(proc.pid)
            time.sleep(5)  # past the first passes and the collector's first rounds
            cpu0, t0, w0 = cpu_seconds(proc.pid), time.monotonic(), time.time()
            time.sleep(window)
            cpu = cpu_seconds(proc.pid) - cpu0
            elapsed = time.monotonic() - t0
            w1 = w0 + elapsed
            rss_after = rss_mb(proc.pid)
            time.sleep(2)  # the last runs of the window are written
            ((fires, late),) = query(
                url,
                "SELECT count(*), count(*) FILTER (WHERE status IN ('missed', 'skipped'))"
                " FROM runner_runs WHERE attempt = 1"
                " AND scheduled_at >= to_timestamp(%s) AND scheduled_at < to_timestamp(%s)",
                (w0, w1),
            )
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return {
        "jobs": count,
        "start": start,
        "start_cpu": start_cpu,
        "rss": rss,
        "rss_after": rss_after,
        "cpu": cpu / elapsed * 100,
        "cpu_s": cpu,
        "fires": int(fires),
        "rate": int(fires) / elapsed,
        "not_run": int(late),
    }


def show(results: dict[str, dict[str, Any]], window: float) -> None:
    one, five, _ = os.getloadavg()
    print(
        f"100,000 jobs, `runner serve --http`, PostgreSQL, history on; CPU over {window:.0f} s"
        f"; host: {os.cpu_count()} CPUs, load average {one:.1f} / {five:.1f}\n"
    )
    print("| set | figure | before | after | target |")
    print("|---|---|---:|---:|---|")
    for name, r in results.items():

        def was(key: str, fmt: str, name: str = name) -> str:
            value = BEFORE.get(name, {}).get(key)
            return fmt.format(value) if value is not None else "-"

        print(
            f"| {name} | start to `/readyz` 200 (s) | {was('start', '{:.1f}')} "
            f"| {r['start']:.1f} | {TARGETS['start']} |"
        )
        print(
            f"| {name} | CPU of the start (s, user+sys) | {was('start_cpu', '{:.1f}')} "
            f"| {r['start_cpu']:.1f} | |"
        )
        print(
            f"| {name} | RSS after start (MB) | {was('rss', '{:,.0f}')} "
            f"| {r['rss']:,.0f} (after the window: {r['rss_after']:,.0f}) | {TARGETS['rss']} |"
        )
        print(
            f"| {name} | CPU while serving, % of a core at {r['rate']:.1f} fires/s "
            f"| {was('cpu', '{:.1f}')} | {r['cpu']:.1f} | {TARGETS['cpu']} |"
        )
        print(
            f"| {name} | fires in the window (missed or skipped) | | "
            f"{r['fires']} ({r['not_run']}) | |"
        )
    if len(results) == 2:
        (a, ra), (b, rb) = results.items()
        if abs(ra["rate"] - rb["rate"]) > 0.5:
            per_fire = (ra["cpu_s"] - rb["cpu_s"]) / (ra["fires"] - rb["fires"]) * 1000
            idle = ra["cpu"] - per_fire / 1000 * ra["rate"] * 100
            print(
                f"\nFrom `{a}` and `{b}`: CPU per fire {per_fire:.2f} ms (decided, claimed, run,"
                f" history written); with nothing due {idle:.1f} % of a core."
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0, help="Seconds of CPU measured.")
    parser.add_argument("--sets", default="issue,daily", help="Job sets: issue, daily.")
    parser.add_argument("--pg", help="Admin URL of the PostgreSQL server.")
    args = parser.parse_args()
    admin = (
        args.pg
        or os.environ.get("RUNNER_BENCH_PG")
        or os.environ.get("RUNNER_TEST_PG")
        or DEFAULT_PG
    )
    results = {name: measure(admin, name, args.window) for name in args.sets.split(",")}
    show(results, args.window)


if __name__ == "__main__":
    main()
