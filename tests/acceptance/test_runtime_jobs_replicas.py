"""A job added at run time on one `runner serve` replica is scheduled by the others within a
second, and the command line shows where each job comes from. Real subprocesses, real
PostgreSQL, real HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_helpers import Calls, ServeProcess, base_env, job_file, runner_cli, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
TOKEN = "replica-token-31d"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FILE_JOB = "id: nightly, target: sampleapp.jobs:tick, trigger: {cron: '0 3 * * *'}"


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[list[tuple[ServeProcess, httpx.Client]]]:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "jobs.yaml").write_text(job_file(FILE_JOB))
    env = base_env(tmp_path / "calls.jsonl", RUNNER_HTTP_TOKEN=TOKEN)
    procs = [
        ServeProcess([str(jobs)], pg_url, env, tmp_path, ["--http", "127.0.0.1:0"]).start()
        for _ in range(2)
    ]
    clients = []
    try:
        for proc in procs:
            line = proc.wait_for_log(r"HTTP on http://127\.0\.0\.1:\d+", 30).text
            url = re.search(r"http://127\.0\.0\.1:\d+", line)
            assert url is not None
            clients.append(httpx.Client(base_url=url[0], timeout=10))
        yield list(zip(procs, clients, strict=True))
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.kill()


def loaded(client: httpx.Client) -> int:
    """How many jobs the replica's scheduler holds in memory (not what the database says)."""
    found = re.search(r"^runner_jobs_loaded (\S+)$", client.get("/metrics").text, re.M)
    assert found is not None
    return int(float(found[1]))


def test_a_replica_picks_up_a_runtime_job_within_a_second(
    replicas: list[tuple[ServeProcess, httpx.Client]], tmp_path: Path, pg_url: str
) -> None:
    (a, on_a), (_b, on_b) = replicas
    wait_until(lambda: loaded(on_a) == loaded(on_b) == 1, 20, what="the file job loaded")

    job = {
        "id": "report-bob",
        "target": "sampleapp.jobs:tick",
        "kwargs": {"label": "bob"},
        "trigger": {"interval": 1},
    }
    added = on_a.post("/api/jobs", json=job, headers=BEARER)
    assert added.status_code == 201, added.text
    since = time.monotonic()
    wait_until(lambda: loaded(on_b) == 2, 1.0, 0.02, "the other replica to load it")
    assert time.monotonic() - since < 1.0
    assert loaded(on_a) == 2
    calls = Calls(tmp_path / "calls.jsonl")
    wait_until(lambda: calls.named("tick", label="bob"), 10, what="the leader to run it")

    env = base_env(tmp_path / "calls.jsonl")
    listed = runner_cli(["jobs", "--db", pg_url, "--output", "json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    sources = {j["id"]: j["source"] for j in json.loads(listed.stdout)}
    assert sources == {"nightly": f"{tmp_path}/jobs.d/jobs.yaml:2", "report-bob": "api"}
    text = runner_cli(["jobs", "--db", pg_url], env, tmp_path).stdout
    assert "report-bob  api  sampleapp.jobs:tick  next: " in text
    assert f"nightly  {tmp_path}/jobs.d/jobs.yaml:2  sampleapp.jobs:tick" in text
    shown = runner_cli(["show", "report-bob", "--db", pg_url], env, tmp_path)
    assert shown.returncode == 0 and "job report-bob  (api)" in shown.stdout

    # An apply whose files claim the id fails whole, naming the file, the line and the id.
    extra = tmp_path / "extra.d"
    extra.mkdir()
    other = "id: other, target: sampleapp.jobs:tick, trigger: {interval: 1h}"
    clash = "id: report-bob, target: sampleapp.jobs:tick, trigger: {interval: 1h}"
    (extra / "more.yaml").write_text(job_file(other, clash))
    applied = runner_cli(
        ["apply", str(tmp_path / "jobs.d"), str(extra), "--db", pg_url], env, tmp_path
    )
    assert applied.returncode == 1
    assert applied.stderr.strip().splitlines() == [
        f"error: {extra}/more.yaml:3:1: job report-bob: id: a job added at run time (api) "
        "already holds this id; rename this job, or delete that one first "
        "(DELETE /api/jobs/report-bob)"
    ]
    after = runner_cli(["jobs", "--db", pg_url, "--output", "json"], env, tmp_path)
    assert [j["id"] for j in json.loads(after.stdout)] == ["nightly", "report-bob"]

    assert on_b.delete("/api/jobs/report-bob", headers=BEARER).status_code == 204
    since = time.monotonic()
    wait_until(lambda: loaded(on_a) == 1, 1.0, 0.02, "the other replica to drop it")
    assert time.monotonic() - since < 1.0
    assert a.proc is not None and a.proc.poll() is None
