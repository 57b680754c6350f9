"""`serve --executor procrastinate` replicas and `runner worker` processes on one PostgreSQL.

Real subprocesses, real PostgreSQL, real procrastinate; nothing mocked. The replicas decide
every fire and run none; the workers run them, each attempt recorded once with the worker's
node name.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_helpers import Calls, History, ServeProcess, base_env, job_file, runner_cli, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKER = ":worker"


@dataclass
class WorkerProcess:
    db_url: str
    env: dict[str, str]
    cwd: Path
    args: list[str]
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    def start(self) -> WorkerProcess:
        self.log_path = self.cwd / f"worker-{id(self)}.log"
        with self.log_path.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runner", "worker", "--db", self.db_url, *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        return self

    @property
    def name_part(self) -> str:
        assert self.proc is not None
        return f":{self.proc.pid}{WORKER}"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Cluster:
    root: Path
    db_url: str
    env: dict[str, str]
    calls: Calls
    history: History
    jobs: Path
    serves: list[ServeProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    def serve(self, count: int) -> list[ServeProcess]:
        started = []
        for _ in range(count):
            proc = ServeProcess(
                [str(self.jobs)], self.db_url, self.env, self.root, ["--executor", "procrastinate"]
            )
            self.serves.append(proc)
            started.append(proc.start())
        for proc in started:
            proc.wait_for_log(r"serving \d+ job\(s\)", 30)
        return started

    def worker(self, *args: str, **env: str) -> WorkerProcess:
        proc = WorkerProcess(self.db_url, {**self.env, **env}, self.root, list(args)).start()
        self.workers.append(proc)
        wait_until(lambda: self._beating(proc), 30, 0.2, "the worker's heartbeat")
        return proc

    def _beating(self, proc: WorkerProcess) -> bool:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"runner worker exited:\n{proc.log()}")
        try:
            nodes = self.status()["nodes"]
        except AssertionError:  # the tables are not there yet
            return False
        return any(n["node"].endswith(proc.name_part) and n["role"] == "worker" for n in nodes)

    def status(self) -> dict[str, Any]:
        done = runner_cli(["status", "--db", self.db_url, "--output", "json"], self.env, self.root)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def leader(self) -> ServeProcess:
        def probe() -> ServeProcess | None:
            lead = self.status()["leader"]
            if lead is None:
                return None
            pid = int(lead["node"].split(":")[-2])
            return next(
                (p for p in self.serves if p.proc and p.proc.pid == pid and p.proc.poll() is None),
                None,
            )

        return wait_until(probe, 20, 0.1, "a leader")

    def settle(self) -> None:
        """Stop the replicas first (no new fires), let the workers finish every queued
        attempt, then stop the workers."""
        for proc in self.serves:
            if proc.proc is not None and proc.proc.poll() is None:
                assert proc.stop(20) == 0, proc.log()
        wait_until(
            lambda: not [r for r in self.history.runs() if r["status"] in ("queued", "running")],
            30,
            0.2,
            "no attempt queued or running",
        )
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                assert worker.stop() == 0, worker.log()


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    calls = tmp_path / "calls.jsonl"
    c = Cluster(tmp_path, pg_url, base_env(calls), Calls(calls), History(pg_url), jobs)
    try:
        yield c
    finally:
        for proc in c.serves:
            proc.kill()
        for worker in c.workers:
            worker.kill()
        c.history.close()


def ticks(count: int) -> list[str]:
    return [
        f"id: t{i}, target: 'sampleapp.jobs:tick', kwargs: {{label: t{i}}}, "
        "trigger: {interval: 1}"
        for i in range(count)
    ]


def test_replicas_hand_every_fire_to_workers_once(cluster: Cluster) -> None:
    workers = [cluster.worker("--concurrency", "3") for _ in range(3)]
    soon = (datetime.now(UTC) + timedelta(seconds=12)).isoformat()
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            *ticks(4),
            "id: long, target: 'sampleapp.jobs:slow', kwargs: {seconds: 10, label: long}, "
            f"trigger: {{interval: 1h, start: '{soon}'}}, retries: {{max_attempts: 2, delay: 1}}",
        )
    )
    cluster.serve(2)
    first = cluster.leader()

    def succeeded() -> list[dict[str, Any]]:
        return cluster.history.with_status("succeeded")

    # The leader dies, and so does the worker in the middle of the long attempt; the standby
    # takes over, goes on handing fires over, and retries the attempt on another worker.
    running = wait_until(
        lambda: cluster.history.with_status("running", "long"), 40, 0.1, "the long attempt"
    )[0]
    assert len(succeeded()) >= 8, "the ticks run beside it"
    victim = next(w for w in workers if running["node"].endswith(w.name_part))
    assert first.proc is not None and victim.proc is not None
    first.proc.kill()
    victim.proc.kill()
    first.proc.wait(10)
    victim.proc.wait(10)
    before = len(succeeded())
    second = cluster.leader()
    assert second is not first
    wait_until(lambda: len(succeeded()) >= before + 12, 40, 0.2, "runs after the failover")
    wait_until(lambda: cluster.history.with_status("succeeded", "long"), 40, 0.2, "the long retry")
    cluster.settle()
    long_runs = cluster.history.runs("long")
    assert [(r["attempt"], r["status"]) for r in long_runs] == [
        (1, "interrupted"),
        (2, "succeeded"),
    ]
    assert not long_runs[1]["node"].endswith(victim.name_part)

    rows = cluster.history.runs()
    keys = [(r["job_id"], r["scheduled_at"], r["attempt"]) for r in rows]
    assert len(keys) == len(set(keys))
    calls = collections.Counter(c["label"] for c in cluster.calls.named("tick"))
    calls["long"] = len(cluster.calls.named("slow_end"))
    done = collections.Counter(r["job_id"] for r in rows if r["status"] == "succeeded")
    assert calls == done, "each succeeded attempt is exactly one call of its target"
    assert sum(done.values()) >= before + 12
    # Run by the workers only, and spread over them; none on a replica.
    nodes = collections.Counter(r["node"] for r in rows if r["status"] == "succeeded")
    assert all(node.endswith(WORKER) for node in nodes), nodes
    serve_pids = {p.proc.pid for p in cluster.serves if p.proc}
    assert not {c["ppid"] for c in cluster.calls.all()} & serve_pids
    assert not {c["pid"] for c in cluster.calls.all()} & serve_pids
    busy = [w for w in workers if any(n.endswith(w.name_part) for n in nodes)]
    assert len(busy) >= 2, nodes
    assert not [r for r in rows if r["status"] in ("queued", "running")]


def test_sigkill_of_a_worker_mid_run_is_interrupted_and_retried(cluster: Cluster) -> None:
    # The first fire at `start`, soon after serve applies the file, not a whole interval later.
    soon = (datetime.now(UTC) + timedelta(seconds=8)).isoformat()
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            "id: long, target: 'sampleapp.jobs:slow', kwargs: {seconds: 8, label: long}, "
            f"trigger: {{interval: 30, start: '{soon}'}}, retries: {{max_attempts: 2, delay: 1}}"
        )
    )
    workers = [cluster.worker("--concurrency", "1") for _ in range(2)]
    cluster.serve(1)
    running = wait_until(
        lambda: cluster.history.with_status("running", "long"), 60, 0.1, "the attempt running"
    )[0]
    one = next(w for w in workers if running["node"].endswith(w.name_part))
    two = next(w for w in workers if w is not one)
    assert one.proc is not None
    one.proc.kill()
    one.proc.wait(10)

    def closed() -> dict[str, Any] | None:
        rows = [r for r in cluster.history.runs("long") if r["attempt"] == 1]
        return rows[0] if rows and rows[0]["status"] == "interrupted" else None

    row = wait_until(closed, 10, 0.1, "the killed attempt closed interrupted within 10 s")
    assert "stopped or died" in row["error"]  # closed by the leader, whichever sweep
    retry = wait_until(
        lambda: [
            r
            for r in cluster.history.runs("long")
            if r["attempt"] == 2 and r["status"] == "succeeded"
        ],
        30,
        0.2,
        "attempt 2 succeeded on the other worker",
    )[0]
    assert retry["scheduled_at"] == running["scheduled_at"]
    assert retry["node"].endswith(two.name_part)
    cluster.settle()


def test_a_hung_sync_target_is_stopped_at_its_timeout_and_frees_its_slot(
    cluster: Cluster,
) -> None:
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            "id: hang, target: 'sampleapp.jobs:slow', kwargs: {seconds: 3600, label: hang}, "
            "trigger: {interval: 2}, timeout: 1",
            *ticks(1),
        )
    )
    cluster.worker("--concurrency", "1")  # one slot: a hang that kept it would stop all
    cluster.serve(1)
    timed_out = wait_until(
        lambda: (
            (rows := cluster.history.with_status("timed_out", "hang")) and len(rows) >= 2 and rows
        ),
        60,
        0.2,
        "two timed-out attempts of the hung target",
    )
    last = max(r["finished_at"] for r in timed_out)
    wait_until(
        lambda: [
            r for r in cluster.history.with_status("succeeded", "t0") if r["started_at"] > last
        ],
        30,
        0.2,
        "a tick run on the same single slot after the timeouts",
    )
    assert all(r["error"] == "timed out after 1s" for r in timed_out)
    cluster.settle()


def test_a_fire_nobody_takes_within_its_grace_is_missed_and_never_starts(
    cluster: Cluster,
) -> None:
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            "id: t0, target: 'sampleapp.jobs:tick', kwargs: {label: t0}, "
            "trigger: {interval: 1}, misfire_grace_time: 1"
        )
    )
    cluster.serve(1)
    missed = wait_until(
        lambda: (rows := cluster.history.with_status("missed", "t0")) and len(rows) >= 3 and rows,
        30,
        0.2,
        "fires missed while no worker runs",
    )
    assert all("misfire grace" in r["error"] for r in missed)
    cluster.worker()
    wait_until(lambda: len(cluster.history.with_status("succeeded", "t0")) >= 2, 30, 0.2, "runs")
    cluster.settle()
    rows = cluster.history.runs("t0")
    ran = [r for r in rows if r["status"] == "succeeded"]
    assert len(cluster.calls.named("tick")) == len(ran)
    assert {r["status"] for r in rows} <= {"missed", "succeeded"}


def test_sigterm_gives_running_attempts_the_grace_then_records_them_interrupted(
    cluster: Cluster,
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=8)).isoformat()
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            "id: with-timeout, target: 'sampleapp.jobs:slow', "
            f"kwargs: {{seconds: 3600, label: a}}, trigger: {{interval: 60, start: '{soon}'}}, "
            "timeout: 1h",
            "id: no-timeout, target: 'sampleapp.jobs:slow', "
            f"kwargs: {{seconds: 3600, label: b}}, trigger: {{interval: 60, start: '{soon}'}}",
        )
    )
    worker = cluster.worker("--concurrency", "2", "--grace", "1")
    cluster.serve(1)
    wait_until(
        lambda: len(cluster.history.with_status("running")) == 2, 90, 0.2, "both attempts running"
    )
    for proc in cluster.serves:
        assert proc.stop() == 0
    assert worker.stop(timeout=20) == 0, worker.log()
    rows = cluster.history.runs()
    assert {(r["job_id"], r["status"], r["error"]) for r in rows} == {
        ("with-timeout", "interrupted", "worker stopped"),
        ("no-timeout", "interrupted", "worker stopped"),
    }
    # A stopped worker leaves `runner status` (it is listed with --all only).
    assert not [n for n in cluster.status()["nodes"] if n["node"].endswith(worker.name_part)]


def test_queue_routes_a_job_to_its_workers(cluster: Cluster) -> None:
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            "id: heavy, target: 'sampleapp.jobs:tick', kwargs: {label: heavy}, "
            "trigger: {interval: 1}, queue: reports",
            *ticks(1),
            "id: env, target: 'sampleapp.jobs:echo_env', kwargs: {value: '${ONLY_ON_WORKER}'}, "
            "trigger: {interval: 1}",
        )
    )
    reports = cluster.worker("--queue", "reports")
    default = cluster.worker(
        "--queue", "default", ONLY_ON_WORKER="from-the-worker", RUNNER_JOB_ENV="ONLY_ON_WORKER"
    )
    cluster.serve(1)
    wait_until(
        lambda: (
            len(cluster.history.with_status("succeeded", "heavy")) >= 3
            and len(cluster.history.with_status("succeeded", "t0")) >= 3
        ),
        40,
        0.2,
        "runs of both queues",
    )
    cluster.settle()
    rows = [r for r in cluster.history.runs() if r["status"] == "succeeded"]
    assert {r["node"] for r in rows if r["job_id"] == "heavy"} == {
        n for n in {r["node"] for r in rows} if n.endswith(reports.name_part)
    }
    assert all(r["node"].endswith(default.name_part) for r in rows if r["job_id"] == "t0")
    # `${VAR}` is resolved where the attempt runs: the replica has no such variable.
    echoed = cluster.calls.named("echo_env")
    assert echoed, [(r["status"], r["error"]) for r in cluster.history.runs("env")]
    assert {c["value"] for c in echoed} == {"from-the-worker"}


def test_permanent_errors_fail_the_fire_at_once_on_workers(cluster: Cluster) -> None:
    """Target not allowed where it runs, an unset variable: no retry can help, so none is
    spent, while a plain failure beside them is retried."""
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            "id: unset, target: 'sampleapp.jobs:tick', kwargs: {label: '${NEVER_SET_ANYWHERE}'}, "
            "trigger: {interval: 2}, retries: {max_attempts: 3, delay: 1}",
            "id: refused, target: 'sampleapp.jobs:tick', trigger: {interval: 2}, "
            "queue: strict, retries: {max_attempts: 3, delay: 1}",
            "id: boom, target: 'sampleapp.jobs:boom', trigger: {interval: 2}, "
            "retries: {max_attempts: 2, delay: 1}",
        )
    )
    cluster.worker("--queue", "default")
    cluster.worker("--queue", "strict", RUNNER_ALLOWED_TARGETS="otherapp")
    cluster.serve(1)

    def first_failure(job_id: str) -> datetime | None:
        rows = cluster.history.with_status("failed", job_id)
        return min((r["finished_at"] for r in rows), default=None)

    def retried_after_both() -> bool:
        unset, refused = first_failure("unset"), first_failure("refused")
        if unset is None or refused is None:
            return False
        # The leader's scan that claimed this retry also read both permanent failures.
        firsts = {
            r["scheduled_at"]: r["finished_at"]
            for r in cluster.history.runs("boom")
            if r["attempt"] == 1 and r["finished_at"] is not None
        }
        return any(
            r["attempt"] == 2 and firsts.get(r["scheduled_at"], unset) > max(unset, refused)
            for r in cluster.history.runs("boom")
        )

    wait_until(retried_after_both, 60, 0.2, "a retry of boom after both permanent failures")
    cluster.settle()
    for job_id, words in (("unset", "NEVER_SET_ANYWHERE"), ("refused", "not allowed")):
        rows = cluster.history.runs(job_id)
        assert rows
        assert {(r["attempt"], r["status"]) for r in rows} == {(1, "failed")}, rows
        for row in rows:
            assert row["error"].startswith("not retried, no retry can fix this: "), row
            assert words in row["error"], row
    assert not cluster.calls.named("tick")


def test_status_and_metrics_show_the_queue_and_the_workers(cluster: Cluster) -> None:
    (cluster.jobs / "jobs.yaml").write_text(
        job_file(
            "id: waits, target: 'sampleapp.jobs:tick', trigger: {interval: 1}, queue: later, "
            "max_instances: 10",
            "id: busy, target: 'sampleapp.jobs:slow', kwargs: {seconds: 3600, label: busy}, "
            "trigger: {interval: 1}, timeout: 2h",  # one runs; the next fires are skipped
        )
    )
    serve = ServeProcess(
        [str(cluster.jobs)],
        cluster.db_url,
        cluster.env,
        cluster.root,
        ["--executor", "procrastinate", "--http", "127.0.0.1:0"],
    )
    cluster.serves.append(serve.start())
    url = re.search(r"http://127\.0\.0\.1:\d+", serve.wait_for_log(r"HTTP on http://", 30).text)
    assert url is not None
    worker = cluster.worker("--queue", "default", "--concurrency", "2")
    wait_until(lambda: cluster.history.with_status("running", "busy"), 40, 0.2, "busy running")
    with httpx.Client(base_url=url[0], timeout=10) as client:

        def scraped() -> str | None:
            text: str = client.get("/metrics").text
            queued = re.search(r'^runner_queue_depth\{queue="later"\} (\S+)$', text, re.M)
            return text if queued and float(queued[1]) >= 2 else None

        text = wait_until(scraped, 40, 0.3, "fires waiting on queue `later` in the metrics")
        name = next(
            n["node"] for n in cluster.status()["nodes"] if n["node"].endswith(worker.name_part)
        )
        assert re.search(
            rf'^runner_worker_attempts_running\{{worker="{re.escape(name)}"\}} 1\.0$', text, re.M
        ), text
    # `runner status` lists the worker with its heartbeat; queued fires show as queued.
    done = runner_cli(["status", "--db", cluster.db_url], cluster.env, cluster.root)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^  worker\s+{re.escape(name)}  heartbeat \S+ ago$", done.stdout, re.M), (
        done.stdout
    )
    runs = runner_cli(["runs", "--db", cluster.db_url, "--job", "waits"], cluster.env, cluster.root)
    assert re.search(r"\bwaits\b.*\bqueued\b", runs.stdout), runs.stdout
    listed = runner_cli(["jobs", "--db", cluster.db_url, "-o", "json"], cluster.env, cluster.root)
    waits = next(j for j in json.loads(listed.stdout) if j["id"] == "waits")
    assert waits["queued"] >= 2 and waits["running"] == 0, waits
    busy = next(j for j in json.loads(listed.stdout) if j["id"] == "busy")
    assert (busy["queued"], busy["running"]) == (0, 1), busy
    text = runner_cli(["jobs", "--db", cluster.db_url], cluster.env, cluster.root).stdout
    assert re.search(r"^waits .* queued: \d+$", text, re.M), text
    assert re.search(r"^busy .* running: 1$", text, re.M), text
