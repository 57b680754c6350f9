"""What `/metrics` costs with many jobs: series, bytes and CPU time of one scrape.

Every job has finished one succeeded attempt in this process (the counters and the duration
histogram get their per-job series) and has one succeeded and one failed attempt in a SQLite
history (the store metrics). Prints a table; CPU time (user+sys of this process), since wall
time is noisy on a shared machine.

    .venv/bin/python bench/bench_metrics.py [JOBS]     # default 100000
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine

from runner import metrics
from runner.store import migrate, tables
from runner.storemetrics import StoreMetrics


def cpu() -> float:
    t = time.process_time()
    return t


def fill_store(url: str, jobs: int) -> None:
    engine = create_engine(url)
    migrate.ensure(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            tables.runner_jobs.insert(),
            [
                {
                    "id": f"job-{i}",
                    "spec": "{}",
                    "spec_hash": "x",
                    "spec_format": 1,
                    "file": "jobs.yaml",
                    "line": i + 1,
                    "applied_at": now,
                    "applied_by": "bench",
                }
                for i in range(jobs)
            ],
        )
        rows = []
        for i in range(jobs):
            for n, status in enumerate(("failed", "succeeded")):
                at = now - timedelta(minutes=10 - n)
                rows.append(
                    {
                        "job_id": f"job-{i}",
                        "scheduled_at": at,
                        "attempt": n + 1,
                        "status": status,
                        "started_at": at,
                        "finished_at": at + timedelta(seconds=1),
                        "duration": 1.0,
                        "node": "bench",
                    }
                )
        conn.execute(tables.runner_runs.insert(), rows)
    engine.dispose()


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    started = datetime.now(UTC)
    for i in range(jobs):
        metrics.run_started(f"job-{i}", 1, started, started)
        metrics.run_finished(f"job-{i}", 1, "succeeded", 0.3)
    rows: list[tuple[str, str, str]] = []

    t = cpu()
    counted = metrics.exposition()
    rows.append(("counters only (this process)", f"{len(counted) / 1e6:.1f} MB", ""))
    counted_lines = sum(1 for line in counted.splitlines() if not line.startswith(b"#"))
    rows[-1] = (rows[-1][0], rows[-1][1], f"{counted_lines:,} series, {cpu() - t:.2f} s CPU")

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'runner.db'}"
        fill_store(url, jobs)
        engine = create_engine(url)
        store = StoreMetrics(engine, workers=False)
        t = cpu()
        first = store.samples()
        rows.append(
            ("store metrics, first refresh", f"{len(first):,} series", f"{cpu() - t:.2f} s CPU")
        )
        store._refreshed = None
        t = cpu()
        store.samples()
        rows.append(("store metrics, later refresh", "(nothing new)", f"{cpu() - t:.3f} s CPU"))
        metrics._store.source = store
        store._refreshed = None
        t = cpu()
        whole = metrics.exposition()
        lines = sum(1 for line in whole.splitlines() if not line.startswith(b"#"))
        rows.append(
            (
                "whole scrape",
                f"{len(whole) / 1e6:.1f} MB",
                f"{lines:,} series, {cpu() - t:.2f} s CPU",
            )
        )
        engine.dispose()

    print(f"{jobs:,} jobs")
    width = max(len(r[0]) for r in rows)
    for name, size, cost in rows:
        print(f"{name:<{width}}  {size:>14}  {cost}")


if __name__ == "__main__":
    main()
