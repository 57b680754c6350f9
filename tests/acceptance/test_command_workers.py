"""Command jobs under `serve --executor procrastinate`: real `runner worker` processes run them.

The worker's own allowlist decides, since it is the process that executes: one that allows
the program runs it and records its output under its node name; one whose operator did not
enable commands fails every fire at once, without retries, and the program never runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import wait_until
from test_workers_cluster import Cluster, cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

__all__ = ["cluster"]


def job(script: str) -> str:
    return (
        f"jobs:\n  - id: greet\n    command: [sh, -c, '{script}', sh, worker]\n"
        "    trigger: {interval: 2s}\n    retries: {max_attempts: 3, delay: 1s}\n"
    )


def _serve(cluster: Cluster) -> None:
    (cluster.jobs / "jobs.yaml").write_text(job('echo "hi from $1"'))
    cluster.env = {**cluster.env, "RUNNER_ALLOWED_COMMANDS": "/bin/sh"}
    cluster.serve(1)


def test_a_worker_that_allows_the_program_runs_it(cluster: Cluster) -> None:
    _serve(cluster)
    worker = cluster.worker()
    done = wait_until(
        lambda: cluster.history.with_status("succeeded", "greet"), 60, 0.2, "a command run"
    )
    assert done[0]["traceback"] == "hi from worker\n"
    assert done[0]["node"].endswith(worker.name_part)
    cluster.settle()


def test_a_worker_without_commands_enabled_refuses_the_program(
    cluster: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    (cluster.jobs / "jobs.yaml").write_text(job(f"touch {marker}"))
    cluster.env = {**cluster.env, "RUNNER_ALLOWED_COMMANDS": "/bin/sh"}
    cluster.serve(1)
    cluster.worker(RUNNER_ALLOWED_COMMANDS="")
    wait_until(
        lambda: len(cluster.history.with_status("failed", "greet")) >= 2, 60, 0.2, "refused runs"
    )
    cluster.settle()
    failed = cluster.history.with_status("failed", "greet")
    assert all("command jobs are disabled" in r["error"] for r in failed), failed
    assert all(r["traceback"] is None for r in failed)
    # Refused for good: the job's three attempts are not spent on it.
    assert all(r["attempt"] == 1 for r in cluster.history.runs("greet")), failed
    assert not marker.exists()
