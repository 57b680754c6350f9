"""`runner run` of jobs that misbehave, in real subprocesses on a real SQLite database.

Whatever a target does (sys.exit(), a custom BaseException, CancelledError, killing its own
process, hanging past its timeout), the run is recorded as failed or timed_out attempts,
exactly as many as its retries allow, and `runner run` exits 1 promptly. Errors no retry can
fix fail the fire at its first attempt.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import Calls, base_env, job_file, runner_cli

pytestmark = pytest.mark.slow

RETRIES = "retries: {max_attempts: 2, delay: 1}"
MISBEHAVING = {  # job id: target in sampleapp.misbehaving, timeout
    "async_exit": ("async_exit", None),
    "async_custom": ("async_custom", None),
    "async_cancelled": ("async_cancelled", None),
    "sync_exit": ("sync_exit", "1m"),  # with a timeout: in a child process
    "sync_custom": ("sync_custom", "1m"),
    "sync_dies": ("sync_dies", "1m"),
    "sync_exit-in-thread": ("sync_exit", None),  # without: in a thread of the runner
    "sync_custom-in-thread": ("sync_custom", None),
}


@dataclass
class Db:
    root: Path
    url: str
    env: dict[str, str]
    calls: Calls

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
        return runner_cli([*args, "--db", self.url], env or self.env, self.root, timeout)

    def runs(self, job_id: str) -> list[dict[str, Any]]:
        result = self.cli("runs", "--job", job_id, "--output", "json")
        assert result.returncode == 0, result.stderr
        return sorted(json.loads(result.stdout), key=lambda r: r["attempt"])


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    root = tmp_path_factory.mktemp("attempts")
    plugin = root / "plugin"
    plugin.mkdir()
    (plugin / "vanishing.py").write_text("def job() -> None:\n    pass\n")
    env = base_env(root / "calls.jsonl")
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), env["PYTHONPATH"]])
    env["RUNNER_ALLOWED_TARGETS"] = "sampleapp,vanishing"
    jobs = [
        f"id: {job_id}, target: 'sampleapp.misbehaving:{target}', {RETRIES}, "
        + (f"timeout: {timeout}, " if timeout else "")
        + "trigger: {interval: 1h}"
        for job_id, (target, timeout) in MISBEHAVING.items()
    ]
    jobs += [
        "id: hangs, target: 'sampleapp.misbehaving:hang', timeout: 3s, trigger: {interval: 1h}",
        "id: unset-var, target: 'sampleapp.jobs:echo_env', kwargs: {value: '${NOT_SET_Q}'}, "
        "retries: {max_attempts: 3, delay: 1}, trigger: {interval: 1h}",
        "id: vanishes, target: 'vanishing:job', retries: {max_attempts: 3, delay: 1}, "
        "trigger: {interval: 1h}",
        "id: forbidden, target: 'sampleapp.jobs:tick', retries: {max_attempts: 3, delay: 1}, "
        "trigger: {interval: 1h}",
    ]
    (root / "jobs.yaml").write_text(job_file(*jobs))
    ctx = Db(root, f"sqlite:///{root}/runner.db", env, Calls(root / "calls.jsonl"))
    applied = ctx.cli("apply", str(root / "jobs.yaml"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield ctx


NAMED_IN_ERROR: dict[str, Callable[[str], bool]] = {
    "sync_exit": lambda error: error.startswith("SystemExit: 4"),
    "sync_exit-in-thread": lambda error: error.startswith("SystemExit: 4"),
    "async_exit": lambda error: error.startswith("SystemExit: 4"),
    "sync_dies": lambda error: "exit code 3" in error,
}


@pytest.mark.parametrize("job_id", MISBEHAVING)
def test_misbehaving_target_is_one_failed_run_per_attempt(db: Db, job_id: str) -> None:
    target, _ = MISBEHAVING[job_id]
    before = len(db.calls.named(target))
    result = db.cli("run", job_id, "--output", "json")
    assert result.returncode == 1, result.stdout + result.stderr  # not the target's exit code
    assert json.loads(result.stdout)["status"] == "failed"
    runs = db.runs(job_id)
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "failed")]
    assert all(r["error"] for r in runs)
    assert len(db.calls.named(target)) - before == 2  # the retry really ran it again
    # The exit code or the process's death is named (each test runs its own job: any order).
    named = NAMED_IN_ERROR.get(job_id)
    if named is not None:
        assert all(named(r["error"]) for r in runs), runs


def test_sync_job_past_its_timeout_is_killed_and_run_exits_promptly(db: Db) -> None:
    # The target sleeps an hour; the subprocess deadline is what "promptly" means here.
    result = db.cli("run", "hangs", "--output", "json", timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["status"] == "timed_out"
    assert [r["status"] for r in db.runs("hangs")] == ["timed_out"]
    (started,) = db.calls.named("hang_start")
    deadline = time.monotonic() + 10
    while _alive(started["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(started["pid"])


def test_unset_variable_fails_at_once_without_retries(db: Db) -> None:
    result = db.cli("run", "unset-var")
    assert result.returncode == 1
    runs = db.runs("unset-var")
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed")]
    assert "NOT_SET_Q" in runs[0]["error"]


def test_import_error_fails_at_once_without_retries(db: Db) -> None:
    (db.root / "plugin" / "vanishing.py").unlink()
    result = db.cli("run", "vanishes")
    assert result.returncode == 1
    runs = db.runs("vanishes")
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed")]
    assert "cannot import 'vanishing'" in runs[0]["error"]


def test_target_no_longer_allowed_fails_at_once_without_retries(db: Db) -> None:
    env = {**db.env, "RUNNER_ALLOWED_TARGETS": "vanishing"}
    result = db.cli("run", "forbidden", env=env)
    assert result.returncode == 1
    runs = db.runs("forbidden")
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed")]
    assert "not allowed" in runs[0]["error"]
    assert db.calls.named("tick") == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
