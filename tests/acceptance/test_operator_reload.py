"""The hot-reload rule, seen from outside: a real `runner serve --http` on real files.

A broken file keeps its last valid jobs; other files' changes apply; nothing is deleted while
any file is broken; every broken file shows in the log, /readyz, /metrics, the page and
`runner status`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_helpers import ServeProcess, base_env, job_file, runner_cli, wait_until

pytestmark = pytest.mark.slow


def tick(job_id: str, every: int = 30) -> str:
    return f"id: {job_id}, target: 'sampleapp.jobs:tick', trigger: {{interval: {every}}}"


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs = root / "jobs.d"
        self.jobs.mkdir()
        self.db = f"sqlite:///{root}/runner.db"
        self.env = base_env(root / "calls.jsonl")
        self.serve = ServeProcess(
            [str(self.jobs)], self.db, self.env, root, ["--http", "127.0.0.1:0"]
        )
        self.http: httpx.Client | None = None

    def start(self) -> None:
        self.serve.start()
        self.serve.wait_ready()
        line = self.serve.wait_for_log(r"HTTP on http://\S+")
        url = re.search(r"http://\S+", line.text)
        assert url is not None
        self.http = httpx.Client(base_url=url.group(0), timeout=10)

    def get(self, path: str) -> httpx.Response:
        assert self.http is not None
        return self.http.get(path)

    def write(self, name: str, text: str) -> Path:
        path = self.jobs / name
        path.write_text(text, encoding="utf-8")
        return path

    def cli(self, *args: str) -> Any:
        done = runner_cli([*args, "--db", self.db, "--output", "json"], self.env, self.root)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def stored(self) -> set[str]:
        return {job["id"] for job in self.cli("jobs")}

    def metric(self, name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", self.get("/metrics").text, re.M)
        assert found is not None, name
        return float(found.group(1))

    def broken(self) -> list[str]:
        return list(self.get("/readyz").json()["broken_files"])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path)
    try:
        yield made
    finally:
        made.serve.kill()
        if made.http is not None:
            made.http.close()


def test_a_broken_file_blocks_only_itself_and_every_broken_file_is_visible(node: Node) -> None:
    a = node.write("a.yaml", job_file(tick("keep"), tick("moving")))
    node.start()
    assert node.stored() == {"keep", "moving"}
    errors = node.metric("runner_reconcile_errors_total")

    # A new file that is invalid: it applies nothing, and says so everywhere.
    b = node.write("b.yaml", job_file(tick("moving"), tick("bad").replace(":tick", ":nope")))
    wait_until(lambda: node.broken() == [str(b)], 10, what="b.yaml in /readyz")
    ready = node.get("/readyz")
    assert ready.status_code == 200  # the last good jobs keep running: not fatal
    assert any(e.startswith(f"{b}:") for e in ready.json()["reconcile_errors"])
    assert node.metric("runner_job_files_invalid") == 1
    assert node.metric("runner_reconcile_errors_total") == errors + 1
    node.serve.wait_for_log(r"1 broken job file\(s\) \(.*b\.yaml\)")

    # A valid edit elsewhere goes ahead, but the job it drops may have moved into the broken
    # file: it is not deleted yet.
    node.write("a.yaml", job_file(tick("keep", 60), tick("new")))
    wait_until(lambda: "new" in node.stored(), 10, what="the valid edit to apply")
    assert node.stored() == {"keep", "moving", "new"}
    keep = next(j for j in node.cli("jobs") if j["id"] == "keep")
    assert keep["trigger"]["interval"] == 60

    # An invalid edit of a file that was valid is counted, and both files are listed.
    errors = node.metric("runner_reconcile_errors_total")
    a.write_text(job_file(tick("keep", 60), tick("new"), "id: x, retires: 2"), encoding="utf-8")
    wait_until(lambda: node.broken() == [str(a), str(b)], 10, what="both files in /readyz")
    assert node.metric("runner_reconcile_errors_total") == errors + 1
    assert node.metric("runner_job_files_invalid") == 2
    page = node.get("/").text
    assert "2 broken job file(s)" in page and "retires" in page and "nope" in page
    status = node.cli("status")
    problems = status["nodes"][0]["file_problems"]
    assert {p.split(":")[0] for p in problems} == {str(a), str(b)}
    text = runner_cli(["status", "--db", node.db], node.env, node.root).stdout
    assert f"broken: {a}:" in text and f"broken: {b}:" in text

    # Fixed: everything applies, the held deletion included, and the reports clear.
    a.write_text(job_file(tick("keep", 60), tick("new")), encoding="utf-8")
    b.write_text(job_file(tick("moving")), encoding="utf-8")
    wait_until(lambda: node.broken() == [], 10, what="/readyz to clear")
    assert node.get("/readyz").json()["reconcile_errors"] == []
    assert node.stored() == {"keep", "moving", "new"}
    b.unlink()
    wait_until(lambda: node.stored() == {"keep", "new"}, 10, what="the deletion")
    assert node.metric("runner_job_files_invalid") == 0
    assert node.cli("status")["nodes"][0]["file_problems"] == []
    assert "broken job file" not in node.get("/").text
    assert node.serve.stop() == 0
