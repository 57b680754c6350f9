"""The HTTP side over a real Server, real database and real uvicorn: every endpoint, with and
without a token, plus one real `runner serve --http` subprocess."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from runner import metrics
from runner.http import api
from runner.http.server import HttpError, build_app, parse_address, start_in_thread
from runner.serve import Options, Server

TOKEN = "test-token-5f1c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CONTROL = ["run", "pause", "resume"]
JOB_KEYS = {
    "id",
    "target",
    "command",
    "trigger",
    "next_run_time",
    "paused",
    "last_status",
    "last_run_at",
    "source",
    "queued",
    "running",
}
RUN_KEYS = {
    "run_id",
    "job_id",
    "scheduled_at",
    "started_at",
    "finished_at",
    "status",
    "attempt",
    "error",
    "node",
}

Wait = Callable[..., Any]
FinishedRun = Callable[..., dict[str, Any]]


def wait_until(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def read_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def cli_json(args: list[str], env: dict[str, str]) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- health --------------------------------------------------------------------------------
def test_healthz_and_readyz_on_a_running_leader(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "reason": None,
        "leader": True,
        "scheduler_running": True,
        "last_pass_error": None,
        "last_reconcile_error": None,
        "reconcile_errors": [],
        "broken_files": [],
    }


TICKING = """\
jobs:
  - {id: every-second, target: 'sampleapp.jobs:tick', kwargs: {label: r}, trigger: {interval: 1}}
