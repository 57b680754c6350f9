"""Several `runner serve` replicas on one PostgreSQL: each fire once, fast failover, faults.

Real subprocesses, real PostgreSQL, no mocks. A fire that ran twice would show up as more
target calls than recorded runs, or as two runs of one fire; a lost fire as a gap in the
series of scheduled times. Tests that stop or restart PostgreSQL do it to a server of their
own (`restartable_pg`), never the shared one, so the order of the tests does not matter.
"""

from __future__ import annotations

import collections
import itertools
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pgserver
import psycopg2  # type: ignore[import-untyped, unused-ignore]
import pytest
from serve_helpers import Calls, History, ServeProcess, base_env, job_file, runner_cli, wait_until
from sqlalchemy import text

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@dataclass
class Cluster:
    root: Path
    db_url: str
    env: dict[str, str]
    calls: Calls
    history: History
    jobs: Path
    procs: list[ServeProcess] = field(default_factory=list)

    def start(self, count: int, *extra: str) -> list[ServeProcess]:
        started = []
        for _ in range(count):
            proc = ServeProcess([str(self.jobs)], self.db_url, self.env, self.root, list(extra))
            self.procs.append(proc)
            started.append(proc.start())
        for proc in started:
            proc.wait_for_log(r"serving \d+ job\(s\)", 30)
        return started

    def status(self) -> dict[str, Any]:
        done = runner_cli(["status", "--db", self.db_url, "--output", "json"], self.env, self.root)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def leader(self, timeout: float = 10, other_than: ServeProcess | None = None) -> ServeProcess:
        """The replica that holds the lease, found by the pid inside its node name."""

        def probe() -> ServeProcess | None:
            lead = self.status()["leader"]
            if lead is None:
                return None
            pid = int(lead["node"].split(":")[-2])
            found = next((p for p in self.procs if p.proc and p.proc.pid == pid), None)
            return None if found is other_than else found

        return wait_until(probe, timeout, 0.1, "a leader")


def make_cluster(root: Path, db_url: str) -> Iterator[Cluster]:
    jobs = root / "jobs.d"
    jobs.mkdir()
    calls = root / "calls.jsonl"
    c = Cluster(root, db_url, base_env(calls), Calls(calls), History(db_url), jobs)
    try:
        yield c
    finally:
        for proc in c.procs:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.send(signal.SIGCONT)
            proc.kill()
        c.history.close()


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path, pg_url)


@pytest.fixture
def private_cluster(tmp_path: Path, restartable_pg: pgserver.RestartablePg) -> Iterator[Cluster]:
    """A cluster on a PostgreSQL server the test may stop or restart."""
    yield from make_cluster(tmp_path, restartable_pg.url)


def tick_jobs(count: int, **fields: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in fields.items())
    return job_file(
        *(
            f"id: t{i:02d}, target: 'sampleapp.jobs:tick', kwargs: {{label: t{i:02d}}}, "
            f"trigger: {{interval: 1}}{extra}"
            for i in range(count)
        )
    )


def assert_each_fire_ran_once(
    cluster: Cluster, job_ids: list[str], killed: str | None = None
) -> None:
    """Every fire of every job ran at most once: calls match runs, and no fire repeats.

    `killed` names (by pid) a node that was SIGKILLed: a run of it that the target had
    already completed may have died before its success was written, so it is recorded
    `interrupted` though its call happened; such runs may count as calls, no other.
    """
    rows = cluster.history.runs()
    calls = collections.Counter(c["label"] for c in cluster.calls.named("tick"))
    by_job: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        by_job[row["job_id"]].append(row)
    for job_id in job_ids:
        runs = by_job[job_id]
        fires = [r["scheduled_at"] for r in runs if r["attempt"] == 1]
        assert len(fires) == len(set(fires)), f"{job_id}: a fire was recorded twice"
        succeeded = [r for r in runs if r["status"] == "succeeded"]
        cut_short = [
            r for r in runs if r["status"] == "interrupted" and killed and killed in r["node"]
        ]
        assert len(succeeded) <= calls[job_id] <= len(succeeded) + len(cut_short), (
            f"{job_id}: {calls[job_id]} calls but {len(succeeded)} succeeded runs"
            f" and {len(cut_short)} interrupted by the kill"
        )


