"""Listings of a stored command job (`command: [argv]`, no `target`): `runner jobs`, `runner show`
and the API's job model name the argv where a target job names its target, and never fail on
the missing target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, update

from runner import report
from runner.cli import main
from runner.http.api import JobDetail, JobOut
from runner.store import tables

ARGV = ["/usr/bin/pg_dump", "--format=custom", "my db"]
SHOWN = "/usr/bin/pg_dump --format=custom 'my db'"
JOBS = """\
jobs:
  - {id: backup, target: sampleapp.jobs:tick, trigger: {cron: "0 3 * * *"}}
  - {id: tick, target: sampleapp.jobs:tick, trigger: {interval: 1h}}
"""


def row(**fields: Any) -> dict[str, Any]:
    """A `runner jobs --output json` row of a command job."""
    base: dict[str, Any] = {
        "id": "backup",
        "target": None,
        "command": ARGV,
        "trigger": {"cron": "0 3 * * *", "timezone": "UTC"},
        "next_run_time": "2026-12-03T03:00:00+00:00",
        "paused": False,
        "last_status": "succeeded",
        "last_run_at": "2026-12-02T03:00:04+00:00",
        "source": "jobs.d/backup.yaml:3",
        "queued": 0,
        "running": 1,
    }
    return {**base, **fields}


def detail(**fields: Any) -> dict[str, Any]:
    """A `runner show --output json` object of a command job, with no runs."""
    spec = {"id": "backup", "command": ARGV, "trigger": {"cron": "0 3 * * *"}}
    extra = {
        "spec": spec,
        "override": None,
        "applied_at": "2026-12-01T10:00:00+00:00",
        "applied_by": "ci@build",
        "next": ["2026-12-03T03:00:00+00:00"],
        "runs": [],
        "last_failure": None,
        "description": None,
        "labels": {},
    }
    return {**row(), **extra, **fields}


def test_a_command_job_line_shows_its_argv_quoted() -> None:
    line = report.job_line(row())
    assert line == (
        f"backup  jobs.d/backup.yaml:3  {SHOWN}  next: 2026-12-03T03:00:00+00:00  "
        "last: succeeded at 2026-12-02T03:00:04+00:00  running: 1"
    )
    target = report.job_line(row(target="myapp.jobs:backup", command=None))
    assert "  myapp.jobs:backup  " in target and "pg_dump" not in target


def test_show_names_the_command_instead_of_a_target() -> None:
    lines = report.show(detail())
    assert f"  command:  {SHOWN}" in lines
    assert not any(line.lstrip().startswith("target:") for line in lines)
    plain = report.show(detail(target="myapp.jobs:backup", command=None))
    assert "  target:   myapp.jobs:backup" in plain
    assert not any(line.lstrip().startswith("command:") for line in plain)


def test_the_api_models_accept_both_kinds_of_job() -> None:
    assert JobOut.model_validate(row()).model_dump(mode="json")["command"] == ARGV
    assert JobOut.model_validate(row()).target is None
    plain = JobOut.model_validate({**row(target="myapp.jobs:backup"), "command": None})
    assert (plain.target, plain.command) == ("myapp.jobs:backup", None)
    shown = JobDetail.model_validate(detail()).model_dump(mode="json")
    assert shown["command"] == ARGV and shown["spec"]["command"] == ARGV


@pytest.fixture
def stored_command_job(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store where `backup` is held as a command job is stored: `command`, no `target`."""
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)
    result = CliRunner().invoke(main, ["apply", str(jobs), "--db", sqlite_url])
    assert result.exit_code == 0, result.stderr
    spec = {"id": "backup", "command": ARGV, "trigger": {"cron": "0 3 * * *"}}
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        own = tables.runner_jobs
        conn.execute(update(own).where(own.c.id == "backup").values(spec=json.dumps(spec)))
    engine.dispose()
    return sqlite_url


def test_a_stored_command_job_is_listed_and_shown(stored_command_job: str) -> None:
    db = ["--db", stored_command_job]
    listed = CliRunner().invoke(main, ["jobs", *db, "--output", "json"])
    assert listed.exit_code == 0, listed.stderr
    by_id = {j["id"]: j for j in json.loads(listed.stdout)}
    assert (by_id["backup"]["target"], by_id["backup"]["command"]) == (None, ARGV)
    assert (by_id["tick"]["target"], by_id["tick"]["command"]) == ("sampleapp.jobs:tick", None)
    assert all(JobOut.model_validate(j) for j in by_id.values())

    text = CliRunner().invoke(main, ["jobs", *db])
    assert text.exit_code == 0, text.stderr
    backup = next(line for line in text.stdout.splitlines() if line.startswith("backup "))
    assert f"  {SHOWN}  next: " in backup

    shown = CliRunner().invoke(main, ["show", "backup", *db])
    assert shown.exit_code == 0, shown.stderr
    assert f"  command:  {SHOWN}" in shown.stdout.splitlines()
