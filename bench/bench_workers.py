"""Local executor against procrastinate workers, and the hand-over's cost per fire.

    python bench/bench_workers.py [--jobs 200] [--every 2] [--seconds 60] [--workers 0,1,2,3]

`--jobs` jobs whose sync target sleeps 1 s fire every `--every` seconds for `--seconds`;
one `runner serve` runs them itself (0 workers, the local executor) or hands them to 1, 2, 3
`runner worker` processes (concurrency 10 each). Rows: fires completed (attempts that
succeeded, of fires scheduled in the window), fires not run (missed or skipped by
`max_instances` while the previous run still waited), and the p50/p99 start lag from the
scheduled time to the attempt's `started_at`. Then the hand-over alone, in this process: a
first-attempt claim per transaction, without and with the procrastinate deferral in it.

Needs PostgreSQL at $RUNNER_BENCH_PG (else $RUNNER_TEST_PG); each round uses a fresh
database, dropped afterwards. Prints a markdown table; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy import text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from runner import history  # noqa: E402
from runner.executors.base import Fire  # noqa: E402
from runner.executors.procrastinate import (  # noqa: E402
    Handover,
    ProcrastinateExecutor,
    ensure_schema,
)
from runner.store import migrate  # noqa: E402
from runner.store.engine import connect  # noqa: E402


def nap(seconds: float = 1.0) -> None:
    """The target: a job that takes a second."""
    time.sleep(seconds)


def admin_url() -> str:
    return os.environ.get("RUNNER_BENCH_PG") or os.environ.get(
        "RUNNER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def create_db() -> str:
    name = f"runner_bench_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(admin_url())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return admin_url().rsplit("/", 1)[0] + "/" + name


def drop_db(url: str) -> None:
    conn = psycopg2.connect(admin_url())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    conn.close()


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["RUNNER_ALLOWED_TARGETS"] = "bench_workers"
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), out.get("PYTHONPATH")) if p)
    return out


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", *args, "--log-level", "WARNING"],
            env=env(),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def round_(jobs: int, every: int, seconds: float, workers: int) -> dict[str, float]:
    url = create_db()
    folder = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    (folder / "jobs.yaml").write_text(
        "jobs:\n"
        + "".join(
            f"  - {{id: j{i:03d}, target: 'bench_workers:nap', trigger: {{interval: {every}}}}}\n"
            for i in range(jobs)
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        executor = "procrastinate" if workers else "local"
        serve = spawn(
            ["serve", str(folder), "--db", url, "--executor", executor, "--no-watch"],
            folder / "serve.log",
        )
        procs.append(serve)
        engine = connect(url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # serve has applied the files
            try:
                with engine.connect() as conn:
                    if conn.execute(text("SELECT count(*) FROM runner_jobs")).scalar() == jobs:
                        break
            except Exception:
                pass
            time.sleep(0.2)
        for n in range(workers):
            procs.append(
                spawn(
                    ["worker", "--db", url, "--concurrency", "10", "--grace", "5"],
                    folder / f"worker{n}.log",
                )
            )
        start = datetime.now(UTC) + timedelta(seconds=every + 3)  # all started by then
        end = start + timedelta(seconds=seconds)
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 2)
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        time.sleep(2)  # queued attempts already started finish or are missed
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs[1:]:
            proc.wait(60)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT status, extract(epoch FROM started_at - scheduled_at) FROM runner_runs"
                    " WHERE scheduled_at >= :s AND scheduled_at < :e AND attempt = 1"
                ),
                {"s": start, "e": end},
            ).all()
        engine.dispose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        drop_db(url)
    lags = sorted(float(lag) * 1000 for status, lag in rows if lag is not None)
    return {
        "due": jobs * seconds / every,
        "completed": sum(1 for status, _ in rows if status == "succeeded"),
        "not_run": sum(1 for status, _ in rows if status in ("missed", "skipped")),
        "p50": statistics.median(lags) if lags else float("nan"),
        "p99": lags[int(len(lags) * 0.99) - 1] if lags else float("nan"),
    }


def handover_cost(fires: int) -> tuple[float, float]:
    """Milliseconds per fire: claim alone, claim + deferral, one transaction each."""
    url = create_db()
    engine = connect(url)
    try:
        migrate.ensure(engine)
        ensure_schema(engine)
        executor = ProcrastinateExecutor("bench")
        base = datetime(2030, 1, 1, tzinfo=UTC)
        spec = {"target": "bench_workers:nap", "kwargs": {"seconds": 1}}
        out = []
        for offset, hand in ((0, False), (fires, True)):
            began = time.perf_counter()
            with engine.connect() as conn:
                for i in range(offset, offset + fires):
                    moment = base + timedelta(seconds=i)
                    with conn.begin():
                        won = history.claim(conn, [(f"j{i % 200}", moment)], "bench", "queued")
                        if hand and won:
                            fire = Fire(f"j{i % 200}", spec, moment)
                            executor.hand_over(conn, [Handover(fire, 1, moment, 600)])
            out.append((time.perf_counter() - began) * 1000 / fires)
    finally:
        engine.dispose()
        drop_db(url)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", default="0,1,2,3")
    parser.add_argument("--fires", type=int, default=500, help="for the hand-over cost")
    args = parser.parse_args()
    print(
        f"{args.jobs} jobs sleeping 1 s, every {args.every} s, for {args.seconds:g} s"
        " (workers: concurrency 10 each)\n"
    )
    print("| executor | fires due | completed | not run | p50 start lag | p99 start lag |")
    print("|---|---:|---:|---:|---:|---:|")
    for count in (int(w) for w in args.workers.split(",")):
        r = round_(args.jobs, args.every, args.seconds, count)
        name = "local" if count == 0 else f"procrastinate, {count} worker(s)"
        print(
            f"| {name} | {r['due']:.0f} | {r['completed']} | {r['not_run']} "
            f"| {r['p50']:.1f} ms | {r['p99']:.1f} ms |",
            flush=True,
        )
    claim, both = handover_cost(args.fires)
    print(f"\nhand-over, one fire per transaction ({args.fires} fires):")
    print("| step | per fire |")
    print("|---|---:|")
    print(f"| claim only (local executor) | {claim:.2f} ms |")
    print(f"| claim + defer (procrastinate) | {both:.2f} ms |")
    print(f"| overhead of the hand-over | {both - claim:.2f} ms |")


if __name__ == "__main__":
    main()
