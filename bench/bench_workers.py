"""Local executor against procrastinate workers, and the hand-over's cost per fire.

    python bench/bench_workers.py [--jobs 200] [--every 2] [--seconds 60] [--workers 0,1,2,3]
                                  [--concurrency 10] [--timeout SECONDS]

`--jobs` jobs whose sync target sleeps 1 s fire every `--every` seconds for `--seconds` (the
window, which opens two intervals after every worker is up); one `runner serve` runs them
itself (0 workers, the local executor) or hands them to 1, 2, 3 `runner worker` processes
(`--concurrency` slots each). At the end of the window `serve` stops (no more fires) and the
workers drain the queue, so every fire of the window has its outcome before it is counted:
fires that ran, fires skipped by `max_instances` (the job's previous fire still queued or
running) or missed, and the p50/p99 start lag from the scheduled time to the attempt's
`started_at`. Throughput is the runs that started inside the window per second, against the
slots' capacity (slots / 1 s); slot use is the share of the window's slot-seconds spent in a
run. CPU is user + system time during the window: per run started in it, of the workers (of
`serve` for the local executor), and of `serve` as a share of one core (processes' own time:
the warm children of `--timeout` are not in it). `--timeout` gives the jobs a timeout, so
their sync target runs in the workers' child processes instead of a thread. Then the
hand-over alone, in this process: a first-attempt claim per transaction, without and with
the procrastinate deferral in it.

Needs PostgreSQL at $RUNNER_BENCH_PG (else $RUNNER_TEST_PG); each round uses a fresh
database, dropped afterwards. Linux (CPU time is read from /proc). Prints markdown tables;
nothing asserts on time.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy import Engine, text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from runner import history  # noqa: E402
from runner.executors.base import Fire  # noqa: E402
from runner.executors.procrastinate import (  # noqa: E402
    WORKER_SUFFIX,
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


DRAIN_LIMIT = 180.0
"""Seconds the workers get, after the window, to start or finish the fires queued in it."""

_WINDOW_FIRES = """
SELECT status, extract(epoch FROM started_at - scheduled_at) FROM runner_runs
WHERE scheduled_at >= :s AND scheduled_at < :e AND attempt = 1
"""

_IN_WINDOW = """
SELECT count(*) FILTER (WHERE started_at >= :s AND started_at < :e),
       coalesce(sum(extract(epoch FROM least(finished_at, :e) - greatest(started_at, :s)))
                FILTER (WHERE started_at < :e AND finished_at > :s), 0)
FROM runner_runs
"""

_UNFINISHED = """
SELECT count(*) FROM runner_runs
WHERE scheduled_at < :e AND status IN ('queued', 'running')
"""


_WORKERS_UP = """
SELECT count(*) FROM runner_nodes WHERE node LIKE :pattern AND stopped_at IS NULL
"""


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of them at or below it."""
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))]


def wait_drained(engine: Engine, end: datetime) -> bool:
    """Until no fire scheduled before `end` is queued or running (or DRAIN_LIMIT)."""
    deadline = time.monotonic() + DRAIN_LIMIT
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if not conn.execute(text(_UNFINISHED), {"e": end}).scalar():
                return True
        time.sleep(0.5)
    return False