"""


def ticking_jobs(root: Path) -> Path:
    folder = root / "ticking.d"
    folder.mkdir()
    (folder / "jobs.yaml").write_text(TICKING, encoding="utf-8")
    return folder


def rename_runs_table(db_url: str, old: str, new: str) -> None:
    from runner.store.engine import connect

    engine = connect(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")
    finally:
        engine.dispose()


def test_readyz_is_503_while_stopping(
    make_server: Callable[..., Server], jobs_dir: Path, sqlite_url: str
) -> None:
    server = make_server(jobs_dir, sqlite_url)
    assert api.readiness(server)[0]
    server.stop()
    ready, details = api.readiness(server)
    assert not ready and details["ready"] is False
    assert details["reason"] == "stopping"


def test_readyz_is_503_after_a_failed_scheduling_pass(
    make_server: Callable[..., Server], tmp_path: Path, db_url: str, wait: Wait
) -> None:
    server = make_server(ticking_jobs(tmp_path), db_url)
    wait(lambda: api.readiness(server)[0], 10, "readiness")
    rename_runs_table(db_url, "runner_runs", "runner_runs_away")
    try:
        details = wait(lambda: (d := api.readiness(server)[1])["reason"] and d, 20, "a failed pass")
    finally:
        rename_runs_table(db_url, "runner_runs_away", "runner_runs")
    assert details["ready"] is False and details["leader"] is True
    assert details["reason"].startswith("last scheduling pass failed: ")
    assert "runner_runs" in details["last_pass_error"]
    # Once the store is back, so is readiness.
    wait(lambda: api.readiness(server)[0], 20, "readiness after the store came back")


@pytest.mark.postgres
def test_readyz_is_503_when_the_database_is_down(
    make_server: Callable[..., Server], jobs_dir: Path, restartable_pg: Any, wait: Wait
) -> None:
    server = make_server(jobs_dir, restartable_pg.url)
    wait(lambda: api.readiness(server)[0], 10, "readiness")
    restartable_pg.server.control("stop")
    try:
        details = wait(
            lambda: (d := api.readiness(server)[1])["reason"] and d, 30, "a database problem"
        )
    finally:
        restartable_pg.server.control("start")
    assert details["ready"] is False
    assert "unreachable" in details["reason"] or "did not answer" in details["reason"]
    wait(lambda: api.readiness(server)[0], 30, "readiness after the database came back")


@pytest.mark.postgres
def test_readyz_on_a_standby_ignores_scheduling_errors(
    make_server: Callable[..., Server], tmp_path: Path, pg_url: str, wait: Wait
) -> None:
    jobs = ticking_jobs(tmp_path)
    leader = make_server(jobs, pg_url)
    wait(lambda: leader.leadership.leading, 10, "the first server to lead")
    standby = make_server(jobs, pg_url)
    assert not standby.leadership.leading
    rename_runs_table(pg_url, "runner_runs", "runner_runs_away")
    try:
        wait(lambda: api.readiness(leader)[1]["reason"], 20, "the leader's failed pass")
        ready, details = api.readiness(standby)
    finally:
        rename_runs_table(pg_url, "runner_runs_away", "runner_runs")
    assert ready, details
    assert details["leader"] is False


def test_readyz_over_http_before_start_is_503(
    jobs_dir: Path, sqlite_url: str, serve_app: Callable[..., Any], calls: Path
) -> None:
    server = Server(Options([str(jobs_dir)], sqlite_url, watch=False))
    served = serve_app(build_app(server), lifespan="off")
    response = httpx.get(f"{served.url}/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "scheduler not running"
    assert httpx.get(f"{served.url}/healthz").status_code == 200
    server.engine.dispose()
    server.runtime.loop.close()


# --- read endpoints ------------------------------------------------------------------------
def test_jobs_list_is_the_cli_json(
    client: httpx.Client, sqlite_url: str, child_env: Callable[..., dict[str, str]]
) -> None:
    response = client.get("/api/jobs")
    assert response.status_code == 200
    body = response.json()
    assert [job["id"] for job in body] == ["boom", "slow", "tick"]
    assert all(set(job) == JOB_KEYS for job in body)
    assert body == cli_json(["jobs", "--db", sqlite_url], child_env())


def test_job_detail_has_next_fire_times_and_recent_runs(
    client: httpx.Client, token: str, finished_run: FinishedRun
) -> None:
    assert client.post("/api/jobs/boom/run", headers=BEARER).status_code == 202
    finished_run(client, "boom", ("failed",))
    detail = client.get("/api/jobs/slow", params={"next": 3}).json()
    assert set(JOB_KEYS) <= set(detail)
    assert detail["trigger"] == {"cron": "0 4 * * *", "timezone": "Europe/Berlin"}
    assert len(detail["next"]) == 3
    berlin = [
        datetime.fromisoformat(t).astimezone(ZoneInfo("Europe/Berlin")) for t in detail["next"]
    ]
    assert all((t.hour, t.minute) == (4, 0) for t in berlin)
    assert berlin == sorted(berlin) and len(set(berlin)) == 3
    assert detail["runs"] == []

    tick = client.get("/api/jobs/tick").json()
    assert tick["description"] == "Ticks once an hour"
    assert tick["labels"] == {"team": "ops"}
    assert tick["spec"]["kwargs"] == {"label": "from-http"}
    assert len(tick["next"]) == 5

    boom = client.get("/api/jobs/boom", params={"runs": 1, "next": 0}).json()
    assert boom["next"] == []
    assert [r["status"] for r in boom["runs"]] == ["failed"]
    assert boom["last_status"] == "failed"
    assert set(boom["runs"][0]) == RUN_KEYS

    assert client.get("/api/jobs/tick", params={"next": 101}).status_code == 422


def test_unknown_job_is_a_json_404(client: httpx.Client, token: str) -> None:
    for path in ("/api/jobs/nope", "/api/jobs/nope?next=2"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "no stored job 'nope'"}
    for action in CONTROL:
        response = client.post(f"/api/jobs/nope/{action}", headers=BEARER)
        assert response.status_code == 404
        assert response.json() == {"detail": "no stored job 'nope'"}


def test_runs_filter_and_limit_are_the_cli_json(
    client: httpx.Client,
    token: str,
    sqlite_url: str,
    child_env: Callable[..., dict[str, str]],
    finished_run: FinishedRun,
) -> None:
    assert client.get("/api/runs").json() == []
    for job in ("tick", "boom", "tick"):
        response = client.post(f"/api/jobs/{job}/run", headers=BEARER)
        assert response.status_code == 202
        run_id = response.json()["run_id"]

        def done(job: str = job, run_id: int = run_id) -> bool:
            rows = client.get("/api/runs", params={"job": job}).json()
            return any(r["run_id"] == run_id and r["status"] != "running" for r in rows)

        wait_until(done, 10, f"run {run_id} of {job} to finish")
    runs = client.get("/api/runs").json()
    assert len(runs) == 3
    assert all(set(r) == RUN_KEYS for r in runs)
    assert [r["run_id"] for r in runs] == sorted((r["run_id"] for r in runs), reverse=True)
    assert {r["job_id"] for r in client.get("/api/runs", params={"job": "boom"}).json()} == {"boom"}
    assert len(client.get("/api/runs", params={"limit": 1}).json()) == 1
    assert client.get("/api/runs", params={"limit": 0}).status_code == 422
    assert client.get("/api/runs", params={"job": "nope"}).json() == []

    def settled() -> Any:
        rows = client.get("/api/runs", params={"job": "tick"}).json()
        return rows if all(r["status"] != "running" for r in rows) else None

    tick_runs = wait_until(settled, 10, "tick runs to settle")
    assert tick_runs == cli_json(["runs", "--db", sqlite_url, "--job", "tick"], child_env())


# --- control endpoints -----------------------------------------------------------------------
def test_run_now_runs_in_the_server_process(
    client: httpx.Client, token: str, calls: Path, server: Server, finished_run: FinishedRun
) -> None:
    response = client.post("/api/jobs/tick/run", headers=BEARER)
    assert response.status_code == 202
    run = response.json()
    assert set(run) == RUN_KEYS
    assert (run["job_id"], run["status"], run["attempt"], run["node"]) == (
        "tick",
        "running",
        1,
        server.node,
    )
    done = finished_run(client, "tick")
    assert done["run_id"] == run["run_id"]
    assert done["scheduled_at"] == run["scheduled_at"]
    ran = [c for c in read_calls(calls) if c["name"] == "tick"]
    assert [(c["pid"], c["label"]) for c in ran] == [(os.getpid(), "from-http")]
    assert client.get("/api/jobs/tick").json()["last_status"] == "succeeded"


def test_run_now_of_a_failing_job_is_recorded_failed(
    client: httpx.Client, token: str, finished_run: FinishedRun
) -> None:
    assert client.post("/api/jobs/boom/run", headers=BEARER).status_code == 202
    failed = finished_run(client, "boom", ("failed",))
    assert failed["error"] == "ValueError: boom"


def test_run_now_refuses_beyond_max_instances(
    client: httpx.Client, token: str, finished_run: FinishedRun
) -> None:
    assert client.post("/api/jobs/slow/run", headers=BEARER).status_code == 202
    second = client.post("/api/jobs/slow/run", headers=BEARER)
    assert second.status_code == 409
    assert "max_instances" in second.json()["detail"]
    finished_run(client, "slow")
    assert client.post("/api/jobs/slow/run", headers=BEARER).status_code == 202


def test_pause_and_resume_reach_the_running_scheduler(
    make_server: Callable[..., Server], jobs_dir: Path, db_url: str, token: str, wait: Wait
) -> None:
    server = make_server(jobs_dir, db_url)
    http = start_in_thread(server, "127.0.0.1:0")
    try:
        with httpx.Client(base_url=http.url, headers=BEARER) as client:

            def held(job_id: str) -> Any:
                job = server.scheduler.store.lookup_job(job_id)
                assert job is not None
                return job

            assert held("tick").next_run_time is not None

            assert client.post("/api/jobs/tick/pause").json() == {
                "id": "tick",
                "paused": True,
                "changed": True,
            }
            detail = client.get("/api/jobs/tick").json()
            assert (detail["paused"], detail["next_run_time"], detail["next"]) == (True, None, [])
            wait(lambda: held("tick").next_run_time is None, 10, "the scheduler to see the pause")
            again = client.post("/api/jobs/tick/pause").json()
            assert again["changed"] is False

            assert client.post("/api/jobs/tick/resume").json()["changed"] is True
            detail = client.get("/api/jobs/tick").json()
            assert detail["paused"] is False
            assert detail["next_run_time"] is not None
            assert len(detail["next"]) == 5
            wait(lambda: held("tick").next_run_time is not None, 10, "the scheduler to resume")
            assert client.post("/api/jobs/tick/resume").json()["changed"] is False

            # Run now on this backend too.
            assert client.post("/api/jobs/tick/run").status_code == 202
            rows = wait(
                lambda: [
                    r
                    for r in client.get("/api/runs", params={"job": "tick"}).json()
                    if r["status"] == "succeeded"
                ],
                10,
                "the manual run",
            )
            assert len(rows) == 1
    finally:
        http.stop()


# --- who may do what -------------------------------------------------------------------------
def test_control_without_a_configured_token_is_refused(client: httpx.Client) -> None:
    for action in CONTROL:
        for headers in ({}, BEARER):
            response = client.post(f"/api/jobs/tick/{action}", headers=headers)
            assert response.status_code == 403
            detail = response.json()["detail"]
            assert "RUNNER_HTTP_TOKEN" in detail
            assert "RUNNER_HTTP_INSECURE=1" in detail


def test_control_with_a_missing_or_wrong_token_is_401(client: httpx.Client, token: str) -> None:
    wrong: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ]
    for action in CONTROL:
        for headers in wrong:
            response = client.post(f"/api/jobs/tick/{action}", headers=headers)
            assert response.status_code == 401, (action, headers)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "token" in response.json()["detail"]
    assert client.get("/api/jobs/tick").json()["paused"] is False


def test_control_with_the_token_is_done(client: httpx.Client, token: str) -> None:
    assert client.post("/api/jobs/tick/run", headers=BEARER).status_code == 202
    assert client.post("/api/jobs/tick/pause", headers=BEARER).status_code == 200
    assert client.post("/api/jobs/tick/resume", headers=BEARER).status_code == 200


def test_insecure_mode_needs_no_token(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_HTTP_INSECURE", "1")
    assert client.post("/api/jobs/tick/pause").status_code == 200
    assert client.post("/api/jobs/tick/resume").status_code == 200
    assert client.post("/api/jobs/tick/run").status_code == 202
    monkeypatch.setenv("RUNNER_HTTP_INSECURE", "yes")  # only "1" turns auth off
    assert client.post("/api/jobs/tick/pause").status_code == 403
    monkeypatch.setenv("RUNNER_HTTP_INSECURE", "1")
    monkeypatch.setenv("RUNNER_HTTP_TOKEN", TOKEN)  # a configured token always counts
    assert client.post("/api/jobs/tick/pause").status_code == 401
    assert client.post("/api/jobs/tick/pause", headers=BEARER).status_code == 200


def test_cross_origin_browser_requests_are_refused_even_without_auth(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    foreign: list[dict[str, str]] = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://sub.example"},
    ]
    for headers in foreign:
        assert client.post("/api/jobs/tick/pause", headers={**BEARER, **headers}).status_code == 403
    monkeypatch.delenv("RUNNER_HTTP_TOKEN")
    monkeypatch.setenv("RUNNER_HTTP_INSECURE", "1")
    for headers in foreign:
        assert client.post("/api/jobs/tick/pause", headers=headers).status_code == 403
    origin = {"Origin": str(client.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/jobs/tick/pause", headers=origin).status_code == 200


def test_reads_stay_open_when_a_token_is_configured(client: httpx.Client, token: str) -> None:
    for path in ("/api/jobs", "/api/jobs/tick", "/api/runs", "/", "/metrics", "/readyz"):
        assert client.get(path).status_code == 200, path


# --- metrics -------------------------------------------------------------------------------
def test_metrics_endpoint_exposes_every_runner_metric(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name, (kind, _help, _labels) in metrics.DEFINITIONS.items():
        assert f"# TYPE {name} {kind}" in text, name
    assert re.search(r"^runner_leader 1\.0$", text, re.M)
    assert re.search(r"^runner_jobs_loaded 3\.0$", text, re.M)


def test_metric_hooks_count_what_they_are_told() -> None:
    job = "metrics-hook-test"

    def v(name: str, **labels: str) -> float:
        return metrics.value(name, **labels) or 0.0

    lag_count = v("runner_firing_lag_seconds_count")
    lag_sum = v("runner_firing_lag_seconds_sum")
    in_progress = v("runner_runs_in_progress")
    scheduled = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    started = datetime.fromisoformat("2026-01-01T00:00:02.5+00:00")

    metrics.run_started(job, 1, scheduled, started)
    assert v("runner_runs_in_progress") == in_progress + 1
    metrics.run_finished(job, 1, "failed", 0.2)
    metrics.run_started(job, 2, scheduled, started)
    metrics.run_finished(job, 2, "succeeded", 3.0)
    assert v("runner_runs_in_progress") == in_progress
    assert v("runner_runs_total", job_id=job, status="failed") == 1
    assert v("runner_runs_total", job_id=job, status="succeeded") == 1
    assert v("runner_retries_total", job_id=job) == 1
    assert v("runner_firing_lag_seconds_count") == lag_count + 1  # first attempts only
    assert v("runner_firing_lag_seconds_sum") == pytest.approx(lag_sum + 2.5)
    assert v("runner_run_duration_seconds_count", job_id=job) == 2
    assert v("runner_run_duration_seconds_sum", job_id=job) == pytest.approx(3.2)
    assert v("runner_run_duration_seconds_bucket", job_id=job, le="0.5") == 1

    metrics.fire_marked(job, "missed")
    metrics.fire_marked(job, "missed")
    metrics.fire_marked(job, "skipped")
    assert v("runner_fires_missed_total", job_id=job, status="missed") == 2
    assert v("runner_fires_missed_total", job_id=job, status="skipped") == 1

    reconciles, errors = v("runner_reconciles_total"), v("runner_reconcile_errors_total")
    metrics.reconciled(True)
    metrics.reconciled(False)
    assert v("runner_reconciles_total") == reconciles + 2
    assert v("runner_reconcile_errors_total") == errors + 1

    metrics.set_leader(False)
    assert v("runner_leader") == 0
    metrics.set_leader(True)
    assert v("runner_leader") == 1
    metrics.set_jobs(7)
    assert v("runner_jobs_loaded") == 7
    assert b"runner_fires_missed_total" in metrics.exposition()


def test_metrics_module_is_a_no_op_without_prometheus_client() -> None:
    script = """
