"""The runner inside an existing FastAPI app: `runner.embed.Runner` and examples/fastapi_app.py."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from runner.embed import Runner
from runner.errors import RunnerError

TOKEN = "test-token-5f1c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]
EVERY_SECOND = """\
jobs:
  - id: tick
    target: sampleapp.jobs:tick
    kwargs: {label: embedded}
    trigger: {interval: 1}
"""

Wait = Callable[..., Any]


def read_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_example_app_runs_jobs_and_serves_the_router(
    tmp_path: Path,
    calls: Path,
    child_env: Callable[..., dict[str, str]],
    processes: Callable[..., Any],
    wait: Wait,
) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "tick.yaml").write_text(EVERY_SECOND)
    env = child_env(
        RUNNER_JOBS=str(jobs),
        RUNNER_DATABASE_URL=f"sqlite:///{tmp_path}/app.db",
        RUNNER_HTTP_TOKEN=TOKEN,
    )
    app = processes(
        ["-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", "0"],
        env,
        ROOT,
    )
    line = app.wait_for_line("Uvicorn running on")
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found is not None
    with httpx.Client(base_url=found[0], timeout=10) as client:
        assert client.get("/hello").json() == {"hello": "world"}

        # The interval job runs in the app's own process.
        wait(lambda: read_calls(calls), 10, "the job to run")
        assert {(c["name"], c["label"], c["pid"]) for c in read_calls(calls)} == {
            ("tick", "embedded", app.proc.pid)
        }
        runs = wait(
            lambda: [
                r for r in client.get("/runner/api/runs").json() if r["status"] == "succeeded"
            ],
            10,
            "a recorded run",
        )
        assert runs[0]["job_id"] == "tick"

        assert [j["id"] for j in client.get("/runner/api/jobs").json()] == ["tick"]
        assert client.get("/runner/readyz").json()["ready"] is True
        assert "runner_leader 1.0" in client.get("/runner/metrics").text
        assert 'action="/runner/ui/jobs/tick/run"' in client.get("/runner/").text
        assert client.post("/runner/api/jobs/tick/pause").status_code == 401
        paused = client.post("/runner/api/jobs/tick/pause", headers=BEARER)
        assert paused.json() == {"id": "tick", "paused": True, "changed": True}
        spec = client.get("/openapi.json").json()
        assert "/runner/api/jobs" in spec["paths"] and "/hello" in spec["paths"]

    app.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (so -SIGTERM).
    assert app.proc.wait(20) in (0, -signal.SIGTERM), app.output()
    assert "Application shutdown complete" in app.output()


def test_runner_in_a_lifespan_in_process(
    jobs_dir: Path,
    sqlite_url: str,
    calls: Path,
    token: str,
    serve_app: Callable[..., Any],
    finished_run: Callable[..., dict[str, Any]],
) -> None:
    runner = Runner([jobs_dir], sqlite_url, watch=False, grace=5)
    app = FastAPI(lifespan=runner.lifespan)
    app.include_router(runner.router(), prefix="/runner")
    served = serve_app(app)
    assert runner.server.scheduler.running
    with httpx.Client(base_url=f"{served.url}/runner", timeout=10) as client:
        assert client.get("/readyz").status_code == 200
        run = client.post("/api/jobs/tick/run", headers=BEARER)
        assert run.status_code == 202
        finished_run(client, "tick")
        form = client.post("/ui/jobs/boom/run", data={"token": TOKEN})
        assert (form.status_code, form.headers["location"]) == (
            303,
            "/runner/?done=run&job=boom",
        )
        finished_run(client, "boom", ("failed",))
    served.__exit__()
    assert runner.server.stopping.is_set()
    assert not runner.server.scheduler.running
    assert runner.server.runtime.loop.is_closed()


def test_runner_start_and_stop_are_safe_to_misuse(
    jobs_dir: Path, sqlite_url: str, calls: Path
) -> None:
    never = Runner([jobs_dir], sqlite_url)
    never.stop()  # never started: nothing to do
    never.stop()

    runner = Runner([str(jobs_dir)], sqlite_url, watch=False)
    runner.start()
    try:
        with pytest.raises(RunnerError, match="already started"):
            runner.start()
    finally:
        runner.stop()
    runner.stop()
    assert runner.server.stopping.is_set()


def test_runner_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNNER_JOBS", f"{tmp_path}/a{':'}{tmp_path}/b")
    monkeypatch.setenv("RUNNER_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    runner = Runner()
    try:
        assert runner.server.options.paths == [f"{tmp_path}/a", f"{tmp_path}/b"]
        assert runner.server.options.db_url == f"sqlite:///{tmp_path}/env.db"
    finally:
        runner.stop()
        runner.server.engine.dispose()
