"""A real `runner serve` whose host clock is stepped, as an NTP correction does (libfaketime).

Back by 20 seconds (the simulation tier steps back a whole hour): no fire runs twice, none is
lost; the server waits until its clock reaches the next fire again. Forward by an hour: every
fire jumped over is recorded, those past the misfire grace `missed`, and coalescing folds the
rest into one run.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import timetravel
import yaml
from acceptance.serve_helpers import History, ServeProcess, base_env, wait_until


@pytest.mark.slow
@pytest.mark.timeout(600)  # its own waits allow minutes on a busy machine
def test_clock_steps_back_and_forward_under_a_real_serve(tmp_path: Path) -> None:
    jobs = [{"id": "tick", "target": "sampleapp.jobs:tick", "trigger": {"cron": "*/2 * * * * *"}}]
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump({"jobs": jobs}), encoding="utf-8")
    offset = tmp_path / "offset"
    calls = tmp_path / "calls.jsonl"
    db = tmp_path / "runner.db"
    env = timetravel.offset_file(offset, base_env(calls))
    serve = ServeProcess(
        [str(tmp_path / "jobs.yaml")], f"sqlite:///{db}", env, tmp_path, ["--no-watch"]
    ).start()
    history = History(f"sqlite:///{db}")

    def succeeded() -> list[datetime]:
        return [r["scheduled_at"] for r in history.with_status("succeeded")]

    try:
        serve.wait_ready(60)  # its tables exist from here on
        wait_until(lambda: len(succeeded()) >= 3, 60, 0.1, "three runs")
        timetravel.step(offset, -20)
        before = len(succeeded())
        wait_until(lambda: len(succeeded()) >= before + 5, 120, 0.2, "runs after stepping back")
        ran_before_jump = succeeded()
        timetravel.step(offset, -20 + 3600)
        jumped_from = ran_before_jump[-1]
        wait_until(
            lambda: any(t > jumped_from + timedelta(minutes=59) for t in succeeded()),
            60,
            0.2,
            "a run after the jump forward",
        )
        serve.send(signal.SIGTERM)
        assert serve.wait_exit(20) == 0, serve.log()
    finally:
        serve.kill()

    rows = history.runs()
    history.close()
    times = [r["scheduled_at"] for r in rows]
    assert len(times) == len(set(times)), "a fire was recorded twice"
    executed = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(executed) == len(succeeded()), "a target ran without a run, or twice"
    first, last = times[0], times[-1]
    slots = [
        first + timedelta(seconds=2 * n)
        for n in range(int((last - first).total_seconds()) // 2 + 1)
    ]
    assert times == slots, "a fire between the first and the last is not recorded"
    # Stepping back: every fire ran, on its time (none missed, none doubled).
    back = [r for r in rows if r["scheduled_at"] <= ran_before_jump[-1]]
    assert {r["status"] for r in back} == {"succeeded"}
    # The jump forward: fires past the 10-minute grace missed, the rest coalesced into one.
    jumped = [r for r in rows if r["scheduled_at"] > ran_before_jump[-1]]
    kept = [r for r in jumped if r["status"] == "succeeded"]
    missed = [r for r in jumped if r["status"] == "missed"]
    assert len(jumped) >= 1700
    assert len(kept) >= 1 and len(missed) >= 1700
    assert any("misfire grace" in r["error"] for r in missed)
    assert any("coalesced" in r["error"] for r in missed)
    first_kept = kept[0]["scheduled_at"]
    assert all(r["status"] == "missed" for r in jumped if r["scheduled_at"] < first_kept)