import sys
from datetime import UTC, datetime
sys.modules["prometheus_client"] = None  # as if not installed
from runner import metrics
assert metrics.ENABLED is False
now = datetime.now(UTC)
metrics.run_started("j", 1, now, now)
metrics.run_finished("j", 1, "succeeded", 0.1)
metrics.fire_marked("j", "missed")
metrics.reconciled(False)
metrics.set_leader(True)
metrics.set_jobs(3)
assert metrics.exposition() == b""
assert metrics.value("runner_leader") is None
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


# --- the status page (without a browser; see test_page_browser.py) --------------------------
def test_status_page_lists_jobs_outcomes_and_failures(
    client: httpx.Client, token: str, finished_run: FinishedRun
) -> None:
    assert client.post("/api/jobs/boom/run", headers=BEARER).status_code == 202
    finished_run(client, "boom", ("failed",))
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for job in ("tick", "boom", "slow"):
        assert f'<tr data-job="{job}">' in html
    assert '<span class="status-failed">failed</span>' in html
    assert "ValueError: boom" in html
    assert "every 1h UTC" in html
    assert "cron &#x27;0 4 * * *&#x27; Europe/Berlin" in html
    assert 'id="token"' in html


def test_status_page_forms_need_the_token_in_the_form(
    client: httpx.Client, token: str, finished_run: FinishedRun
) -> None:
    refused = client.post("/ui/jobs/tick/run", data={"token": ""})
    assert refused.status_code == 401
    assert "Refused: missing token" in refused.text
    assert client.post("/ui/jobs/tick/run", data={"token": "wrong"}).status_code == 401

    done = client.post("/ui/jobs/tick/run", data={"token": TOKEN})
    assert done.status_code == 303
    assert done.headers["location"] == "/?done=run&job=tick"
    finished_run(client, "tick")
    assert "Started a run of tick." in client.get(done.headers["location"]).text

    paused = client.post("/ui/jobs/tick/pause", data={"token": TOKEN})
    assert paused.headers["location"] == "/?done=pause&job=tick"
    assert client.get("/api/jobs/tick").json()["paused"] is True
    again = client.post("/ui/jobs/tick/pause", data={"token": TOKEN})
    assert again.headers["location"] == "/?done=pause-unchanged&job=tick"
    resumed = client.post("/ui/jobs/tick/resume?refresh=0", headers=BEARER)
    assert resumed.headers["location"] == "/?done=resume&job=tick&refresh=0"
    assert 'action="/ui/jobs/tick/run?refresh=0"' in client.get("/?refresh=0").text

    assert client.post("/ui/jobs/nope/run", data={"token": TOKEN}).status_code == 404
    assert client.post("/ui/jobs/tick/delete", data={"token": TOKEN}).status_code == 404
    evil = {"Origin": "http://evil.example"}
    assert client.post("/ui/jobs/tick/run", data={"token": TOKEN}, headers=evil).status_code == 403


