"""`runner serve` with jobs that hang or misbehave, next to a job that must stay on time.

A real serve subprocess on a real SQLite database. Twenty sync jobs hang past their timeout
on every fire (more than the old thread pool could absorb), others call sys.exit(), raise a
custom BaseException or CancelledError, kill their own process, or leave a task behind that
calls sys.exit() on the event loop. Meanwhile a ticking job must miss no fire.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import Calls, History, ServeProcess, base_env, job_file, utc, wait_until

pytestmark = pytest.mark.slow

HUNG = [f"hang-{n:02d}" for n in range(20)]
FAILING = ["async_exit", "async_custom", "async_cancelled", "sync_exit", "sync_custom", "sync_dies"]
IN_THREAD = ["sync_exit-in-thread", "sync_custom-in-thread"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[ServeProcess, History, Calls]]:
    jobs = [
        f"id: {name}, target: 'sampleapp.misbehaving:hang', kwargs: {{label: {name}}}, "
        "timeout: 2s, trigger: {interval: 4s}"
        for name in HUNG
    ]
    jobs += [  # sync ones with a timeout, so in a child process (sync_dies must be)
        f"id: {name}, target: 'sampleapp.misbehaving:{name}', trigger: {{interval: 3s}}"
        + (", timeout: 1m" if name.startswith("sync") else "")
        for name in [*FAILING, "async_stray_exit"]
    ]
    jobs += [  # and without one, in a thread of serve
        f"id: {name}-in-thread, target: 'sampleapp.misbehaving:{name}', trigger: {{interval: 3s}}"
        for name in ("sync_exit", "sync_custom")
    ]
    jobs.append("id: tick, target: 'sampleapp.jobs:tick', trigger: {interval: 1s}")
    (tmp_path / "jobs.yaml").write_text(job_file(*jobs))
    url = f"sqlite:///{tmp_path}/runner.db"
    calls = Calls(tmp_path / "calls.jsonl")
    proc = ServeProcess(
        [str(tmp_path / "jobs.yaml")],
        url,
        base_env(tmp_path / "calls.jsonl"),
        tmp_path,
        ["--no-watch", "--grace", "20"],
    )
    history = History(url)
    try:
        proc.start()
        proc.wait_ready(60)
        yield proc, history, calls
    finally:
        proc.kill()
        history.close()


def test_hung_and_misbehaving_jobs_never_hold_up_another(
    serve: tuple[ServeProcess, History, Calls],
) -> None:
    proc, history, calls = serve

    def each_hung_job_timed_out(times: int) -> datetime | None:
        timed_out = history.with_status("timed_out")
        ids = [r["job_id"] for r in timed_out]
        if all(ids.count(job) >= times for job in HUNG):
            return max(_at(r["finished_at"]) for r in timed_out)
        return None

    # The first round is everybody's first call: thirty processes start at once. From then
    # on each hung job is known, and its restarts must not hold up the ticking job.
    known = wait_until(lambda: each_hung_job_timed_out(1), 120, 0.2, "a first round of hangs")
    wait_until(lambda: each_hung_job_timed_out(4), 120, 0.2, "three more rounds of hangs")
    wait_until(
        lambda: all(len(history.with_status("failed", job)) >= 2 for job in [*FAILING, *IN_THREAD]),
        60,
        0.2,
        "two failed runs of every misbehaving job",
    )
    before_stop = {r["run_id"] for r in history.runs()}
    assert proc.stop(60) == 0
    runs = [r for r in history.runs() if r["run_id"] in before_stop]

    # The ticking job kept its time: every fire ran, none was skipped or missed.
    ticks = [
        r
        for r in runs
        if r["job_id"] == "tick" and r["status"] != "running" and _at(r["scheduled_at"]) > known
    ]
    assert len(ticks) >= 8
    late = [(r["scheduled_at"], r["status"]) for r in ticks if r["status"] != "succeeded"]
    assert late == []
    fires = sorted(_at(r["scheduled_at"]) for r in ticks)
    assert all((b - a).total_seconds() == 1.0 for a, b in itertools.pairwise(fires))

    # Hung jobs: every attempt ended at its timeout. A restart is the hung job's own cost
    # (a fresh, lower-priority process), so under load its next fire may find it starting.
    for job in HUNG:
        statuses = {r["status"] for r in runs if r["job_id"] == job}
        assert statuses <= {"timed_out", "skipped", "running"}, (job, statuses)

    # Each misbehaving target: one failed run per fire, and nothing else.
    for job in [*FAILING, *IN_THREAD]:
        mine = [r for r in runs if r["job_id"] == job]
        ran = [r for r in mine if r["started_at"] is not None]  # not a fire skipped under load
        assert {r["status"] for r in ran} <= {"failed", "running"}, (job, ran)
        assert len({r["scheduled_at"] for r in mine}) == len(mine), "a fire recorded twice"
    stray = [r for r in runs if r["job_id"] == "async_stray_exit" and r["started_at"] is not None]
    assert stray and {r["status"] for r in stray} <= {"succeeded", "running"}

    # Nothing is left running after the stop, and no hung process outlives serve.
    assert history.with_status("running") == []
    started = [c["pid"] for c in calls.named("hang_start")]
    pids = set(started)
    assert len(started) >= len(HUNG)
    assert len(pids) == len(started)  # a timed-out process is replaced, never reused
    wait_until(lambda: not any(_alive(pid) for pid in pids), 10, what="hung processes to end")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent is no longer running
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _at(value: Any) -> datetime:
    """SQLite hands timestamps back as text."""
    return utc(datetime.fromisoformat(value) if isinstance(value, str) else value)
