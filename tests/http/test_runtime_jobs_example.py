"""examples/fastapi_app.py schedules a per-user job from a request, in a real uvicorn process."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
FILE_JOB = """\
jobs:
  - id: nightly
    target: runner.tasks:heartbeat
    trigger: {cron: "0 3 * * *"}
"""


def test_a_request_schedules_and_cancels_a_users_job(
    tmp_path: Path,
    calls: Path,
    child_env: Callable[..., dict[str, str]],
    processes: Callable[..., Any],
    wait: Callable[..., Any],
) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "jobs.yaml").write_text(FILE_JOB)
    env = child_env(RUNNER_JOBS=str(jobs), RUNNER_DATABASE_URL=f"sqlite:///{tmp_path}/app.db")
    app = processes(
        ["-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", "0"],
        env,
        ROOT,
    )
    found = re.search(r"http://127\.0\.0\.1:\d+", app.wait_for_line("Uvicorn running on"))
    assert found is not None
    with httpx.Client(base_url=found[0], timeout=10) as client:
        bad = client.put("/users/alice/weekly-report", json={"cron": "0 8 * * funday"})
        assert bad.status_code == 422
        assert bad.json()["detail"].startswith("job weekly-report-alice: trigger.cron:")

        every_second = {"cron": "* * * * * *", "timezone": "Europe/Berlin"}
        made = client.put("/users/alice/weekly-report", json=every_second)
        assert made.status_code == 201, made.text
        assert made.json()["source"] == "api"
        listed = {j["id"]: j["source"] for j in client.get("/runner/api/jobs").json()}
        assert listed == {"nightly": f"{jobs}/jobs.yaml:2", "weekly-report-alice": "api"}

        def succeeded() -> list[dict[str, Any]]:
            runs = client.get("/runner/api/runs", params={"job": "weekly-report-alice"}).json()
            return [r for r in runs if r["status"] == "succeeded"]

        wait(succeeded, 10, "the user's job to run")
        again = client.put("/users/alice/weekly-report", json={"cron": "0 9 * * mon"})
        assert again.status_code == 201
        assert again.json()["trigger"]["cron"] == "0 9 * * mon"

        assert client.delete("/users/alice/weekly-report").status_code == 204
        assert client.delete("/users/alice/weekly-report").status_code == 404
        assert [j["id"] for j in client.get("/runner/api/jobs").json()] == ["nightly"]
