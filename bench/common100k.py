"""Helpers shared by the 100,000-job benchmarks (`bench_100k.py`, `bench_100k_serve.py`).

Whole `runner` processes are timed: wall time, and the CPU time (user + system) of the child
as the kernel accounts it (`os.wait4`), which a busy host inflates less than wall time.
Databases are created fresh and dropped afterwards; the PostgreSQL server is
$RUNNER_BENCH_PG, else $RUNNER_TEST_PG, else postgresql://postgres@127.0.0.1:5432/postgres
(an admin URL that may create databases).
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2  # type: ignore[import-untyped, unused-ignore]

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_validate import runner_command
from gen_100k import generate

__all__ = [
    "Run",
    "admin_url",
    "bench_env",
    "generate",
    "load_note",
    "postgres_database",
    "runner_command",
    "sqlite_database",
    "table",
    "timed",
]


@dataclass(frozen=True, slots=True)
class Run:
    """One whole-process run: wall seconds, CPU seconds (user + system), peak RSS in MB."""

    wall: float
    cpu: float
    rss_mb: float
    stdout: str


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for timed runs: bytecode is cached, as for an installed program."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


def timed(command: Sequence[str], expect: int = 0, env: dict[str, str] | None = None) -> Run:
    """Run `command` to its end; its wall and CPU time, from `os.wait4` on the child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(list(command), stdout=out, stderr=err, env=bench_env(env))
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if child.returncode != expect:
            raise SystemExit(
                f"{' '.join(command)} exited {child.returncode}, expected {expect}:\n"
                f"{err.read().decode(errors='replace')[-2000:]}"
            )
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout)


def admin_url() -> str:
    return (
        os.environ.get("RUNNER_BENCH_PG")
        or os.environ.get("RUNNER_TEST_PG")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(admin_url(), connect_timeout=5)
    conn.autocommit = True
    return conn


@contextmanager
def postgres_database(label: str) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its URL."""
    name = f"runner_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        conn.close()
    parts = urlsplit(admin_url())
    try:
        yield urlunsplit(("postgresql", parts.netloc, "/" + name, parts.query, ""))
    finally:
        conn = _admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()


@contextmanager
def sqlite_database() -> Iterator[str]:
    """A fresh SQLite file in a temporary folder, removed afterwards; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="runner-bench-db-") as folder:
        yield f"sqlite:///{folder}/runner.db"


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"host: {os.cpu_count()} CPUs, load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def table(rows: Sequence[tuple[str, Sequence[Run]]], targets: dict[str, str]) -> None:
    """A markdown table: median wall (what the targets are about), median CPU, peak RSS."""
    print("| step | median wall (s) | min wall (s) | median CPU (s) | peak RSS (MB) | target |")
    print("|---|---:|---:|---:|---:|---|")
    for step, runs in rows:
        walls = [r.wall for r in runs]
        cpu = statistics.median(r.cpu for r in runs)
        rss = max(r.rss_mb for r in runs)
        print(
            f"| {step} | {statistics.median(walls):.2f} | {min(walls):.2f} | {cpu:.2f} "
            f"| {rss:.0f} | {targets.get(step, '')} |"
        )
