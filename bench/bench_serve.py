"""Benchmark `runner serve` against plain APScheduler 3, and its behaviour with 10,000 jobs.

    python bench/bench_serve.py [--quick] [--jobs 100,1000] [--duration 60] [--pg URL]

Prints markdown tables; asserts nothing. Needs a PostgreSQL server (`--pg`, else
$RUNNER_TEST_PG, else postgresql://postgres@127.0.0.1:5432/postgres); each measurement runs
in a fresh database that is dropped afterwards.

Firing lag is `started - scheduled` of every fire in the measuring window:

* runner: `started_at - scheduled_at` from the runs table (`runner serve` subprocess, history
  on, PostgreSQL);
* APScheduler 3.11 `BackgroundScheduler` (thread pool executor, 10 workers) on
  `SQLAlchemyJobStore` (same PostgreSQL) and on `MemoryJobStore`, in a subprocess: the time
  the executor's worker starts the job minus its `scheduled_run_time`.

All jobs are `interval: 1s`, created together (so they all fire at the same instant: the
worst case), with the runner's defaults on both sides (misfire grace 10 min, coalesce,
max_instances 1). "missed" counts every expected fire in the window that did not start:
recorded as missed/skipped, or absent.

Then, with 10,000 jobs loaded (none due; 100 files of 100 jobs): resident memory, idle CPU,
and hot reload: the latency from rewriting one 100-job file until the job changed in it runs
(its new trigger is `at:` a moment just before the write, so it is due as soon as the change
is in effect; measured to `started_at` in the runs table).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2  # type: ignore[import-untyped, unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- databases -----------------------------------------------------------------------------


def _admin(admin_url: str) -> Any:
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    conn.autocommit = True
    return conn


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database; yields its SQLAlchemy URL (postgresql+psycopg2) and drops it after."""
    name = f"runner_bench_{os.getpid()}_{secrets.token_hex(3)}"
    conn = _admin(admin_url)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    parts = urlsplit(admin_url)
    url = urlunsplit(("postgresql+psycopg2", parts.netloc, "/" + name, parts.query, ""))
    try:
        yield url
    finally:
        conn = _admin(admin_url)
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(libpq(url), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def try_query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
    try:
        return query(url, sql, params)
    except psycopg2.Error:
        return None


# --- statistics ----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def expected_fires(phase: float, start: float, end: float) -> int:
    """Fire instants t = phase (mod 1 s) with start <= t < end."""
    first = start + ((phase - start) % 1.0)
    return max(0, int((end - first) // 1.0) + (1 if first < end else 0))


def summarise(
    lags: list[float], expected: int, recorded_missed: int, cpu: float | None
) -> dict[str, Any]:
    started = len(lags)
    return {
        "fires": expected,
        "p50": percentile(lags, 50) * 1000,
        "p99": percentile(lags, 99) * 1000,
        "max": max(lags) * 1000 if lags else float("nan"),
        "missed": max(0, expected - started),
        "recorded_missed": recorded_missed,
        "cpu": cpu,
    }


# --- processes -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for(probe: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class Serve:
    """A `runner serve` subprocess with its log in a file."""

    def __init__(self, jobs: Path, db_url: str, log: Path) -> None:
        env = dict(os.environ)
        env["RUNNER_ALLOWED_TARGETS"] = "sampleapp"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
        env.pop("SAMPLEAPP_CALLS", None)
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner",
                "serve",
                str(jobs),
                "--db",
                db_url,
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.db_url = db_url

    def wait_serving(self, jobs: int, timeout: float = 180) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runner serve exited:\n{self.log_path.read_text()[-3000:]}")
            rows = try_query(
                self.db_url,
                "SELECT (SELECT count(*) FROM runner_jobs),"
                " (SELECT holder FROM runner_lease WHERE name = 'scheduler')",
            )
            return bool(rows and rows[0][0] == jobs and rows[0][1])

        wait_for(ready, timeout, f"runner serve to load {jobs} jobs and lead", 0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- job files -----------------------------------------------------------------------------


def interval_jobs(folder: Path, count: int) -> None:
    lines = ["jobs:"]
    lines += [
        f"  - {{id: j{n:05d}, target: 'sampleapp.jobs:tick', trigger: {{interval: 1}}}}"
        for n in range(count)
    ]
    (folder / "jobs.yaml").write_text("\n".join(lines) + "\n")


def idle_file(index: int, per_file: int, probe: str | None = None) -> str:
    lines = ["jobs:"]
    for n in range(per_file):
        number = index * per_file + n
        if probe is not None and n == 0:
            lines.append(probe)
            continue
        lines.append(
            f"  - {{id: idle-{number:05d}, target: 'sampleapp.jobs:tick',"
            f" kwargs: {{label: idle-{number}}}, trigger: {{cron: '{number % 60} 3 1 1 *'}}}}"
        )
    return "\n".join(lines) + "\n"


def probe_job(label: str, at: datetime | None) -> str:
    trigger = f"{{at: '{at.isoformat()}'}}" if at else "{cron: '0 0 1 1 *'}"
    return (
        f"  - {{id: probe, target: 'sampleapp.jobs:tick', kwargs: {{label: {label}}},"
        f" trigger: {trigger}}}"
    )


def write_atomic(path: Path, content: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(content)
    os.replace(temp, path)


# --- runner --------------------------------------------------------------------------------


def bench_runner_lag(admin: str, count: int, duration: float, warmup: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(admin) as url:
        folder = Path(tmp) / "jobs"
        folder.mkdir()
        interval_jobs(folder, count)
        serve = Serve(folder, url, Path(tmp) / "serve.log")
        try:
            serve.wait_serving(count)
            wait_for(
                lambda: try_query(url, "SELECT 1 FROM runner_runs LIMIT 1"), 30, "the first run"
            )
            time.sleep(warmup)
            start = time.time()
            cpu0 = cpu_seconds(serve.proc.pid)
            time.sleep(duration)
            end = time.time()
            cpu = (cpu_seconds(serve.proc.pid) - cpu0) / (end - start) * 100
            time.sleep(2)  # let the last runs of the window finish and be written
        finally:
            serve.stop()
        rows = query(
            url,
            "SELECT job_id, extract(epoch FROM scheduled_at), extract(epoch FROM started_at),"
            " status FROM runner_runs WHERE attempt = 1 AND scheduled_at >= to_timestamp(%s)"
            " AND scheduled_at < to_timestamp(%s)",
            (start, end),
        )
    lags: list[float] = []
    phases: dict[str, float] = {}
    recorded_missed = 0
    for job_id, scheduled, started, status in rows:
        phases.setdefault(job_id, float(scheduled) % 1.0)
        if started is not None and status != "skipped":
            lags.append(float(started) - float(scheduled))
        if status in ("missed", "skipped"):
            recorded_missed += 1
    expected = sum(expected_fires(phases.get(f"j{n:05d}", 0.0), start, end) for n in range(count))
    return summarise(lags, expected, recorded_missed, cpu)


# --- APScheduler ---------------------------------------------------------------------------


def noop() -> None:
    """The job APScheduler runs (a textual reference, so SQLAlchemyJobStore can store it)."""


def aps_child(store: str, count: int, duration: float, warmup: float, url: str | None) -> None:
    """Runs in a subprocess: schedule `count` jobs, measure, print one JSON line."""
    import threading

    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
    from apscheduler.executors import pool
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    starts: list[tuple[str, float, float]] = []
    lock = threading.Lock()
    real_run_job = pool.run_job

    def timed_run_job(job: Any, alias: str, run_times: list[datetime], logger: str) -> Any:
        now = time.time()
        with lock:
            starts.extend((job.id, t.timestamp(), now) for t in run_times)
        return real_run_job(job, alias, run_times, logger)

    pool.run_job = timed_run_job  # the worker entry point: its start is the job's start
    events = {"missed": 0}

    def on_event(_event: Any) -> None:
        events["missed"] += 1

    jobstore = SQLAlchemyJobStore(url=url) if store == "sqlalchemy" else MemoryJobStore()
    scheduler = BackgroundScheduler(
        jobstores={"default": jobstore},
        executors={"default": ThreadPoolExecutor(10)},
        timezone=UTC,
    )
    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    scheduler.start(paused=True)
    first = datetime.now(UTC) + timedelta(seconds=2)
    for n in range(count):
        scheduler.add_job(
            noop,
            "interval",
            seconds=1,
            start_date=first,
            id=f"j{n:05d}",
            misfire_grace_time=600,
            coalesce=True,
            max_instances=1,
        )
    scheduler.resume()
    wait_for(lambda: starts, 60, "the first run", 0.05)
    time.sleep(warmup)
    start = time.time()
    cpu0 = time.process_time()
    time.sleep(duration)
    end = time.time()
    cpu = (time.process_time() - cpu0) / (end - start) * 100
    time.sleep(1.5)
    scheduler.shutdown(wait=True)
    lags = [s - t for _, t, s in starts if start <= t < end]
    phase = first.timestamp() % 1.0
    expected = count * expected_fires(phase, start, end)
    print(json.dumps(summarise(lags, expected, events["missed"], cpu)))


def bench_aps_lag(
    admin: str, store: str, count: int, duration: float, warmup: float
) -> dict[str, Any]:
    def run(url: str | None) -> dict[str, Any]:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--aps-child",
                json.dumps([store, count, duration, warmup, url]),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + warmup + 600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"APScheduler child failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    if store == "memory":
        return run(None)
    with fresh_database(admin) as url:
        return run(url)


# --- 10,000 jobs -----------------------------------------------------------------------------


def bench_big(
    admin: str, files: int, per_file: int, idle_seconds: float, edits: int
) -> dict[str, Any]:
    total = files * per_file
    result: dict[str, Any] = {"jobs": total}
    with tempfile.TemporaryDirectory() as tmp, fresh_database(admin) as url:
        folder = Path(tmp) / "jobs"
        folder.mkdir()
        for index in range(files):
            probe = probe_job("v0", None) if index == 0 else None
            (folder / f"f{index:03d}.yaml").write_text(idle_file(index, per_file, probe))
        began = time.monotonic()
        serve = Serve(folder, url, Path(tmp) / "serve.log")
        try:
            serve.wait_serving(total)
            result["startup"] = time.monotonic() - began
            time.sleep(3)  # settle: imports, the first full reload, caches
            pid = serve.proc.pid
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(idle_seconds)
            result["idle_cpu"] = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
            result["rss"] = rss_mb(pid)
            latencies = []
            for n in range(1, edits + 1):
                written_at = datetime.now(UTC)
                at = written_at - timedelta(milliseconds=1)
                write_atomic(folder / "f000.yaml", idle_file(0, per_file, probe_job(f"v{n}", at)))
                rows = wait_for(
                    lambda at=at: try_query(
                        url,
                        "SELECT extract(epoch FROM started_at) FROM runner_runs"
                        " WHERE job_id = 'probe' AND scheduled_at = %s"
                        " AND started_at IS NOT NULL",
                        (at,),
                    ),
                    30,
                    f"the probe run of edit {n}",
                    0.01,
                )
                latencies.append(float(rows[0][0]) - written_at.timestamp())
                time.sleep(0.3)
            result["reload_p50"] = statistics.median(latencies) * 1000
            result["reload_max"] = max(latencies) * 1000
            result["rss_after"] = rss_mb(pid)
        finally:
            serve.stop()
    return result


# --- main ----------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Shorter runs (about 3 minutes).")
    parser.add_argument("--jobs", default="100,1000", help="Job counts for the lag benchmark.")
    parser.add_argument("--duration", type=float, help="Seconds measured per lag run.")
    parser.add_argument("--pg", help="Admin URL of the PostgreSQL server.")
    parser.add_argument("--skip-aps", action="store_true", help="Only measure the runner.")
    parser.add_argument("--skip-big", action="store_true", help="Skip the 10,000-job runs.")
    parser.add_argument("--aps-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.aps_child:
        aps_child(*json.loads(args.aps_child))
        return
    admin = args.pg or os.environ.get("RUNNER_TEST_PG") or DEFAULT_PG
    duration = args.duration or (15.0 if args.quick else 60.0)
    warmup = 3.0
    idle = 10.0 if args.quick else 20.0
    edits = 5 if args.quick else 10
    counts = [int(c) for c in args.jobs.split(",") if c]

    print(f"# runner serve benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n")
    print(
        f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; PostgreSQL at "
        f"{urlsplit(admin).hostname}; {duration:.0f} s measured per lag run after "
        f"{warmup:.0f} s of warm-up.\n"
    )
    print("## Firing lag, interval-1s jobs (scheduled -> started)\n")
    print("| scheduler | jobs | fires | p50 ms | p99 ms | max ms | missed | CPU % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    subjects = [("runner serve (PostgreSQL, history on)", "runner")]
    if not args.skip_aps:
        subjects += [
            ("APScheduler 3 SQLAlchemyJobStore (PostgreSQL)", "sqlalchemy"),
            ("APScheduler 3 MemoryJobStore", "memory"),
        ]
    for count in counts:
        for label, kind in subjects:
            if kind == "runner":
                r = bench_runner_lag(admin, count, duration, warmup)
            else:
                r = bench_aps_lag(admin, kind, count, duration, warmup)
            missed = f"{r['missed']}" + (
                f" ({r['recorded_missed']} recorded)" if r["recorded_missed"] else ""
            )
            print(
                f"| {label} | {count} | {r['fires']} | {fmt(r['p50'])} | {fmt(r['p99'])} "
                f"| {fmt(r['max'])} | {missed} | {fmt(r['cpu'], 0)} |",
                flush=True,
            )
    if args.skip_big:
        return
    big = bench_big(admin, 100, 100, idle, edits)
    print("\n## 10,000 jobs loaded (100 files x 100 jobs, none due)\n")
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| start-up: apply + load + lead | {big['startup']:.1f} s | - |")
    print(
        f"| hot reload, file write -> changed job runs, p50 of {edits} | "
        f"{big['reload_p50']:.0f} ms | <= 300 ms |"
    )
    print(f"| hot reload, max | {big['reload_max']:.0f} ms | - |")
    print(f"| resident memory (VmRSS) | {big['rss']:.0f} MB | <= 250 MB |")
    print(f"| resident memory after the edits | {big['rss_after']:.0f} MB | - |")
    print(f"| idle CPU over {idle:.0f} s | {big['idle_cpu']:.2f} % | <= 2 % |")


if __name__ == "__main__":
    main()
