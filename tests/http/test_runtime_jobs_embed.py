"""Jobs added at run time through the embedding object, `Runner.add_job` / `remove_job`,
on SQLite and PostgreSQL, with a real scheduler running them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from runner import queries, reconcile
from runner.embed import Runner
from runner.errors import StoreError
from runner.execute import Status
from runner.jobfiles import load
from runner.overrides import set_paused
from runner.plan import Desired, IdTaken
from runner.runtimejobs import InvalidJob, NotRuntime
from runner.store import tables

Wait = Callable[..., Any]


@pytest.fixture
def runner(jobs_dir: Path, db_url: str, calls: Path) -> Iterator[Runner]:
    embedded = Runner([jobs_dir], db_url, watch=False, grace=5.0)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def ticks(path: Path, label: str) -> int:
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return sum(1 for c in lines if c.get("label") == label)


def row_count(runner: Runner) -> int:
    with runner.server.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.runner_jobs)).scalar_one())


def test_add_run_pause_remove(runner: Runner, calls: Path, wait: Wait) -> None:
    listed = runner.add_job(
        id="sync-tenant-7",
        target="sampleapp.jobs:tick",
        kwargs={"label": "tenant-7"},
        trigger={"interval": 1},
    )
    assert listed["source"] == "api" and listed["paused"] is False
    jobs = {j["id"]: j["source"] for j in queries.jobs(runner.server.engine)}
    assert jobs["sync-tenant-7"] == "api" and jobs["tick"].endswith("jobs.yaml:2")

    wait(lambda: ticks(calls, "tenant-7") >= 1, 10, "a scheduled run of the runtime job")
    by_hand = queries.run_once(runner.server.engine, "sync-tenant-7")
    assert by_hand.status == Status.SUCCEEDED

    assert set_paused(runner.server.engine, "sync-tenant-7", True)
    store = runner.server.scheduler.store
    wait(lambda: store.paused("sync-tenant-7"), 5, "the pause to load")
    assert queries.jobs(runner.server.engine, "sync-tenant-7")[0]["paused"] is True

    runner.remove_job("sync-tenant-7")
    assert store.lookup_job("sync-tenant-7") is None
    assert queries.jobs(runner.server.engine, "sync-tenant-7") == []
    assert row_count(runner) == 3
    with pytest.raises(NotRuntime, match=r"job tick: comes from the job file .*jobs\.yaml:2"):
        runner.remove_job("tick")
    assert row_count(runner) == 3


def test_invalid_or_taken_jobs_store_nothing(runner: Runner) -> None:
    with pytest.raises(InvalidJob, match=r"^job x: trigger\.cron: minute: 61 is out of range"):
        runner.add_job(
            {"id": "x", "target": "sampleapp.jobs:tick", "trigger": {"cron": "61 * * * *"}}
        )
    with pytest.raises(InvalidJob, match=r"^job y: target: module 'subprocess' is not allowed"):
        runner.add_job(id="y", target="subprocess:run", trigger={"interval": "1h"})
    with pytest.raises(InvalidJob, match=r"^job #1: id: expected a string, got null$"):
        runner.add_job(id=None, target="sampleapp.jobs:tick")
    with pytest.raises(IdTaken, match=r"job boom: id: already defined in the job file"):
        runner.add_job(id="boom", target="sampleapp.jobs:tick", trigger={"interval": "1h"})
    assert row_count(runner) == 3
    assert runner.server.scheduler.store.lookup_job("x") is None


def schema_version(runner: Runner) -> str:
    meta = tables.runner_meta
    with runner.server.engine.connect() as conn:
        query = select(meta.c.value).where(meta.c.key == "schema_version")
        return str(conn.execute(query).scalar_one())


def test_an_older_runner_refuses_the_store_rather_than_prune_runtime_jobs(
    runner: Runner, jobs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = tables.runner_meta
    with runner.server.engine.begin() as conn:  # a database set up by the previous version
        conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="1"))
    runner.add_job(id="kept", target="sampleapp.jobs:tick", trigger={"interval": "1h"})
    assert schema_version(runner) == str(tables.SCHEMA_VERSION) == "2"

    monkeypatch.setattr(tables, "SCHEMA_VERSION", 1)  # what an older runner's apply sees
    desired = [Desired.of(s) for s in load([str(jobs_dir)]).jobs]
    with pytest.raises(StoreError, match="newer than this runner understands"):
        reconcile.apply(runner.server.engine, desired)
    assert [j["id"] for j in queries.jobs(runner.server.engine)] == ["boom", "kept", "slow", "tick"]
