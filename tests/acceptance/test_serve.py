"""`runner serve` as operators run it: a real subprocess on a real database.

Tests marked `on_both` run on SQLite and on PostgreSQL, the others on PostgreSQL. Every wait
polls with a deadline, and no check depends on how fast a busy machine is: what these tests
assert is order and outcome (which fires ran, were missed or skipped, and in what sequence),
never a latency. Jobs fire every second, so each test takes a few seconds. The PostgreSQL
restart test restarts a server of the session's own (`restartable_pg`), never the shared one.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pgserver
import pytest
from serve_helpers import (
    Calls,
    History,
    ServeProcess,
    base_env,
    job_file,
    runner_cli,
    wait_until,
    write_atomic,
)
from sqlalchemy import text

pytestmark = [pytest.mark.slow]
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
on_both = pytest.mark.parametrize("ctx", ["sqlite", POSTGRES], indirect=True)
on_postgres = pytest.mark.parametrize("ctx", [POSTGRES], indirect=True)
DEADLINE = 20.0
"""Seconds any single wait may take before the test fails; generous, as waits end early."""

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
STATUSES = {"running", "succeeded", "failed", "timed_out", "interrupted", "missed", "skipped"}


@dataclass
class Ctx:
    root: Path
    db_url: str
    env: dict[str, str]
    calls: Calls
    history: History
    jobs: Path
    procs: list[ServeProcess] = field(default_factory=list)

    def serve(self, *extra: str, paths: list[str] | None = None) -> ServeProcess:
        proc = ServeProcess(
            paths or [str(self.jobs)], self.db_url, self.env, self.root, list(extra)
        )
        self.procs.append(proc)
        proc.start()
        proc.wait_ready()
        return proc

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return runner_cli([*args, "--db", self.db_url], self.env, self.root, timeout)

    def write(self, name: str, content: str) -> Path:
        path = self.jobs / name
        path.write_text(content, encoding="utf-8")
        return path

    def next_run_time(self, job_id: str) -> datetime | None:
        """The job's next run time as stored (APScheduler's epoch seconds)."""
        with self.history.engine.connect() as conn:
            value = conn.execute(
                text("SELECT next_run_time FROM apscheduler_jobs WHERE id = :id"), {"id": job_id}
            ).scalar_one()
        return None if value is None else datetime.fromtimestamp(value, UTC)

    def stored_ids(self) -> set[str]:
        with self.history.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id FROM runner_jobs").all()
        return {r[0] for r in rows}


def make_ctx(root: Path, db_url: str) -> Iterator[Ctx]:
    jobs = root / "jobs.d"
    jobs.mkdir()
    calls_path = root / "calls.jsonl"
    context = Ctx(
        root=root,
        db_url=db_url,
        env=base_env(calls_path),
        calls=Calls(calls_path),
        history=History(db_url),
        jobs=jobs,
    )
    try:
        yield context
    finally:
        for proc in context.procs:
            proc.kill()
        context.history.close()


@pytest.fixture
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ctx]:
    """A jobs folder, a call log and a fresh database of the backend the test is given."""
    backend = request.param
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    yield from make_ctx(tmp_path, url)


@pytest.fixture
def private_ctx(tmp_path: Path, restartable_pg: pgserver.RestartablePg) -> Iterator[Ctx]:
    """Like `ctx`, on a PostgreSQL server the test may restart."""
    yield from make_ctx(tmp_path, restartable_pg.url)


def at_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def wait_calls(
    ctx: Ctx, name: str, count: int, timeout: float = DEADLINE, **match: Any
) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        found = ctx.calls.named(name, **match)
        return found if len(found) >= count else None

    return wait_until(probe, timeout, 0.02, f"{count} call(s) of {name} {match or ''}")


def wait_runs(
    ctx: Ctx, job: str, status: str, count: int = 1, timeout: float = DEADLINE
) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        rows = ctx.history.with_status(status, job)
        return rows if len(rows) >= count else None

    return wait_until(probe, timeout, what=f"{count} {status} run(s) of {job}")


def assert_every_fire_recorded(
    rows: list[dict[str, Any]], step: float = 1.0, at_least: int = 2
) -> None:
    """First attempts form an unbroken series of at least `at_least` fires `step` seconds
    apart, none twice (fewer rows would make the check pass on nothing)."""
    firsts = sorted(r["scheduled_at"] for r in rows if r["attempt"] == 1)
    assert len(firsts) >= max(at_least, 2), f"only {len(firsts)} fire(s) recorded: {rows}"
    assert len(firsts) == len(set(firsts)), "a fire was recorded twice"
    for before, after in itertools.pairwise(firsts):
        gap = (after - before).total_seconds()
        assert abs(gap - step) < 0.01, f"fires {before} and {after} are {gap}s apart: one is lost"


# --- running and recording ----------------------------------------------------------------


@on_both
def test_interval_jobs_run_and_are_recorded(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: sync-tick, target: 'sampleapp.jobs:tick', kwargs: {label: s},"
            " trigger: {interval: 1}",
            "id: async-tick, target: 'sampleapp.jobs:async_tick', kwargs: {label: a},"
            " trigger: {interval: 1s}",
        ),
    )
    serve = ctx.serve()
    wait_runs(ctx, "sync-tick", "succeeded", 2)
    wait_runs(ctx, "async-tick", "succeeded", 2)
    # The async target really ran (APScheduler 3 would only create its coroutine).
    assert ctx.calls.named("async_tick", label="a")
    assert ctx.calls.named("tick", label="s")

    out = ctx.cli("runs", "--output", "json", "--limit", "100")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and all(set(r) == RUN_KEYS for r in rows)
    assert [r["run_id"] for r in rows] == sorted((r["run_id"] for r in rows), reverse=True)
    done = [r for r in rows if r["status"] == "succeeded"]
    assert len(done) >= 4
    for row in done:
        assert row["status"] in STATUSES and row["attempt"] == 1 and row["error"] is None
        scheduled, started, finished = (
            parse(row[k]) for k in ("scheduled_at", "started_at", "finished_at")
        )
        assert scheduled.utcoffset() is not None
        assert scheduled <= started <= finished
        assert row["node"]
    sync = sorted(parse(r["scheduled_at"]) for r in done if r["job_id"] == "sync-tick")
    assert (sync[1] - sync[0]).total_seconds() == pytest.approx(1.0, abs=0.001)

    one = json.loads(ctx.cli("runs", "--job", "async-tick", "--limit", "1", "-o", "json").stdout)
    assert len(one) == 1 and one[0]["job_id"] == "async-tick"
    jobs = json.loads(ctx.cli("jobs", "-o", "json").stdout)
    assert {j["id"] for j in jobs} == {"sync-tick", "async-tick"}
    assert all(j["last_status"] == "succeeded" and j["next_run_time"] for j in jobs)
    assert serve.stop() == 0
    assert "Traceback" not in serve.log()


def _in_zone(zone: str) -> datetime:
    return datetime.now(ZoneInfo(zone))


@on_both
def test_cron_in_a_zone_with_jitter_and_a_start_end_window(ctx: Ctx) -> None:
    # Kathmandu is UTC+05:45: an hour field read in UTC instead would never match now.
    kathmandu = _in_zone("Asia/Kathmandu")
    hours = f"{kathmandu.hour},{(kathmandu.hour + 1) % 24}"
    # Each job fires every second or two: `max_instances: 4` lets a run slowed by a busy
    # machine overlap the next fire, which `max_instances: 1` would record `skipped`; what
    # is checked here is when the fires are, not the overlap rule (tested on its own).
    # Applied before serve starts, so a slow start makes the window's fires late, not lost.
    # Unless the apply itself ends after the window opened (a very busy machine): then the
    # stored first fire is a later one, and the window is moved further out.
    for lead in (6, 15, 40):
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
        end = start + timedelta(seconds=3)
        ctx.write(
            "a.yaml",
            job_file(
                "id: zoned, target: 'sampleapp.jobs:tick', kwargs: {label: z},"
                f" trigger: {{cron: '* * {hours} * * *', timezone: Asia/Kathmandu}},"
                " coalesce: false, max_instances: 4",
                "id: jittered, target: 'sampleapp.jobs:tick', kwargs: {label: j},"
                " trigger: {cron: '*/2 * * * * *', jitter: 1}, coalesce: false, max_instances: 4",
                "id: windowed, target: 'sampleapp.jobs:tick', kwargs: {label: w},"
                f" trigger: {{cron: '* * * * * *', start: '{at_iso(start)}',"
                f" end: '{at_iso(end)}'}}, coalesce: false, max_instances: 4",
            ),
        )
        applied = ctx.cli("apply", str(ctx.jobs))
        assert applied.returncode == 0, applied.stderr
        if ctx.next_run_time("windowed") == start:
            break
    else:
        raise AssertionError("every apply ended after the window it was given had opened")
    serve = ctx.serve()
    # Until the zoned job has run well past the window's end, so the window has closed.
    wait_until(
        lambda: any(
            r["scheduled_at"] > end + timedelta(seconds=2) for r in ctx.history.runs("zoned")
        ),
        DEADLINE,
        what="a zoned run 2 s after the window's end",
    )
    wait_runs(ctx, "jittered", "succeeded", 3)
    assert serve.stop() == 0

    zoned = ctx.history.runs("zoned")
    assert {r["status"] for r in zoned} == {"succeeded"}
    assert_every_fire_recorded(zoned, at_least=3)
    for row in zoned:
        assert row["scheduled_at"].astimezone(ZoneInfo("Asia/Kathmandu")).hour in {
            kathmandu.hour,
            (kathmandu.hour + 1) % 24,
        }

    # Each fire is delayed by up to 1 s from its even second; without jitter all would be on it.
    jittered = ctx.history.runs("jittered")
    assert len(jittered) >= 3 and {r["status"] for r in jittered} == {"succeeded"}
    slots = [r["scheduled_at"].replace(microsecond=0) for r in jittered]
    assert all(slot.second % 2 == 0 for slot in slots), slots
    assert len(set(slots)) == len(slots), "two fires in one slot"
    assert any(r["scheduled_at"].microsecond for r in jittered), "no fire was jittered"

    # Every second from start to end fired, and nothing outside the window did.
    windowed = ctx.history.runs("windowed")
    assert [r["scheduled_at"] for r in windowed] == [start + timedelta(seconds=n) for n in range(4)]
    assert {r["status"] for r in windowed} == {"succeeded"}


# --- following the files --------------------------------------------------------------------


def _write_just_after_a_fire(ctx: Ctx, name: str, label: str, content: str) -> float:
    """Write `content` right after a run of `label` is seen; return the write time."""
    seen = len(ctx.calls.named("tick", label=label))
    wait_calls(ctx, "tick", seen + 1, label=label)
    written = time.time()
    ctx.write(name, content)
    return written


def _at(call: dict[str, Any]) -> float:
    return parse(call["at"]).timestamp()


def assert_switched(ctx: Ctx, old: str, new: str) -> None:
    """Once a fire used the new version, no fire used the old one again."""
    first_new = min(_at(c) for c in ctx.calls.named("tick", label=new))
    late_old = [c for c in ctx.calls.named("tick", label=old) if _at(c) > first_new]
    assert not late_old, f"{old} ran after {new} had: {late_old}"


@on_both
def test_edited_file_is_in_effect_at_once(ctx: Ctx) -> None:
    def ticking(label: str) -> str:
        return job_file(
            f"id: edit-me, target: 'sampleapp.jobs:tick', kwargs: {{label: {label}}},"
            " trigger: {interval: 1}"
        )

    ctx.write("a.yaml", ticking("v1"))
    ctx.write(
        "b.yaml",
        job_file(
            "id: resched, target: 'sampleapp.jobs:tick', kwargs: {label: r}, "
            "trigger: {interval: 1h}"
        ),
    )
    serve = ctx.serve()

    # New kwargs: applied, and from the first fire with them on, the old ones never run again.
    for old, new in (("v1", "v2"), ("v2", "v3")):
        mark = serve.mark()
        written = _write_just_after_a_fire(ctx, "a.yaml", old, ticking(new))
        serve.wait_for_log(r"apply: ~ update edit-me \(kwargs.label: ", DEADLINE, since=mark)
        first_new = wait_calls(ctx, "tick", 1, label=new)[0]
        assert _at(first_new) > written
        wait_calls(ctx, "tick", 3, label=new)
        assert_switched(ctx, old, new)

    # New schedule: from hourly to every second; it fires each second from the change on.
    written = time.time()
    write_atomic(
        ctx.jobs / "b.yaml",
        job_file(
            "id: resched, target: 'sampleapp.jobs:tick', kwargs: {label: r}, "
            "trigger: {cron: '* * * * * *'}"
        ),
    )
    wait_runs(ctx, "resched", "succeeded", 3)
    rows = ctx.history.runs("resched")
    assert all(r["scheduled_at"].timestamp() > written - 1 for r in rows), rows
    assert_every_fire_recorded(rows, at_least=3)
    assert serve.stop() == 0


@on_postgres
def test_broken_file_keeps_old_jobs_and_reports_where(ctx: Ctx) -> None:
    good = job_file(
        "id: steady, target: 'sampleapp.jobs:tick', kwargs: {label: old}, trigger: {interval: 1}"
    )
    path = ctx.write("a.yaml", good)
    serve = ctx.serve()
    wait_calls(ctx, "tick", 1, label="old")

    mark = serve.mark()
    broken = (
        "jobs:\n"
        "  - id: steady\n"
        "    target: sampleapp.jobs:tick\n"
        "    kwargs: {label: new}\n"
        "    trigger: {interval: 1}\n"
        "    retires: {max_attempts: 2}\n"
    )
    path.write_text(broken, encoding="utf-8")
    line = serve.wait_for_log(r"a\.yaml:6:\d+: job steady: .*retires", since=mark)
    assert str(path) in line.text and "did you mean 'retries'" in line.text
    # The old version keeps running, unchanged.
    count = len(ctx.calls.named("tick", label="old"))
    wait_calls(ctx, "tick", count + 2, label="old")
    assert not ctx.calls.named("tick", label="new")
    assert ctx.stored_ids() == {"steady"}

    # A YAML syntax error is reported with its line too.
    mark = serve.mark()
    path.write_text("jobs:\n  - id: steady\n    target: [unclosed\n", encoding="utf-8")
    serve.wait_for_log(r"a\.yaml:\d+:\d+: .*YAML", since=mark)
    count = len(ctx.calls.named("tick", label="old"))
    wait_calls(ctx, "tick", count + 1, label="old")

    # Fixing the file applies the fix.
    path.write_text(good.replace("label: old", "label: fixed"), encoding="utf-8")
    wait_calls(ctx, "tick", 1, label="fixed")
    assert "- delete" not in serve.log()
    assert serve.stop() == 0


@on_postgres
def test_deleted_file_removes_its_jobs_but_editor_saves_never_do(ctx: Ctx) -> None:
    def tick(job: str, label: str) -> str:
        return job_file(
            f"id: {job}, target: 'sampleapp.jobs:tick', kwargs: {{label: {label}}},"
            " trigger: {interval: 1}"
        )

    a = ctx.write("a.yaml", tick("job-a", "a0"))
    b = ctx.write("b.yaml", tick("job-b", "b0"))
    serve = ctx.serve()
    wait_calls(ctx, "tick", 1, label="b0")

    for n in range(1, 4):
        # Atomic save: write a temporary file, rename it over the job file.
        write_atomic(a, tick("job-a", f"a{n}"))
        # Truncate, then write: the file is empty for a moment.
        with b.open("r+", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.flush()
            os.fsync(handle.fileno())
            time.sleep(0.15)  # an editor that is slow to write: the watcher sees the empty file
            handle.write(tick("job-b", f"b{n}"))
        wait_calls(ctx, "tick", 1, label=f"a{n}")
        wait_calls(ctx, "tick", 1, label=f"b{n}")
    assert ctx.stored_ids() == {"job-a", "job-b"}
    assert "- delete" not in serve.log()
    serve.wait_for_log(r"b\.yaml:1:1: .*delete the file to remove its jobs")

    mark = serve.mark()
    b.unlink()
    deleted = serve.wait_for_log(r"apply: - delete job-b", since=mark, timeout=DEADLINE)
    wait_until(lambda: ctx.stored_ids() == {"job-a"}, DEADLINE, what="job-b gone from the store")
    # job-b does not run any more; job-a does.
    count = len(ctx.calls.named("tick", label="a3"))
    wait_calls(ctx, "tick", count + 2, label="a3")
    late_b = [c for c in ctx.calls.named("tick", label="b3") if _at(c) > deleted.at]
    assert not late_b
    assert serve.stop() == 0


@on_postgres
def test_apply_from_elsewhere_takes_effect_without_restart(ctx: Ctx) -> None:
    def tick(label: str, extra: str = "") -> str:
        jobs = [
            f"id: remote, target: 'sampleapp.jobs:tick', kwargs: {{label: {label}}},"
            " trigger: {interval: 1}"
        ]
        if extra:
            jobs.append(extra)
        return job_file(*jobs)

    path = ctx.write("a.yaml", tick("r1"))
    serve = ctx.serve("--no-watch")
    wait_calls(ctx, "tick", 1, label="r1")

    # Another machine applies an edited copy of the files.
    elsewhere = ctx.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.yaml").write_text(
        tick(
            "r2",
            "id: added, target: 'sampleapp.jobs:tick', kwargs: {label: new},"
            " trigger: {cron: '* * * * * *'}",
        ),
        encoding="utf-8",
    )
    count = len(ctx.calls.named("tick", label="r1"))
    wait_calls(ctx, "tick", count + 1, label="r1")
    mark = serve.mark()
    result = ctx.cli("apply", str(elsewhere))
    assert result.returncode == 0, result.stderr
    assert "~ update remote" in result.stdout and "+ create added" in result.stdout
    serve.wait_for_log(r"store changed: 2 job\(s\) reloaded", DEADLINE, since=mark)
    wait_calls(ctx, "tick", 2, label="r2")
    assert_switched(ctx, "r1", "r2")
    wait_calls(ctx, "tick", 2, label="new")
    assert path.read_text(encoding="utf-8") == tick("r1")  # serve did not touch its files
    assert serve.stop() == 0


# --- downtime, misfires, coalescing -----------------------------------------------------------


@on_both
def test_downtime_obeys_misfire_grace_and_coalesce(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: coalesced, target: 'sampleapp.jobs:tick', kwargs: {label: co},"
            " trigger: {interval: 1}, coalesce: true, misfire_grace_time: 1m",
            "id: each, target: 'sampleapp.jobs:tick', kwargs: {label: each},"
            " trigger: {interval: 1}, coalesce: false, misfire_grace_time: 1m",
            "id: tight, target: 'sampleapp.jobs:tick', kwargs: {label: tight},"
            " trigger: {interval: 1}, coalesce: false, misfire_grace_time: 1",
        ),
    )
    jobs = ("coalesced", "each", "tight")
    serve = ctx.serve()
    for job in jobs:
        wait_runs(ctx, job, "succeeded", 1)
    assert serve.stop() == 0
    stopped = datetime.now(UTC)
    before = {job: len(ctx.history.runs(job)) for job in jobs}
    last_before = {job: max(r["scheduled_at"] for r in ctx.history.runs(job)) for job in jobs}
    # Down long enough that at least four fires of each job are missed.
    wait_until(
        lambda: datetime.now(UTC) - stopped > timedelta(seconds=4.2), DEADLINE, what="downtime"
    )
    # No fire older than this can be within 1 s of any decision the new process makes.
    relaunched = datetime.now(UTC)
    serve = ctx.serve()
    restarted = datetime.now(UTC)
    wait_runs(ctx, "coalesced", "missed", 3)
    wait_runs(ctx, "tight", "missed", 2)
    wait_until(
        lambda: len(ctx.history.with_status("succeeded", "each")) >= before["each"] + 5,
        DEADLINE,
        what="every missed fire of `each` to run",
    )

    # And one more regular fire of each after the catch-up.
    def ran_after(job: str, last: datetime) -> bool:
        return any(
            r["scheduled_at"] > last and r["status"] == "succeeded" for r in ctx.history.runs(job)
        )

    for job in jobs:
        last = ctx.history.runs(job)[-1]["scheduled_at"]
        wait_until(functools.partial(ran_after, job, last), DEADLINE, what=f"a run of {job}")
    assert serve.stop() == 0

    def during_downtime(job: str) -> list[dict[str, Any]]:
        return [
            r for r in ctx.history.runs(job) if last_before[job] < r["scheduled_at"] < restarted
        ]

    # coalesce: the fires missed during downtime ran once, as the first run after the
    # restart; every earlier one is recorded `missed`, folded into it.
    after_stop = [
        r for r in ctx.history.runs("coalesced") if r["scheduled_at"] > last_before["coalesced"]
    ]
    first_run = next(i for i, r in enumerate(after_stop) if r["status"] == "succeeded")
    folded = after_stop[:first_run]
    assert len(folded) >= 3, after_stop
    assert {r["status"] for r in folded} == {"missed"}
    # ... into that very run (the first pass of the new process may come a whole second
    # after `restarted` on a busy machine, so the run it keeps is named, not bounded by time).
    kept = after_stop[first_run]["scheduled_at"]
    into = [datetime.fromisoformat(r["error"].rpartition("scheduled at ")[2]) for r in folded]
    assert into == [kept] * len(folded), folded
    # no coalescing, generous grace: every missed fire ran, late.
    down = during_downtime("each")
    assert len(down) >= 4 and {r["status"] for r in down} == {"succeeded"}
    # grace of 1 s: a fire more than 1 s late when the new process decided it is `missed`.
    # Decisions come after the launch, so every fire more than 1 s older than the launch is
    # missed; any missed fire was recorded more than 1 s after its time; the others ran.
    down = during_downtime("tight")
    assert len(down) >= 4
    too_old = [r for r in down if r["scheduled_at"] < relaunched - timedelta(seconds=1)]
    assert len(too_old) >= 3, down
    assert {r["status"] for r in too_old} == {"missed"}, too_old
    assert {r["status"] for r in down} <= {"missed", "succeeded"}
    for row in down:
        if row["status"] == "missed":
            assert "misfire grace 1s" in row["error"]
            assert (row["finished_at"] - row["scheduled_at"]).total_seconds() > 1.0, row
    for job in jobs:
        assert_every_fire_recorded(ctx.history.runs(job), at_least=before[job] + 5)


@on_both
def test_stop_just_before_a_fire_loses_nothing(ctx: Ctx) -> None:
    # Fires are claimed a moment ahead of their time; a stop in that moment gives the claim
    # back, and the next start decides the fire like any other missed during downtime. The
    # moment is short: on a busy machine the stop may land outside it, so try again (each try
    # is checked all the same) until one stop gave a claim back.
    ctx.write(
        "a.yaml",
        job_file(
            "id: edge, target: 'sampleapp.jobs:tick', kwargs: {label: e}, trigger: {interval: 1}"
        ),
    )
    given_back: list[datetime] = []
    for _ in range(8):
        serve = ctx.serve()
        rows = wait_runs(ctx, "edge", "succeeded", len(ctx.history.runs("edge")) + 2)
        upcoming = max(r["scheduled_at"] for r in rows) + timedelta(seconds=1)
        while upcoming - datetime.now(UTC) < timedelta(seconds=0.3):
            upcoming += timedelta(seconds=1)
        wait_until(
            lambda u=upcoming: u - datetime.now(UTC) < timedelta(seconds=0.18),
            DEADLINE,
            0.005,
            "the moment",
        )
        assert serve.stop() == 0
        left = [r for r in ctx.history.runs("edge") if r["scheduled_at"] >= upcoming]
        assert all(r["status"] != "running" for r in left), left
        if "1 fire(s) claimed ahead of their time will be decided at the next start" in (
            serve.log()
        ):
            given_back.append(upcoming)
            break
    assert given_back, "no stop landed between a claim and its fire in 8 tries"
    serve = ctx.serve()
    wait_until(
        lambda: any(
            r["scheduled_at"] > given_back[0] and r["status"] == "succeeded"
            for r in ctx.history.runs("edge")
        ),
        DEADLINE,
        what="runs after the restart",
    )
    assert serve.stop() == 0
    rows = ctx.history.runs("edge")
    assert_every_fire_recorded(rows, at_least=4)
    assert not [r for r in rows if r["status"] == "running"]
    (fire,) = [r for r in rows if r["scheduled_at"] == given_back[0]]
    assert fire["status"] in ("succeeded", "missed")


# --- stopping ---------------------------------------------------------------------------------


@on_postgres
def test_sigterm_lets_a_running_job_finish_within_grace(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: long, target: 'sampleapp.jobs:async_slow', kwargs: {seconds: 2, label: g},"
            f" trigger: {{at: '{at_iso(datetime.now(UTC))}'}}",
        ),
    )
    serve = ctx.serve()
    wait_calls(ctx, "async_slow_start", 1, label="g")
    serve.send(signal.SIGTERM)
    assert serve.wait_exit(DEADLINE) == 0
    assert ctx.calls.named("async_slow_end", label="g")
    (run,) = ctx.history.runs("long")
    assert run["status"] == "succeeded"
    assert "waiting up to 30s for 1 running" in serve.log()


@on_postgres
def test_sigterm_with_short_grace_records_interrupted(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: long-async, target: 'sampleapp.jobs:async_slow', kwargs: {seconds: 60},"
            f" trigger: {{at: '{at_iso(datetime.now(UTC))}'}}",
            "id: long-sync, target: 'sampleapp.jobs:slow', kwargs: {seconds: 60},"
            f" trigger: {{at: '{at_iso(datetime.now(UTC))}'}}",
        ),
    )
    serve = ctx.serve("--grace", "0.5")
    wait_calls(ctx, "async_slow_start", 1)
    wait_calls(ctx, "slow_start", 1)
    serve.send(signal.SIGTERM)
    # Past the grace period the sync job's process is killed, the async one cancelled.
    assert serve.wait_exit(DEADLINE) == 0
    for job in ("long-async", "long-sync"):
        (run,) = ctx.history.runs(job)
        assert run["status"] == "interrupted", run
        assert run["finished_at"] is not None
    assert not ctx.calls.named("async_slow_end")
    assert not ctx.calls.named("slow_end")


# --- attempts ---------------------------------------------------------------------------------


@on_both
def test_retries_are_attempts_with_backoff_waits(ctx: Ctx) -> None:
    now = datetime.now(UTC)
    ctx.write(
        "a.yaml",
        job_file(
            "id: flaky, target: 'sampleapp.jobs:flaky', kwargs: {fail_times: 2},"
            f" trigger: {{at: '{at_iso(now)}'}},"
            " retries: {max_attempts: 4, delay: 1, backoff: 2}",
        ),
    )
    ctx.serve()
    wait_runs(ctx, "flaky", "succeeded", 1, timeout=30)
    rows = ctx.history.runs("flaky")
    assert [(r["attempt"], r["status"]) for r in rows] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert len({r["scheduled_at"] for r in rows}) == 1
    assert "RuntimeError: flaky failure 1" in rows[0]["error"]
    assert "Traceback" in rows[0]["traceback"]
    # The wait before attempt n+1 is delay * backoff**(n-1): at least 1 s, then at least 2 s
    # (a busy machine only makes them longer; the exact waits are unit-tested).
    for row, expected in zip(rows[1:], (1.0, 2.0), strict=True):
        previous = rows[row["attempt"] - 2]
        waited = (row["started_at"] - previous["finished_at"]).total_seconds()
        assert waited >= expected - 0.01, (row, waited)
    assert len(ctx.calls.named("flaky")) == 3


@on_postgres
def test_timeout_is_recorded_and_cancels_async_target(ctx: Ctx) -> None:
    now = at_iso(datetime.now(UTC))
    ctx.write(
        "a.yaml",
        job_file(
            "id: too-slow, target: 'sampleapp.jobs:async_slow', kwargs: {seconds: 30},"
            f" trigger: {{at: '{now}'}}, timeout: 1",
            "id: too-slow-sync, target: 'sampleapp.jobs:slow', kwargs: {seconds: 5},"
            f" trigger: {{at: '{now}'}}, timeout: 1",
        ),
    )
    serve = ctx.serve()
    (run,) = wait_runs(ctx, "too-slow", "timed_out")
    assert (run["finished_at"] - run["started_at"]).total_seconds() >= 1.0
    assert "timed out after 1s" in run["error"]
    (sync_run,) = wait_runs(ctx, "too-slow-sync", "timed_out")
    assert "timed out after 1s" in sync_run["error"]
    # The coroutine was cancelled and the sync target's process killed: neither reached its
    # end. (The sync run's duration also holds the start of its process, so it is not
    # compared with the timeout here.)
    (sync_start,) = wait_calls(ctx, "slow_start", 1)
    wait_until(lambda: not _running(sync_start["pid"]), 10, what="the sync target's process to end")
    assert not ctx.calls.named("slow_end")
    assert not ctx.calls.named("async_slow_end")
    assert serve.stop() == 0


@on_postgres
def test_raising_job_leaves_the_scheduler_healthy(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: boom, target: 'sampleapp.jobs:boom', trigger: {interval: 1}",
            "id: fine, target: 'sampleapp.jobs:async_tick', kwargs: {label: fine},"
            " trigger: {interval: 1}",
        ),
    )
    serve = ctx.serve()
    failed = wait_runs(ctx, "boom", "failed", 3)
    wait_runs(ctx, "fine", "succeeded", 3)
    assert failed[0]["error"] == "ValueError: boom"
    assert "raise ValueError" in failed[0]["traceback"]
    assert_every_fire_recorded(ctx.history.runs("boom"), at_least=3)
    assert_every_fire_recorded(ctx.history.runs("fine"), at_least=3)
    assert serve.proc is not None and serve.proc.poll() is None
    assert serve.stop() == 0


@on_both
def test_overlapping_fire_is_recorded_skipped(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: overlap, target: 'sampleapp.jobs:slow', kwargs: {seconds: 2.5},"
            " trigger: {interval: 1}, max_instances: 1",
        ),
    )
    serve = ctx.serve()
    skipped = wait_runs(ctx, "overlap", "skipped", 2)
    assert "max_instances" in skipped[0]["error"]
    wait_runs(ctx, "overlap", "succeeded", 1)
    starts = ctx.calls.named("slow_start")
    ends = ctx.calls.named("slow_end")
    assert starts and ends
    # Never two at once: each start comes after the previous run's end.
    for nxt, end in zip(starts[1:], ends, strict=False):
        assert parse(nxt["at"]) >= parse(end["at"])
    assert serve.stop() == 0
    assert_every_fire_recorded(ctx.history.runs("overlap"), at_least=3)


@on_both
def test_run_command_exits_by_outcome_and_records(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: ok, target: 'sampleapp.jobs:tick', kwargs: {label: manual},"
            " trigger: {interval: 1h}",
            "id: bad, target: 'sampleapp.jobs:boom', trigger: {interval: 1h},"
            " retries: {max_attempts: 2, delay: 1}",
        ),
    )
    assert ctx.cli("apply", str(ctx.jobs)).returncode == 0
    ok = ctx.cli("run", "ok")
    assert ok.returncode == 0, ok.stderr
    assert ctx.calls.named("tick", label="manual")
    (row,) = ctx.history.runs("ok")
    assert row["status"] == "succeeded" and row["started_at"] and row["finished_at"]
    bad = ctx.cli("run", "bad", "-o", "json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["status"] == "failed"
    rows = ctx.history.runs("bad")
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "failed")]
    missing = ctx.cli("run", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "nope" in missing.stderr


@on_both
def test_store_errors_do_not_stop_the_scheduler(ctx: Ctx) -> None:
    ctx.write(
        "a.yaml",
        job_file(
            "id: steady, target: 'sampleapp.jobs:tick', kwargs: {label: s}, trigger: {interval: 1}"
        ),
    )
    serve = ctx.serve()
    wait_runs(ctx, "steady", "succeeded", 2)
    mark = serve.mark()
    with ctx.history.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE runner_runs RENAME TO runner_runs_away")
    try:
        serve.wait_for_log(r"scheduling pass failed", since=mark, timeout=DEADLINE)
        wait_until(
            lambda: len(serve.matching("scheduling pass failed", mark)) >= 2,
            DEADLINE,
            what="a second failed pass",
        )
    finally:
        with ctx.history.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE runner_runs_away RENAME TO runner_runs")
    recovered = datetime.now(UTC)
    wait_until(
        lambda: any(
            r["scheduled_at"] > recovered and r["status"] == "succeeded"
            for r in ctx.history.runs("steady")
        ),
        DEADLINE,
        what="runs after the store came back",
    )
    assert serve.proc is not None and serve.proc.poll() is None
    assert serve.stop() == 0
    # The fires due while the store was away were coalesced into one late run, and recorded.
    rows = ctx.history.runs("steady")
    assert_every_fire_recorded(rows, at_least=4)
    assert any(r["status"] == "missed" and "coalesced" in r["error"] for r in rows)


def test_postgres_restart_is_survived_without_losing_history(
    private_ctx: Ctx, restartable_pg: pgserver.RestartablePg
) -> None:
    ctx = private_ctx
    ctx.write(
        "a.yaml",
        job_file(
            "id: through, target: 'sampleapp.jobs:tick', kwargs: {label: t}, trigger: {interval: 1}"
        ),
    )
    serve = ctx.serve()
    wait_runs(ctx, "through", "succeeded", 2)
    server = restartable_pg.server
    try:
        server.control("restart")
    finally:
        wait_until(server.answers, 60, interval=0.2, what="PostgreSQL to answer again")
    back = datetime.now(UTC)
    wait_until(
        lambda: (
            len(
                [
                    r
                    for r in ctx.history.runs("through")
                    if r["scheduled_at"] > back and r["status"] == "succeeded"
                ]
            )
            >= 2
        ),
        30,
        what="runs after the restart",
    )
    assert serve.proc is not None and serve.proc.poll() is None
    assert serve.stop() == 0
    rows = ctx.history.runs("through")
    assert_every_fire_recorded(rows, at_least=4)
    assert not [r for r in rows if r["status"] == "running"]
    assert {r["status"] for r in rows} <= {"succeeded", "missed"}


@on_postgres
def test_serve_on_a_mistyped_or_empty_folder_deletes_nothing(ctx: Ctx) -> None:
    ctx.write("a.yaml", job_file("id: kept, target: 'sampleapp.jobs:tick', trigger: {interval: 1}"))
    assert ctx.cli("apply", str(ctx.jobs)).returncode == 0
    empty = ctx.root / "empty.d"
    empty.mkdir()
    for paths in ([str(ctx.root / "jobs.dd")], [str(empty)]):
        done = ctx.cli("serve", *paths)
        assert done.returncode == 1, done.stderr
        assert re.search(r"(no such file|no job files).*\n.*not serving", done.stderr)
        assert ctx.stored_ids() == {"kept"}


def _running(pid: int) -> bool:
    """A zombie waiting to be reaped has ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
