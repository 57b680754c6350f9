"""Fixtures for the HTTP side: a real Server on a real database, served by real uvicorn.

No TestClient: every request goes over a socket to uvicorn in a thread (as `serve --http`
does), so what is tested is what runs. Waits poll with a deadline, never sleep blindly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pytest
import uvicorn

from runner.http.server import HttpServer, start_in_thread
from runner.serve import Options, Server

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
TOKEN = "test-token-5f1c"
T = TypeVar("T")

JOBS_YAML = """\
jobs:
  - id: tick
    target: sampleapp.jobs:tick
    kwargs: {label: from-http}
    trigger: {interval: 1h}
    description: Ticks once an hour
    labels: {team: ops}
  - id: boom
    target: sampleapp.jobs:boom
    trigger: {cron: "0 3 * * *"}
  - id: slow
    target: sampleapp.jobs:slow
    kwargs: {seconds: 1.5}
    trigger: {cron: "0 4 * * *", timezone: Europe/Berlin}
"""


def wait_until(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    result = probe()
    while not result:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
        result = probe()
    return result


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sampleapp call log; also sets the environment jobs run under in this process."""
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    monkeypatch.setenv("SAMPLEAPP_CALLS", str(path))
    monkeypatch.delenv("RUNNER_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("RUNNER_HTTP_INSECURE", raising=False)
    return path


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RUNNER_HTTP_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    (folder / "jobs.yaml").write_text(JOBS_YAML, encoding="utf-8")
    return folder


@pytest.fixture
def make_server(calls: Path) -> Iterator[Callable[..., Server]]:
    """Start Servers over the given jobs folder and database; all are stopped at teardown."""
    started: list[Server] = []

    def make(jobs: Path, db_url: str, http: str | None = None) -> Server:
        server = Server(Options([str(jobs)], db_url, watch=False, grace=5.0, http=http))
        assert server.start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        if not server.stopping.is_set():
            server.stop()
        close_loop(server)


def close_loop(server: Server) -> None:
    """Runtime.stop stops its event loop but does not close it (a ResourceWarning at GC)."""
    loop = server.runtime.loop
    if not loop.is_running() and not loop.is_closed():
        loop.close()


@pytest.fixture
def server(make_server: Callable[..., Server], jobs_dir: Path, sqlite_url: str) -> Server:
    return make_server(jobs_dir, sqlite_url)


@pytest.fixture
def live(server: Server) -> Iterator[HttpServer]:
    http = start_in_thread(server, "127.0.0.1:0")
    yield http
    http.stop()


@pytest.fixture
def client(live: HttpServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as session:
        yield session


def auth(value: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def wait_for_run(
    session: httpx.Client, job_id: str, statuses: tuple[str, ...] = ("succeeded",)
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        rows = session.get("/api/runs", params={"job": job_id}).json()
        return next((r for r in rows if r["status"] in statuses), None)

    return wait_until(finished, 10, f"a {'/'.join(statuses)} run of {job_id}")


class ServedApp:
    """Any ASGI app served by uvicorn on a free port in a daemon thread."""

    def __init__(self, app: Any, lifespan: Literal["auto", "on", "off"] = "on") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServedApp:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 30, "uvicorn")
        if not self.server.started:
            self.__exit__()
            raise AssertionError("uvicorn did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


class Process:
    """A subprocess whose merged output is collected line by line; killed at teardown."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def find(self, needle: str) -> str | None:
        return next((line for line in list(self.lines) if needle in line), None)

    def wait_for_line(self, needle: str, timeout: float = 20) -> str:
        def seen() -> str | None:
            if self.proc.poll() is not None and self.find(needle) is None:
                self._reader.join(2)
                raise AssertionError(f"process exited early:\n{self.output()}")
            return self.find(needle)

        return wait_until(seen, timeout, f"{needle!r} in the output")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


def subprocess_env(calls: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("RUNNER_DATABASE_URL", "RUNNER_JOBS", "RUNNER_HTTP_TOKEN", "RUNNER_HTTP_INSECURE"):
        env.pop(name, None)
    env["RUNNER_ALLOWED_TARGETS"] = "sampleapp"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    env["SAMPLEAPP_CALLS"] = str(calls)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def spawn(args: list[str], env: dict[str, str], cwd: Path) -> Process:
        process = Process([sys.executable, *args], env, cwd)
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.kill()


# Test modules cannot import this file (tests/conftest.py owns the name `conftest`), so the
# helpers reach them as fixtures.
@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def finished_run() -> Callable[..., dict[str, Any]]:
    return wait_for_run


@pytest.fixture
def child_env(calls: Path) -> Callable[..., dict[str, str]]:
    def make(**extra: str) -> dict[str, str]:
        return subprocess_env(calls, **extra)

    return make


@pytest.fixture
def serve_app() -> Iterator[Callable[..., ServedApp]]:
    opened: list[ServedApp] = []

    def serve(app: Any, lifespan: Literal["auto", "on", "off"] = "on") -> ServedApp:
        served = ServedApp(app, lifespan).__enter__()
        opened.append(served)
        return served

    yield serve
    for served in reversed(opened):
        served.__exit__()
