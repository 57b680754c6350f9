"""Drive a real `runner serve` subprocess and look at what it did.

Everything here waits by polling with a deadline, never by a blind sleep, and every process
started is killed at teardown even when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import OperationalError

from runner.store.tables import runner_runs

TESTS = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = probe()
    while not last:
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)
        last = probe()
    return last


def base_env(calls: Path, **extra: str) -> dict[str, str]:
    """The environment of a runner subprocess that may import `sampleapp`."""
    env = dict(os.environ)
    env.pop("RUNNER_DATABASE_URL", None)
    env.pop("RUNNER_JOBS", None)
    env["RUNNER_ALLOWED_TARGETS"] = "sampleapp"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    env["SAMPLEAPP_CALLS"] = str(calls)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def runner_cli(
    args: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run one `runner` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class LogLine:
    at: float
    """time.time() when the line was read."""
    text: str


@dataclass
class ServeProcess:
    """One `runner serve` subprocess, its merged output kept line by line."""

    paths: list[str]
    db_url: str
    env: dict[str, str]
    cwd: Path
    extra_args: list[str] = field(default_factory=list)
    lines: list[LogLine] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ServeProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner",
                "serve",
                *self.paths,
                "--db",
                self.db_url,
                *self.extra_args,
            ],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                with self._lock:
                    self.lines.append(LogLine(time.time(), raw.rstrip("\n")))

    # --- looking at the output ---------------------------------------------------------
    def log(self) -> str:
        with self._lock:
            return "\n".join(line.text for line in self.lines)

    def matching(self, pattern: str, since: int = 0) -> list[LogLine]:
        regex = re.compile(pattern)
        with self._lock:
            return [line for line in self.lines[since:] if regex.search(line.text)]

    def mark(self) -> int:
        """A position in the log; `wait_for_log(..., since=mark)` only looks after it."""
        with self._lock:
            return len(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> LogLine:
        def probe() -> LogLine | None:
            found = self.matching(pattern, since)
            if found:
                return found[0]
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"runner serve exited ({self.proc.returncode}) before logging "
                    f"{pattern!r}:\n{self.log()}"
                )
            return None

        try:
            return wait_until(probe, timeout, what=f"log line {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- serve log ---\n{self.log()}") from None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Serving its jobs and leading (so runs start)."""
        self.wait_for_log(r"serving \d+ job\(s\)", timeout)
        self.wait_for_log(r"leading \(", timeout)

    # --- signals and teardown ---------------------------------------------------------
    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"runner serve did not exit within {timeout}s:\n{self.log()}"
            ) from None
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(timeout=5)


class Calls:
    """The JSON lines sampleapp targets append, one per call."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def named(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [
            c
            for c in self.all()
            if c["name"] == name and all(c.get(k) == v for k, v in match.items())
        ]


class History:
    """Reads runner_runs directly (the CLI is checked separately, once).

    A read never passes for an empty history: while the server is away (a restart test) it
    is retried until `retry_for` seconds have passed, then the error is raised.
    """

    def __init__(self, db_url: str, retry_for: float = 60.0) -> None:
        self.engine: Engine = create_engine(db_url, pool_pre_ping=True)
        self.retry_for = retry_for

    def runs(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of runner_runs (times as aware UTC datetimes on every backend), in fire order."""
        query = select(runner_runs)
        if job_id is not None:
            query = query.where(runner_runs.c.job_id == job_id)
        query = query.order_by(runner_runs.c.scheduled_at, runner_runs.c.attempt)
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                with self.engine.connect() as conn:
                    return [_utc_times(dict(row._mapping)) for row in conn.execute(query)]
            except OperationalError as exc:
                # The server restarting, or SQLite's writer holding the lock; a missing table
                # is a test that reads too early, and fails like any other error.
                if "no such table" in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def with_status(self, status: str, job_id: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.runs(job_id) if r["status"] == status]

    def close(self) -> None:
        self.engine.dispose()


def _utc_times(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite hands back naive datetimes; the runner writes UTC."""
    return {k: utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def job_file(*jobs: str, defaults: str | None = None) -> str:
    """A YAML job file; each job is a YAML flow mapping body such as `id: a, target: ...`."""
    head = f"defaults: {{{defaults}}}\n" if defaults else ""
    return head + "jobs:\n" + "".join(f"  - {{{j}}}\n" for j in jobs)


def write_atomic(path: Path, content: str) -> None:
    """Save the way many editors do: write a temporary file, then rename it over the target."""
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temp.write_text(content, encoding="utf-8")
    os.replace(temp, path)


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
