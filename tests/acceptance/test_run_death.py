"""A `runner run` process that dies mid-run does not leave its run `running` forever.

It heartbeats as a node while it runs; once the heartbeat stops, the serving leader closes
the run `interrupted`, as it does for a serve node that died, and the retries decide.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from serve_helpers import History, ServeProcess, base_env, job_file, runner_cli, wait_until


def test_a_killed_runner_run_is_closed_interrupted_and_retried(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        job_file(
            "id: long, target: 'sampleapp.jobs:slow', kwargs: {seconds: 3600},"
            " retries: {max_attempts: 2, delay: 1}, trigger: {interval: 1d}",
        )
    )
    db = tmp_path / "runner.db"
    url = f"sqlite:///{db}"
    env = base_env(tmp_path / "calls.jsonl")
    applied = runner_cli(["apply", str(jobs), "--db", url], env, tmp_path)
    assert applied.returncode == 0, applied.stderr
    history = History(url)
    run = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", "long", "--db", url],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    serve: ServeProcess | None = None
    try:
        wait_until(lambda: history.runs("long"), 30, 0.1, "the manual run to be claimed")
        (first,) = history.runs("long")
        assert first["status"] == "running" and str(first["node"]).endswith(":manual")
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        # A serve started meanwhile is not refused by the dead manual run's node row.
        serve = ServeProcess([str(jobs)], url, env, tmp_path, ["--no-watch"]).start()
        closed = wait_until(
            lambda: [
                r for r in history.runs("long") if r["attempt"] == 1 and r["status"] != "running"
            ],
            30,
            0.2,
            "the dead run to be closed",
        )
        assert closed[0]["status"] == "interrupted", closed
        retried = wait_until(
            lambda: [r for r in history.runs("long") if r["attempt"] == 2], 30, 0.2, "the retry"
        )
        assert retried[0]["node"] != first["node"]
    finally:
        if run.poll() is None:
            run.kill()
        if serve is not None:
            serve.kill()
        history.close()
