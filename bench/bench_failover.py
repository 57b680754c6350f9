"""Failover time: SIGKILL of the leader to the first run started by the new leader.

    python bench/bench_failover.py [--rounds 5] [--replicas 2]

Each round: a fresh PostgreSQL database, `--replicas` real `runner serve` processes on one
folder of five interval-1s jobs, wait for a leader and its runs, SIGKILL it, then read the
history for the first run started by another node. Prints a table; the target is a median
of at most 5 s. The server is chosen as in bench_apply.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common100k import postgres_database as database

JOBS = "jobs:\n" + "".join(
    f"  - {{id: tick{i}, target: 'runner.tasks:heartbeat', trigger: {{interval: 1}}}}\n"
    for i in range(5)
)


def runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def leader_pid(db_url: str, env: dict[str, str], deadline: float) -> int:
    while time.monotonic() < deadline:
        done = subprocess.run(
            runner("status", "--db", db_url, "--output", "json"),
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode == 0:
            lead = json.loads(done.stdout)["leader"]
            if lead:
                return int(lead["node"].split(":")[-2])
        time.sleep(0.1)
    raise RuntimeError("no leader")


def one_round(replicas: int) -> float:
    with database("failover") as db_url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "jobs.yaml").write_text(JOBS)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [
            subprocess.Popen(
                runner("serve", str(folder), "--db", db_url, "--no-watch"),
                env=env,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(replicas)
        ]
        engine = create_engine(db_url)
        try:
            pid = leader_pid(db_url, env, time.monotonic() + 30)
            deadline = time.monotonic() + 30
            with engine.connect() as conn:
                while time.monotonic() < deadline:
                    runs = conn.execute(text("SELECT count(*) FROM runner_runs")).scalar()
                    conn.commit()
                    if runs and runs >= 5:
                        break
                    time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
            killed = datetime.now(UTC)
            deadline = time.monotonic() + 30
            query = text(
                "SELECT min(started_at) FROM runner_runs "
                "WHERE started_at > :killed AND node NOT LIKE :old"
            )
            with engine.connect() as conn:
                while time.monotonic() < deadline:
                    first = conn.execute(query, {"killed": killed, "old": f"%:{pid}:%"}).scalar()
                    conn.commit()
                    if first is not None:
                        return (first - killed).total_seconds()
                    time.sleep(0.05)
            raise RuntimeError("no run by a new leader within 30 s")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    times = [one_round(args.replicas) for _ in range(args.rounds)]
    median = statistics.median(times)
    print(f"failover, {args.replicas} replicas, {args.rounds} rounds (SIGKILL of the leader)\n")
    print("| median (s) | min (s) | max (s) | target |")
    print("|---:|---:|---:|---|")
    verdict = "met" if median <= 5 else "MISSED"
    print(f"| {median:.2f} | {min(times):.2f} | {max(times):.2f} | <= 5 s: {verdict} |")
    print("\nrounds: " + ", ".join(f"{t:.2f}" for t in times))


if __name__ == "__main__":
    main()
