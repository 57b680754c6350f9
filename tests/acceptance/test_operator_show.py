"""`runner show`, `runner runs` filters and `/api/runs?status=`: real subprocesses, real HTTP."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_helpers import ServeProcess, base_env, job_file, runner_cli

pytestmark = pytest.mark.slow


class Shell:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = base_env(root / "calls.jsonl")
        self.db = f"sqlite:///{root}/runner.db"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return runner_cli([*args, "--db", self.db], self.env, self.root)

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--output", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    made = Shell(tmp_path)
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text(
        job_file(
            "id: ok, target: 'sampleapp.jobs:tick', trigger: {interval: 1h}",
            "id: boom, target: 'sampleapp.jobs:boom', trigger: {cron: '0 9 * * *'}, "
            "timeout: 5m, retries: {max_attempts: 2, delay: 1}",
        ),
        encoding="utf-8",
    )
    assert made.run("apply", str(jobs)).returncode == 0
    assert made.run("run", "ok").returncode == 0
    assert made.run("run", "boom").returncode == 1
    return made


def test_runs_has_headers_durations_and_filters(shell: Shell) -> None:
    text = shell.run("runs").stdout.splitlines()
    assert re.fullmatch(r"RUN +JOB +SCHEDULED \(UTC\) +ATTEMPT +STATUS +DURATION +ERROR", text[0])
    assert len(text) == 4
    for row in text[1:]:
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ +[12] +\w+ +\d+\.\d\ds", row), row
    assert text[1].endswith("ValueError: boom")

    failed = shell.json("runs", "--status", "failed")
    assert [(r["job_id"], r["attempt"]) for r in failed] == [("boom", 2), ("boom", 1)]
    both = shell.json("runs", "--status", "failed", "--status", "succeeded")
    assert len(both) == 3
    assert len(shell.json("runs", "--since", "1h")) == 3
    assert shell.json("runs", "--since", "2999-01-01T00:00:00Z") == []
    assert shell.json("runs", "--job", "ok", "--status", "failed") == []

    done = shell.run("runs", "--since", "yesterday")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "--since" in done.stderr


def test_show_gives_the_job_its_runs_and_the_last_traceback(shell: Shell) -> None:
    job = shell.json("show", "boom")
    assert job["source"].endswith("a.yaml:3")
    assert job["override"] is None and job["paused"] is False
    assert len(job["next"]) == 5 and all(t.endswith("09:00:00+00:00") for t in job["next"])
    assert [r["attempt"] for r in job["runs"]] == [2, 1]
    assert all(isinstance(r["duration"], float) for r in job["runs"])
    failure = job["last_failure"]
    assert failure["run_id"] == job["runs"][0]["run_id"]
    assert 'raise ValueError("boom")' in failure["traceback"]

    text = shell.run("show", "boom").stdout
    assert re.search(r"^job boom  \(.*a\.yaml:3\)$", text, re.M)
    assert "trigger:  cron '0 9 * * *' UTC" in text
    assert "policy:   timeout 5m, 2 attempts" in text
    assert "last failure: run" in text and "Traceback (most recent call last)" in text

    assert shell.run("pause", "boom").returncode == 0
    paused = shell.json("show", "boom")
    assert paused["override"] is True and paused["next"] == []
    assert "state:    paused by an operator" in shell.run("show", "boom").stdout

    ok = shell.json("show", "ok")
    assert ok["last_failure"] is None and ok["runs"][0]["status"] == "succeeded"
    done = shell.run("show", "nope")
    assert done.returncode == 1
    assert done.stderr == "error: no stored job 'nope'; run `runner jobs` to list them\n"


def test_api_runs_honours_status_like_the_cli(shell: Shell) -> None:
    serve = ServeProcess(
        [str(shell.root / "jobs.d")], shell.db, shell.env, shell.root, ["--http", "127.0.0.1:0"]
    ).start()
    try:
        serve.wait_ready()
        found = re.search(r"http://\S+", serve.wait_for_log(r"HTTP on http://").text)
        assert found is not None
        with httpx.Client(base_url=found.group(0), timeout=10) as http:
            failed = http.get("/api/runs", params={"status": "failed"}).json()
            assert failed == shell.json("runs", "--status", "failed")
            assert len(failed) == 2
            several = http.get("/api/runs", params=[("status", "failed"), ("status", "succeeded")])
            assert len(several.json()) == 3
            assert http.get("/api/runs", params={"since": "2999-01-01T00:00:00Z"}).json() == []
            assert http.get("/api/runs", params={"status": "nonsense"}).status_code == 422
        assert serve.stop() == 0
    finally:
        serve.kill()
