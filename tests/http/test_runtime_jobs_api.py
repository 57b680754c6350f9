"""Jobs added at run time through `POST /api/jobs`, on SQLite and PostgreSQL.

A real Server on a real database behind real uvicorn; every request goes over a socket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from runner import reconcile
from runner.http.server import start_in_thread
from runner.jobfiles import load
from runner.plan import Desired, IdTaken
from runner.serve import Server
from runner.store import tables

TOKEN = "test-token-5f1c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
Wait = Callable[..., Any]


def weekly(job_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "target": "sampleapp.jobs:tick",
        "kwargs": {"label": job_id},
        "trigger": {"cron": "0 8 * * mon", "timezone": "Europe/Berlin"},
        **extra,
    }


@pytest.fixture
def served(
    make_server: Callable[..., Server], jobs_dir: Path, db_url: str, token: str
) -> Iterator[tuple[Server, httpx.Client]]:
    server = make_server(jobs_dir, db_url)
    http = start_in_thread(server, "127.0.0.1:0")
    try:
        with httpx.Client(base_url=http.url, timeout=10) as client:
            yield server, client
    finally:
        http.stop()


def stored_ids(server: Server) -> set[str]:
    own, aps = tables.runner_jobs, tables.apscheduler_jobs
    with server.engine.connect() as conn:
        owned = set(conn.execute(select(own.c.id)).scalars())
        scheduled = set(conn.execute(select(aps.c.id)).scalars())
    assert owned == scheduled
    return owned


def calls_of(path: Path, label: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [c for c in lines if c.get("label") == label]


def test_add_list_run_pause_delete(
    served: tuple[Server, httpx.Client], calls: Path, wait: Wait, finished_run: Any
) -> None:
    server, client = served
    assert client.post("/api/jobs", json=weekly("report-alice")).status_code == 401
    assert "report-alice" not in stored_ids(server)

    added = client.post("/api/jobs", json=weekly("report-alice"), headers=BEARER)
    assert added.status_code == 201, added.text
    assert added.json()["source"] == "api"
    assert added.json()["next_run_time"] is not None
    assert server.scheduler.store.lookup_job("report-alice") is not None  # scheduled here now

    listed = {j["id"]: j for j in client.get("/api/jobs").json()}
    assert set(listed) == {"boom", "slow", "tick", "report-alice"}
    assert listed["report-alice"]["source"] == "api"
    assert listed["tick"]["source"].endswith("jobs.yaml:2")
    assert client.get("/api/jobs/report-alice").json()["next"]  # fire times from its cron
    page = client.get("/").text
    assert 'class="source">from api</small>' in page
    assert re.search(r'class="source">from [^<]*jobs\.yaml:2</small>', page)

    started = client.post("/api/jobs/report-alice/run", headers=BEARER)
    assert started.status_code == 202, started.text
    finished_run(client, "report-alice")
    assert len(calls_of(calls, "report-alice")) == 1

    paused = client.post("/api/jobs/report-alice/pause", headers=BEARER)
    assert paused.json() == {"id": "report-alice", "paused": True, "changed": True}
    wait(lambda: server.scheduler.store.paused("report-alice"), 5, "the pause to load")
    assert client.get("/api/jobs/report-alice").json()["paused"] is True

    assert client.delete("/api/jobs/report-alice").status_code == 401
    gone = client.delete("/api/jobs/report-alice", headers=BEARER)
    assert gone.status_code == 204
    assert client.get("/api/jobs/report-alice").status_code == 404
    assert server.scheduler.store.lookup_job("report-alice") is None
    assert stored_ids(server) == {"boom", "slow", "tick"}
    assert client.get("/api/runs", params={"job": "report-alice"}).json()  # history is kept
    assert client.delete("/api/jobs/report-alice", headers=BEARER).status_code == 404


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            weekly("bad-target", target="os:system"),
            "job bad-target: target: module 'os' is not allowed",
        ),
        (
            weekly("bad-cron", trigger={"cron": "0 25 * * *"}),
            "job bad-cron: trigger.cron: hour: 25 is out of range 0-23",
        ),
        (weekly("bad-key", retires=3), "job bad-key: retires: unknown key 'retires'"),
        (weekly("bad-args", kwargs={"nope": 1}), "job bad-args: target: arguments do not match"),
    ],
)
def test_an_invalid_job_is_refused_with_the_field_named(
    served: tuple[Server, httpx.Client], job: dict[str, Any], expected: str
) -> None:
    server, client = served
    before = stored_ids(server)
    refused = client.post("/api/jobs", json=job, headers=BEARER)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail.startswith(expected), detail
    assert "\n" not in detail
    assert stored_ids(server) == before == {"boom", "slow", "tick"}


def test_a_file_job_is_neither_replaced_nor_deleted(served: tuple[Server, httpx.Client]) -> None:
    server, client = served
    taken = client.post("/api/jobs", json=weekly("tick"), headers=BEARER)
    assert taken.status_code == 409
    assert "job tick: id: already defined in the job file" in taken.json()["detail"]
    assert "jobs.yaml:2" in taken.json()["detail"]
    refused = client.delete("/api/jobs/tick", headers=BEARER)
    assert refused.status_code == 409
    assert "comes from the job file" in refused.json()["detail"]
    tick = client.get("/api/jobs/tick").json()
    assert tick["target"] == "sampleapp.jobs:tick" and tick["source"].endswith("jobs.yaml:2")

    assert client.post("/api/jobs", json=weekly("twice"), headers=BEARER).status_code == 201
    again = client.post("/api/jobs", json=weekly("twice", kwargs={}), headers=BEARER)
    assert again.status_code == 409
    assert client.get("/api/jobs/twice").json()["spec"]["kwargs"] == {"label": "twice"}
    assert stored_ids(server) == {"boom", "slow", "tick", "twice"}


def test_apply_leaves_runtime_jobs_alone_and_refuses_their_ids(
    served: tuple[Server, httpx.Client], jobs_dir: Path, tmp_path: Path
) -> None:
    server, client = served
    assert client.post("/api/jobs", json=weekly("keep-me"), headers=BEARER).status_code == 201
    client.post("/api/jobs/keep-me/pause", headers=BEARER)

    # Files without that id: the plan lists it apart, and neither deletes nor changes it.
    (jobs_dir / "jobs.yaml").write_text(
        "jobs:\n  - id: tick\n    target: sampleapp.jobs:tick\n    trigger: {interval: 2h}\n"
    )
    plan, applied = reconcile.apply(
        server.engine, [Desired.of(s) for s in load([str(jobs_dir)]).jobs]
    )
    assert applied
    assert plan.delete == ["boom", "slow"] and plan.runtime == ["keep-me"]
    assert "keep-me" not in plan.unchanged + plan.create
    assert "= 1 job(s) added at run time (api), left as they are" in plan.text_lines()
    kept = client.get("/api/jobs/keep-me").json()
    assert kept["paused"] is True and kept["source"] == "api"

    # Files that add that id: the whole apply fails, naming file, line and id; nothing written.
    extra = jobs_dir / "more.yaml"
    extra.write_text(
        "jobs:\n"
        "  - id: fresh\n    target: sampleapp.jobs:tick\n    trigger: {interval: 1h}\n"
        "  - id: keep-me\n    target: sampleapp.jobs:boom\n    trigger: {interval: 1h}\n"
    )
    desired = [Desired.of(s) for s in load([str(jobs_dir)]).jobs]
    with pytest.raises(IdTaken) as refused:
        reconcile.apply(server.engine, desired)
    message = str(refused.value)
    assert message.startswith(f"{extra}:5:1: job keep-me: id: a job added at run time (api)")
    with pytest.raises(IdTaken):
        reconcile.apply(server.engine, desired, dry_run=True)
    assert stored_ids(server) == {"tick", "keep-me"}
    assert client.get("/api/jobs/keep-me").json()["target"] == "sampleapp.jobs:tick"

    # The same through serve's own reload: refused, reported, the runtime job untouched.
    server.reconcile()
    assert server.last_reconcile_error == message
    assert stored_ids(server) == {"tick", "keep-me"}