def wait_workers(engine: Engine, count: int) -> None:
    """Until `count` workers have registered (each does just before it fetches), or 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            up = conn.execute(text(_WORKERS_UP), {"pattern": "%" + WORKER_SUFFIX}).scalar()
            if (up or 0) >= count:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{count} worker(s) did not start within 60 s")


def jobs_file(folder: Path, jobs: int, every: int, timeout: float | None) -> None:
    extra = f", timeout: {timeout:g}" if timeout else ""
    (folder / "jobs.yaml").write_text(
        "jobs:\n"
        + "".join(
            f"  - {{id: j{i:03d}, target: 'bench_workers:nap', trigger: {{interval: {every}}}"
            f"{extra}}}\n"
            for i in range(jobs)
        )
    )


def round_(
    jobs: int, every: int, seconds: float, workers: int, concurrency: int, timeout: float | None
) -> dict[str, float]:
    url = create_db()
    folder = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    jobs_file(folder, jobs, every, timeout)
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
                    ["worker", "--db", url, "--concurrency", str(concurrency), "--grace", "5"],
                    folder / f"worker{n}.log",
                )
            )
        wait_workers(engine, workers)
        # Two fires of every job before the window: the workers are fetching, warm.
        start = datetime.now(UTC) + timedelta(seconds=2 * every + 1)
        end = start + timedelta(seconds=seconds)
        time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
        cpu_start = [cpu_seconds(p.pid) for p in procs]
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
        cpu = [cpu_seconds(p.pid) - before for p, before in zip(procs, cpu_start, strict=True)]
        serve.send_signal(signal.SIGTERM)  # no fire after the window; its runs finish
        serve.wait(60)
        drained = wait_drained(engine, end)
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs[1:]:
            proc.wait(60)
        window = {"s": start, "e": end}
        with engine.connect() as conn:
            rows = conn.execute(text(_WINDOW_FIRES), window).all()
            started, busy = conn.execute(text(_IN_WINDOW), window).one()
        engine.dispose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        drop_db(url)
    lags = sorted(float(lag) * 1000 for _, lag in rows if lag is not None)
    slots = workers * concurrency
    return {
        "due": jobs * seconds / every,
        "ran": sum(1 for status, _ in rows if status == "succeeded"),
        "skipped": sum(1 for status, _ in rows if status == "skipped"),
        "missed": sum(1 for status, _ in rows if status == "missed"),
        "other": sum(1 for status, _ in rows if status not in ("succeeded", "skipped", "missed")),
        "drained": float(drained),
        "slots": slots,
        "rate": started / seconds,
        "use": float(busy) / (slots * seconds) if slots else float("nan"),
        "serve_cpu": cpu[0] / seconds,
        "run_cpu_ms": sum(cpu[1:] if workers else cpu) * 1000 / started if started else 0.0,
        "p50": percentile(lags, 0.5),
        "p99": percentile(lags, 0.99),
    }


HANDOVER_BLOCK = 50
"""Fires per timed block of the hand-over cost; blocks of both kinds alternate."""


def handover_cost(fires: int) -> tuple[float, float]:
    """Milliseconds per fire: claim alone, claim + deferral, one transaction each.

    After one unmeasured block of each kind (connection, plans, caches), blocks of the two
    kinds alternate, so a change of the machine's load weighs on both alike.
    """
    url = create_db()
    engine = connect(url)
    try:
        migrate.ensure(engine)
        ensure_schema(engine)
        executor = ProcrastinateExecutor("bench")
        base = datetime(2030, 1, 1, tzinfo=UTC)
        spec = {"target": "bench_workers:nap", "kwargs": {"seconds": 1}}
        spent = {False: 0.0, True: 0.0}
        counted = {False: 0, True: 0}
        serial = 0
        blocks = max(1, fires // HANDOVER_BLOCK)
        with engine.connect() as conn:
            for number in range(2 * (blocks + 1)):
                hand = number % 2 == 1
                began = time.perf_counter()
                for _ in range(HANDOVER_BLOCK):
                    serial += 1
                    job_id, moment = f"j{serial % 200}", base + timedelta(seconds=serial)
                    with conn.begin():
                        won = history.claim(conn, [(job_id, moment)], "bench", "queued")
                        if hand and won:
                            fire = Fire(job_id, spec, moment)
                            executor.hand_over(conn, [Handover(fire, 1, moment, 600)])
                if number >= 2:
                    spent[hand] += time.perf_counter() - began
                    counted[hand] += HANDOVER_BLOCK
    finally:
        engine.dispose()
        drop_db(url)
    return spent[False] * 1000 / counted[False], spent[True] * 1000 / counted[True]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", default="0,1,2,3")
    parser.add_argument("--concurrency", type=int, default=10, help="slots per worker")
    parser.add_argument("--timeout", type=float, default=None, help="the jobs' timeout")
    parser.add_argument("--fires", type=int, default=500, help="for the hand-over cost")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{args.jobs} jobs sleeping 1 s, every {args.every} s, for {args.seconds:g} s"
        f" (workers: concurrency {args.concurrency} each"
        f"{f', timeout {args.timeout:g} s' if args.timeout else ''});"
        f" load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}\n"
    )
    print(
        "| executor | fires due | ran | skipped | missed | runs/s (capacity) | slot use"
        " | p50 start lag | p99 start lag | CPU per run | serve CPU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in (int(w) for w in args.workers.split(",")):
        r = round_(args.jobs, args.every, args.seconds, count, args.concurrency, args.timeout)
        name = "local" if count == 0 else f"procrastinate, {count} worker(s)"
        capacity = f" ({r['slots']:.0f})" if count else ""
        use = f"{r['use']:.0%}" if count else "-"
        note = "" if r["drained"] else f" ({r['other']:.0f} still queued or running)"
        print(
            f"| {name}{note} | {r['due']:,.0f} | {r['ran']:,.0f} | {r['skipped']:,.0f}"
            f" | {r['missed']:,.0f} | {r['rate']:.1f}{capacity} | {use}"
            f" | {fmt_ms(r['p50'])} | {fmt_ms(r['p99'])} | {r['run_cpu_ms']:.1f} ms"
            f" | {r['serve_cpu']:.0%} |",
            flush=True,
        )
    claim, both = handover_cost(args.fires)
    print(f"\nhand-over, one fire per transaction ({args.fires} fires):")
    print("| step | per fire |")
    print("|---|---:|")
    print(f"| claim only (local executor) | {claim:.2f} ms |")
    print(f"| claim + defer (procrastinate) | {both:.2f} ms |")
    print(f"| overhead of the hand-over | {both - claim:.2f} ms |")


def fmt_ms(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


if __name__ == "__main__":
    main()
