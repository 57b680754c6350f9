"""Command jobs end to end: a real `runner serve` on SQLite runs them, `runner run` too.

The serving process allows two programs; a command job prints through the shell and is
recorded with its output, one times out and its process group is gone, and the runner's
own settings never reach the program.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import History, ServeProcess, base_env, runner_cli, wait_until

pytestmark = pytest.mark.slow

JOBS = """\
jobs:
  - id: greet
    command: [sh, -c, 'echo "hello $1"; echo "db=$RUNNER_DATABASE_URL" >&2', sh, "${WHO}"]
    trigger: {interval: 1s}
  - id: hang
    command: [/bin/sh, -c, 'echo $$$$ >> "$1"; exec sleep 600', sh, "${PIDS}"]
    trigger: {interval: 2s}
    timeout: 1s
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, str]]]:
    (tmp_path / "jobs.yaml").write_text(JOBS)
    env = base_env(
        tmp_path / "calls.jsonl",
        RUNNER_ALLOWED_COMMANDS="/bin/sh",
        RUNNER_JOB_ENV="WHO,PIDS",
        WHO="ops",
        PIDS=str(tmp_path / "pids"),
    )
    yield tmp_path, f"sqlite:///{tmp_path}/runner.db", env


def test_serve_runs_command_jobs_and_records_their_output(
    setup: tuple[Path, str, dict[str, str]],
) -> None:
    tmp_path, url, env = setup
    proc = ServeProcess([str(tmp_path / "jobs.yaml")], url, env, tmp_path, ["--no-watch"])
    history = History(url)
    try:
        proc.start()
        proc.wait_ready(60)
        ok = wait_until(lambda: history.with_status("succeeded", "greet"), 60, what="a greet run")
        timed_out = wait_until(
            lambda: history.with_status("timed_out", "hang"), 60, what="a hang that timed out"
        )
    finally:
        proc.stop()
        history.close()
    assert ok[0]["traceback"] == "hello ops\ndb=\n"  # the runner's database URL is not given
    assert ok[0]["error"] is None
    assert timed_out[0]["error"] == "timed out after 1s; stopped with SIGTERM"
    for pid in (int(p) for p in (tmp_path / "pids").read_text().split()):
        wait_until(lambda pid=pid: gone(pid), 10, what=f"hang's program {pid} to be gone")


def test_runner_run_executes_a_command_job_and_refuses_where_commands_are_off(
    setup: tuple[Path, str, dict[str, str]],
) -> None:
    tmp_path, url, env = setup
    applied = runner_cli(["apply", str(tmp_path / "jobs.yaml"), "--db", url], env, tmp_path)
    assert applied.returncode == 0, applied.stderr
    ran = runner_cli(["run", "greet", "--db", url], env, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "greet: succeeded"
    # Another machine, whose operator did not enable commands: the run fails at once.
    elsewhere = {k: v for k, v in env.items() if k != "RUNNER_ALLOWED_COMMANDS"}
    refused = runner_cli(["run", "greet", "--db", url], elsewhere, tmp_path)
    assert refused.returncode == 1
    assert "greet: failed: command jobs are disabled" in refused.stdout