def test_three_replicas_run_each_fire_exactly_once(cluster: Cluster) -> None:
    ids = [f"t{i:02d}" for i in range(50)]
    # Every fire must run, however busy the machine: a pass delayed past the next fire does
    # not coalesce it away, and a run slowed past the next fire does not make it skipped.
    (cluster.jobs / "ticks.yaml").write_text(tick_jobs(50, coalesce="false", max_instances="4"))
    cluster.start(3)
    cluster.leader()
    started = time.monotonic()

    def enough() -> bool:
        return time.monotonic() - started >= 30

    wait_until(enough, 40, 0.5, "30 s of firing")
    for proc in cluster.procs:
        assert proc.stop(20) == 0
    assert_each_fire_ran_once(cluster, ids)
    rows = [r for r in cluster.history.runs() if r["attempt"] == 1]
    for job_id in ids:
        fires = sorted(r["scheduled_at"] for r in rows if r["job_id"] == job_id)
        assert len(fires) >= 28, f"{job_id} fired only {len(fires)} times in 30 s"
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
        assert all(abs(g - 1.0) < 0.01 for g in gaps), f"{job_id}: a fire is missing: {gaps}"
    not_run = [
        (r["job_id"], r["scheduled_at"].isoformat(), r["status"], r["error"])
        for r in rows
        if r["status"] != "succeeded"
    ]
    assert not not_run, f"fires that did not run: {not_run}"
    nodes = {r["node"] for r in rows}
    assert len(nodes) == 1, f"one leader ran everything, got {nodes}"