def test_status_page_without_a_token_configured_says_how_to_enable(
    client: httpx.Client,
) -> None:
    assert "Buttons are disabled: start the server with RUNNER_HTTP_TOKEN" in client.get("/").text
    assert client.post("/ui/jobs/tick/run", data={"token": "x"}).status_code == 403


def test_status_page_escapes_what_it_shows(client: httpx.Client) -> None:
    response = client.get("/", params={"done": "run", "job": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "<script>" not in client.get("/", params={"done": "<script>", "job": "x"}).text[:4000]


# --- serving ---------------------------------------------------------------------------------
def test_openapi_schema_is_served(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/runs",
        "/api/jobs/{job_id}/run",
        "/api/jobs/{job_id}/pause",
        "/api/jobs/{job_id}/resume",
    ):
        assert path in paths, path
    for action in CONTROL:
        operation = paths[f"/api/jobs/{{job_id}}/{action}"]["post"]
        assert operation["security"] == [{"token": []}]
        assert {"401", "403", "404"} <= set(operation["responses"])
    assert "/" not in paths  # the HTML page is not part of the API


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9090", ("0.0.0.0", 9090)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_http_address_parsing(text: str, parsed: tuple[str, int]) -> None:
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ["8080", "host:", "host:port", "h:70000"])
def test_bad_http_address_is_a_clear_error(text: str) -> None:
    with pytest.raises(HttpError, match="expected HOST:PORT"):
        parse_address(text)


def test_serve_options_http_starts_and_stops_with_the_server(
    make_server: Callable[..., Server],
    jobs_dir: Path,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
    wait: Wait,
) -> None:
    caplog.set_level(logging.INFO, logger="runner.http")
    server = make_server(jobs_dir, sqlite_url, http="127.0.0.1:0")
    line = next(r.getMessage() for r in caplog.records if r.name == "runner.http")
    url = re.search(r"http://[\d.]+:\d+", line)
    assert url is not None
    assert httpx.get(f"{url[0]}/healthz").status_code == 200
    server.stop()

    def closed() -> bool:
        try:
            httpx.get(f"{url[0]}/healthz", timeout=1)
        except httpx.TransportError:
            return True
        return False

    wait(closed, 10, "the HTTP side to stop with the server")


def test_taken_port_is_a_clear_error(server: Server) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(HttpError, match=rf"127\.0\.0\.1:{port}: cannot listen"):
            start_in_thread(server, f"127.0.0.1:{port}")


def test_real_runner_serve_subprocess(
    jobs_dir: Path,
    tmp_path: Path,
    calls: Path,
    child_env: Callable[..., dict[str, str]],
    processes: Callable[..., Any],
    wait: Wait,
) -> None:
    db = f"sqlite:///{tmp_path}/serve.db"
    env = child_env(RUNNER_HTTP_TOKEN=TOKEN)
    args = ["-m", "runner", "serve", str(jobs_dir), "--db", db, "--http", "127.0.0.1:0"]
    serve = processes(args, env, tmp_path)
    line = serve.wait_for_line("HTTP on http://")
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert match is not None
    with httpx.Client(base_url=match[0], timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        wait(lambda: client.get("/readyz").status_code == 200, 10, "readiness")
        assert [j["id"] for j in client.get("/api/jobs").json()] == ["boom", "slow", "tick"]
        assert client.post("/api/jobs/tick/run").status_code == 401
        run = client.post("/api/jobs/tick/run", headers=BEARER)
        assert run.status_code == 202
        wait(
            lambda: any(
                r["status"] == "succeeded"
                for r in client.get("/api/runs", params={"job": "tick"}).json()
            ),
            10,
            "the run",
        )
        assert [c["pid"] for c in read_calls(calls)] == [serve.proc.pid]
        text = client.get("/metrics").text
        assert re.search(r"^runner_leader 1\.0$", text, re.M)
        # The core's hooks count the real run: by job and status, with its duration and lag.
        assert re.search(
            r'^runner_runs_total\{job_id="tick",status="succeeded"\} [1-9]', text, re.M
        )
        assert re.search(r'^runner_run_duration_seconds_count\{job_id="tick"\} [1-9]', text, re.M)
        assert re.search(r"^runner_firing_lag_seconds_count [1-9]", text, re.M)
        assert re.search(r"^runner_reconciles_total [1-9]", text, re.M)
        assert client.post("/api/jobs/tick/pause", headers=BEARER).json()["changed"] is True

    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(20) == 0, serve.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{match[0]}/healthz", timeout=2)


def test_runner_serve_on_a_taken_port_exits_1_with_one_line(
    jobs_dir: Path,
    tmp_path: Path,
    child_env: Callable[..., dict[str, str]],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                *(sys.executable, "-m", "runner", "serve", str(jobs_dir), "--no-watch"),
                *("--db", f"sqlite:///{tmp_path}/t.db", "--http", f"127.0.0.1:{port}"),
            ],
            env=child_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert f"error: --http 127.0.0.1:{port}: cannot listen" in done.stderr
    assert "Traceback" not in done.stderr
