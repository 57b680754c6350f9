"""Real `runner serve` across clock changes, under libfaketime: every fire exactly once.

Six nights (fall-back and spring-forward in Europe/Berlin, America/New_York and
Australia/Lord_Howe, whose clock moves by 30 minutes), each served by its own process on
SQLite, all at once. Each server starts 45 seconds before the change and runs until 20 seconds
after it; its history must hold exactly the fires cronsim lists for that span, all
succeeded, no `missed` row for a fire that never existed; SIGTERM must stop it within its
grace, and it must have idled meanwhile.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import timetravel
import yaml
from acceptance.serve_helpers import ServeProcess, base_env, wait_until
from simulation.expected import cron_fires, transitions
from sqlalchemy import create_engine, text

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
EXPRESSIONS = {
    "every-5s": "*/5 * * * * *",
    "every-minute": "* * * * *",
    "hourly": "@hourly",
    "half-hourly": "*/30 * * * *",
    "two-hourly": "0 */2 * * *",
    "at-0230": "30 2 * * *",
    "at-0200": "0 2 * * *",
    "at-0300": "0 3 * * *",
}
LEAD = timedelta(seconds=45)
"""Time for six servers to start on a busy machine before their clocks change."""
AFTER = timedelta(seconds=20)
GRACE = 3.0


@dataclass
class Night:
    zone: str
    change: datetime
    db: Path
    serve: ServeProcess

    @property
    def cutoff(self) -> datetime:
        return self.change + AFTER


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid(night: Night) -> int:
    assert night.serve.proc is not None
    return night.serve.proc.pid


def _rows(db: Path, query: str) -> list[dict[str, Any]]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _finished_at_or_after(night: Night, moment: datetime) -> bool:
    try:
        rows = _rows(
            night.db,
            "SELECT scheduled_at FROM runner_runs WHERE job_id = 'every-5s'"
            " AND status = 'succeeded'",
        )
    except Exception:  # the file or the table does not exist yet
        return False
    return any(_utc(r["scheduled_at"]) >= moment for r in rows)


def _wait_all(nights: list[Night], moment: Callable[[Night], datetime], what: str) -> None:
    for night in nights:
        wait_until(
            lambda night=night: _finished_at_or_after(night, moment(night)),  # type: ignore[misc]
            timeout=150,
            interval=0.2,
            what=f"{night.zone}: {what} (change at {night.change})",
        )


@pytest.mark.slow
@pytest.mark.timeout(600)  # its own waits allow minutes on a busy machine
def test_serve_fires_every_cron_time_exactly_once_across_six_clock_changes(
    tmp_path: Path,
) -> None:
    nights: list[Night] = []
    try:
        for zone in ZONES:
            for change in transitions(zone, 2027):
                folder = tmp_path / f"{zone.replace('/', '-')}-{change:%m%d}"
                folder.mkdir()
                jobs = [
                    {"id": job_id, "target": "sampleapp.jobs:tick", "trigger": {"cron": expr}}
                    for job_id, expr in EXPRESSIONS.items()
                ]
                (folder / "jobs.yaml").write_text(
                    yaml.safe_dump({"defaults": {"timezone": zone}, "jobs": jobs}),
                    encoding="utf-8",
                )
                env = timetravel.starting_at(change - LEAD, base_env(folder / "calls.jsonl"))
                db = folder / "runner.db"
                serve = ServeProcess(
                    [str(folder / "jobs.yaml")],
                    f"sqlite:///{db}",
                    env,
                    folder,
                    ["--no-watch", "--grace", str(GRACE)],
                )
                nights.append(Night(zone, change, db, serve.start()))
        assert len(nights) == 6, [(n.zone, n.change) for n in nights]

        _wait_all(nights, lambda night: night.change, "a run after the change")
        started = time.monotonic()
        cpu = {id(n): _cpu_seconds(_pid(n)) for n in nights}
        _wait_all(nights, lambda night: night.cutoff, "the run 20 s after the change")
        elapsed = time.monotonic() - started
        for night in nights:
            used = _cpu_seconds(_pid(night)) - cpu[id(night)]
            # Idle between fires: a pass that spins takes all the CPU it can get.
            assert used < 0.2 * elapsed + 1, (night.zone, used, elapsed)
            night.serve.send(signal.SIGTERM)
        for night in nights:
            assert night.serve.wait_exit(GRACE + 10) == 0, night.serve.log()
    finally:
        for night in nights:
            night.serve.kill()

    for night in nights:
        applied = _utc(_rows(night.db, "SELECT min(applied_at) AS a FROM runner_jobs")[0]["a"])
        assert applied < night.change, f"{night.zone}: started after its clock change"
        runs = _rows(
            night.db, "SELECT job_id, scheduled_at, status FROM runner_runs ORDER BY scheduled_at"
        )
        assert not [r for r in runs if r["status"] == "missed"], (night.zone, runs)
        for job_id, expression in EXPRESSIONS.items():
            want = cron_fires(expression, night.zone, applied, night.cutoff)
            got = [
                _utc(r["scheduled_at"])
                for r in runs
                if r["job_id"] == job_id and _utc(r["scheduled_at"]) <= night.cutoff
            ]
            assert got == want, (night.zone, night.change, expression, got, want)
            statuses = {
                r["status"]
                for r in runs
                if r["job_id"] == job_id and _utc(r["scheduled_at"]) <= night.cutoff
            }
            assert statuses <= {"succeeded"}, (night.zone, expression, statuses)
        assert any(r["job_id"] == "every-5s" for r in runs)
        # The span really crossed the change: the minute job ran at its first instant.
        assert night.change in [
            _utc(r["scheduled_at"]) for r in runs if r["job_id"] == "every-minute"
        ]