def test_sigkill_of_the_leader_fails_over_fast_and_closes_its_run(cluster: Cluster) -> None:
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
    (cluster.jobs / "jobs.yaml").write_text(
        tick_jobs(5)
        + "  - {id: long, target: 'sampleapp.jobs:slow', kwargs: {seconds: 30, label: long}, "
        f"trigger: {{interval: 1h, start: '{soon.isoformat()}'}}}}\n"
    )
    # Applied before the replicas start, so a slow start makes the long job late, not an
    # hour away.
    applied = runner_cli(
        ["apply", str(cluster.jobs), "--db", cluster.db_url], cluster.env, cluster.root
    )
    assert applied.returncode == 0, applied.stderr
    with cluster.history.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT next_run_time FROM apscheduler_jobs WHERE id = 'long'")
        ).scalar_one()
    assert stored == soon.timestamp(), "apply ended after the long job's start; give it more lead"
    cluster.start(2)
    leader = cluster.leader()
    wait_until(lambda: cluster.calls.named("slow_start"), 30, 0.1, "the long job to start")
    assert leader.proc is not None
    killed_pid = leader.proc.pid
    leader.proc.send_signal(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    leader.kill()
    new = cluster.leader(timeout=15, other_than=leader)
    assert new is not leader

    def new_leader_runs() -> list[dict[str, Any]]:
        return [
            r
            for r in cluster.history.runs()
            if r["started_at"] is not None
            and r["started_at"] > killed_at
            and str(killed_pid) not in r["node"]
        ]

    first = wait_until(new_leader_runs, 15, 0.05, "a run started by the new leader")
    failover = min(r["started_at"] for r in first) - killed_at
    assert failover.total_seconds() <= 5, f"failover took {failover}"

    def closed() -> list[dict[str, Any]]:
        return [
            r
            for r in cluster.history.runs("long")
            if r["status"] == "interrupted" and str(killed_pid) in r["node"]
        ]

    wait_until(closed, 15, 0.1, "the killed leader's run to be closed as interrupted")
    for proc in cluster.procs:
        if proc is not leader:
            assert proc.stop(40) == 0
    assert_each_fire_ran_once(cluster, [f"t{i:02d}" for i in range(5)], killed=str(killed_pid))
    assert not [r for r in cluster.history.runs() if r["status"] == "running"]


def test_sigstop_past_the_lease_hands_over_and_the_old_leader_starts_nothing(
    cluster: Cluster,
) -> None:
    (cluster.jobs / "ticks.yaml").write_text(tick_jobs(5))
    cluster.start(2)
    leader = cluster.leader()
    assert leader.proc is not None
    old_pid = leader.proc.pid
    leader.send(signal.SIGSTOP)
    stopped_at = time.time()
    new = cluster.leader(timeout=60, other_than=leader)  # the lease expiry, on a busy machine
    assert new is not leader
    mark = leader.mark()
    wait_until(lambda: time.time() - stopped_at > 6, 10, 0.2, "the lease to be long expired")
    leader.send(signal.SIGCONT)
    resumed_at = time.time()
    leader.wait_for_log(r"lost leadership|cannot confirm leadership", 30, since=mark)
    wait_until(lambda: time.time() - resumed_at > 3, 5, 0.2, "3 s after SIGCONT")
    late = [c for c in cluster.calls.all() if c["pid"] == old_pid and _ts(c) > resumed_at]
    assert not late, f"the old leader started runs after SIGCONT: {late}"
    for proc in cluster.procs:
        assert proc.stop(20) == 0
    assert_each_fire_ran_once(cluster, [f"t{i:02d}" for i in range(5)])


def _ts(call: dict[str, Any]) -> float:
    return datetime.fromisoformat(call["at"]).timestamp()


def _admin(db_url: str) -> Any:
    url = db_url.replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def test_terminated_backends_recover_leadership_without_duplicates(cluster: Cluster) -> None:
    (cluster.jobs / "ticks.yaml").write_text(tick_jobs(5))
    cluster.start(2)
    cluster.leader()
    admin = _admin(cluster.db_url)
    try:
        for _ in range(3):
            with admin.cursor() as cursor:
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                assert cursor.fetchone()[0] >= 1
            cluster.leader(timeout=15)
            before = len(cluster.history.runs())
            wait_until(lambda b=before: len(cluster.history.runs()) > b + 5, 15, 0.1, "runs")
    finally:
        admin.close()
    for proc in cluster.procs:
        assert proc.stop(20) == 0
    assert_each_fire_ran_once(cluster, [f"t{i:02d}" for i in range(5)])


def test_sqlite_refuses_a_second_node(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "ticks.yaml").write_text(tick_jobs(1))
    env = base_env(tmp_path / "calls.jsonl")
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    first = ServeProcess([str(jobs)], url, env, tmp_path).start()
    try:
        first.wait_ready()
        second = subprocess.run(
            [*_runner(), "serve", str(jobs), "--db", url],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1
        assert "SQLite supports one node only" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.proc is not None and first.proc.poll() is None
    finally:
        first.kill()


def _runner() -> list[str]:
    import sys

    return [sys.executable, "-m", "runner"]


# --- faults of the server itself, on a server of the test's own ------------------------------


def test_postgres_restart_keeps_one_leader_and_no_duplicates(
    private_cluster: Cluster, restartable_pg: pgserver.RestartablePg
) -> None:
    cluster, server = private_cluster, restartable_pg.server
    (cluster.jobs / "ticks.yaml").write_text(tick_jobs(5))
    cluster.start(2)
    cluster.leader()
    wait_until(lambda: len(cluster.history.runs()) >= 10, 30, 0.1, "runs before the restart")
    try:
        server.control("restart")
    finally:
        wait_until(server.answers, 60, 0.2, "PostgreSQL to answer again")
    back = datetime.now(UTC)
    cluster.leader(timeout=30)

    def after() -> bool:
        return len([r for r in cluster.history.runs() if r["scheduled_at"] > back]) >= 10

    wait_until(after, 30, 0.1, "runs after the restart")
    for proc in cluster.procs:
        assert proc.stop(20) == 0
    assert_each_fire_ran_once(cluster, [f"t{i:02d}" for i in range(5)])


def test_postgres_down_at_start_up_is_waited_for(
    private_cluster: Cluster, restartable_pg: pgserver.RestartablePg
) -> None:
    cluster, server = private_cluster, restartable_pg.server
    (cluster.jobs / "ticks.yaml").write_text(tick_jobs(1))
    server.control("stop")
    try:
        proc = ServeProcess([str(cluster.jobs)], cluster.db_url, cluster.env, cluster.root)
        cluster.procs.append(proc.start())
        proc.wait_for_log(r"unreachable.*retrying in", 30)
        proc.wait_for_log(r"unreachable.*retrying in", 30, since=proc.mark())
        assert "Traceback" not in proc.log()
    finally:
        server.control("start")
        wait_until(server.answers, 60, 0.2, "PostgreSQL to answer again")
    proc.wait_ready(30)
    wait_until(lambda: cluster.calls.named("tick"), 30, 0.1, "a run once the database is back")
    assert proc.stop(20) == 0
