"""The status page without a browser: bounded reads, paging, the strict CSP, the job page's
404, the leader as a standby sees it, and the strip's window query on both databases."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from runner.http import pagedata
from runner.http.server import start_in_thread
from runner.serve import Server
from runner.store import tables


def _jobs_yaml(count: int, extra: str = "") -> str:
    lines = ["jobs:"]
    for index in range(count):
        lines += [
            f"  - id: job-{index:04d}",
            "    target: sampleapp.jobs:tick",
            f'    trigger: {{cron: "{index % 60} * * * *"}}',
        ]
    return "\n".join(lines) + "\n" + extra


def _folder(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "jobs.yaml").write_text(text, encoding="utf-8")
    return folder


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    """Statements run for HTTP requests: FastAPI runs a sync route in a worker thread of
    AnyIO, while the scheduler, leadership and readiness ping have threads of their own."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.current_thread().name.startswith("AnyIO worker thread"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _seed(engine: Engine, job_id: str, count: int, node: str = "seed") -> None:
    start = datetime.now(UTC) - timedelta(days=1)
    rows = [
        {
            "job_id": job_id,
            "scheduled_at": start + timedelta(minutes=index),
            "attempt": 1,
            "status": "failed" if index % 5 == 0 else "succeeded",
            "node": node,
        }
        for index in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(tables.runner_runs.insert(), rows)


def test_the_page_reads_as_many_statements_for_150_jobs_as_for_3_and_pages_by_100(
    tmp_path: Path, make_server: Callable[..., Server], sqlite_url: str
) -> None:
    """No query per job: the strips of a page's jobs come in one statement."""
    few = make_server(_folder(tmp_path, "few", _jobs_yaml(3)), sqlite_url)
    many = make_server(_folder(tmp_path, "many", _jobs_yaml(150)), f"sqlite:///{tmp_path}/many.db")
    counts = []
    for server in (few, many):
        for job_id in ("job-0000", "job-0001", "job-0002"):
            _seed(server.engine, job_id, 40)
        http = start_in_thread(server, "127.0.0.1:0")
        try:
            with httpx.Client(base_url=http.url, timeout=10) as client:
                client.get("/")  # warm: the first request reads the dialect's settings
                with counted(server.engine) as statements:
                    first = client.get("/?refresh=0")
                counts.append(len(statements))
                if server is many:
                    assert first.text.count('<tr data-job="') == pagedata.PAGE_SIZE
                    assert "100 of 150 job(s), by id" in first.text
                    link = re.search(r'id="next-page" href="([^"]+)"', first.text)
                    assert link is not None
                    second = client.get(link.group(1).replace("&amp;", "&")).text
                    assert second.count('<tr data-job="') == 50
                    assert '<tr data-job="job-0100">' in second and 'id="next-page"' not in second
        finally:
            http.stop()
    assert counts[0] == counts[1] and counts[0] > 3


def test_the_page_allows_no_inline_code_and_serves_its_own_assets(
    client: httpx.Client,
) -> None:
    response = client.get("/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    html = response.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and " style=" not in html
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html)
    assert len(assets) == 2
    for url in assets:
        served = client.get(url)
        assert served.status_code == 200 and served.text
        assert served.headers["content-type"].split(";")[0] in ("text/css", "text/javascript")
    assert client.get("/ui/static/../page.py").status_code == 404
    assert client.get("/ui/static/other.js").status_code == 404


def test_the_job_page_of_an_unknown_job_is_a_404_that_says_so(client: httpx.Client) -> None:
    missing = client.get("/jobs/nope")
    assert missing.status_code == 404
    assert "No job &#x27;nope&#x27;." in missing.text
    assert client.get("/jobs/tick").status_code == 200


@pytest.mark.postgres
def test_a_standby_names_the_leader(
    make_server: Callable[..., Server], jobs_dir: Path, pg_url: str, wait: Callable[..., Any]
) -> None:
    first = make_server(jobs_dir, pg_url)
    second = make_server(jobs_dir, pg_url)
    leader = wait(
        lambda: next((s for s in (first, second) if s.leadership.leading), None), 20, "a leader"
    )
    standby = second if leader is first else first
    http = start_in_thread(standby, "127.0.0.1:0")
    try:
        text = httpx.get(f"{http.url}/?refresh=0", timeout=10).text
    finally:
        http.stop()
    assert '<span class="pill" id="role">standby</span>' in text
    assert f'leader is <code id="leader">{leader.node}</code>' in text


def test_strips_hold_the_newest_30_oldest_first_on_each_database(
    make_server: Callable[..., Server], jobs_dir: Path, db_url: str
) -> None:
    server = make_server(jobs_dir, db_url)
    _seed(server.engine, "tick", 40)
    _seed(server.engine, "boom", 3)
    strips = pagedata.strips(server.engine, ["tick", "boom", "slow"])
    assert [len(strips[j]) for j in ("tick", "boom", "slow")] == [30, 3, 0]
    ids = [r["run_id"] for r in strips["tick"]]
    assert ids == sorted(ids)
    with server.engine.connect() as conn:
        newest = conn.execute(
            tables.runner_runs.select()
            .where(tables.runner_runs.c.job_id == "tick")
            .order_by(tables.runner_runs.c.run_id.desc())
            .limit(30)
        ).all()
    assert ids == sorted(r.run_id for r in newest)


def test_the_timeline_is_bounded_and_leaves_paused_jobs_out(
    tmp_path: Path, make_server: Callable[..., Server], sqlite_url: str
) -> None:
    text = _jobs_yaml(
        4,
        "  - id: busy\n    target: sampleapp.jobs:tick\n    trigger: {interval: 1m}\n"
        "  - id: resting\n    target: sampleapp.jobs:tick\n    trigger: {interval: 1m}\n"
        "    paused: true\n",
    )
    server = make_server(_folder(tmp_path, "jobs", text), sqlite_url)
    plan = pagedata.timeline(server.engine, max_jobs=3)
    shown = [lane.job_id for lane in plan.lanes]
    assert len(shown) == 3 and "busy" in shown and "resting" not in shown
    assert plan.due >= 5
    busy = next(lane for lane in plan.lanes if lane.job_id == "busy")
    assert busy.more and len(busy.fires) == pagedata.FIRES_PER_JOB
    assert all(plan.start < f <= plan.end for lane in plan.lanes for f in lane.fires)
