"""The words an operator reads: warnings, hints, summaries, and what serve does with the past.

Real `runner` subprocesses on real files and databases.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from serve_helpers import History, ServeProcess, base_env, job_file, runner_cli, wait_until

TICK = "id: tick, target: 'sampleapp.jobs:tick', trigger: {interval: 1}"
PAST = "id: once, target: 'sampleapp.jobs:tick', trigger: {at: '2020-01-01T00:00:00Z'}"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path / "calls.jsonl")


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return runner_cli(list(args), env, cwd)


def test_a_past_one_off_is_a_warning_in_people_units_not_an_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "a.yaml").write_text(job_file(PAST), encoding="utf-8")
    done = cli(env, tmp_path, "validate", "a.yaml")
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.splitlines()
    assert re.fullmatch(
        r"a\.yaml:2:\d+: job once: trigger\.at: warning: 2020-01-01T00:00:00\+00:00 was "
        r"\d+d ago, beyond its misfire grace \(10m\); this job will never run",
        warning,
    ), warning
    assert "1 job(s) in 1 file(s) are valid." in done.stdout
    body = json.loads(cli(env, tmp_path, "validate", "a.yaml", "--output", "json").stdout)
    assert body["valid"] is True
    assert [w["field"] for w in body["warnings"]] == ["trigger.at"]
    # Within its misfire grace a one-off still runs when applied: no warning.
    (tmp_path / "a.yaml").write_text(
        job_file(PAST + ", misfire_grace_time: 3650d"), encoding="utf-8"
    )
    done = cli(env, tmp_path, "validate", "a.yaml")
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.slow
def test_serve_records_no_missed_run_for_a_time_that_passed_before_apply(
    env: dict[str, str], tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text(job_file(TICK, PAST), encoding="utf-8")
    db = f"sqlite:///{tmp_path}/runner.db"
    serve = ServeProcess([str(jobs)], db, env, tmp_path).start()
    history = History(db)
    try:
        serve.wait_ready()
        # Two ticks: the scheduler has made several passes over every job since the apply.
        wait_until(lambda: len(history.with_status("succeeded", "tick")) >= 2, 15, what="ticks")
        assert history.runs("once") == []
        assert serve.stop() == 0
    finally:
        serve.kill()
        history.close()
    stored = json.loads(cli(env, tmp_path, "jobs", "--db", db, "--output", "json").stdout)
    once = next(j for j in stored if j["id"] == "once")
    assert once["next_run_time"] is None and once["last_status"] is None


def test_a_lower_case_zone_gets_its_spelling_suggested(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(job_file(TICK, defaults="timezone: utc"), encoding="utf-8")
    done = cli(env, tmp_path, "validate", "a.yaml")
    assert done.returncode == 1
    assert "unknown time zone 'utc'; did you mean 'UTC'?" in done.stderr


def test_messages_speak_of_job_files_not_of_the_validation_library(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "a.yaml").write_text(
        job_file(
            "id: 'my job', target: 'sampleapp.jobs:tick', trigger: daily, max_instances: x",
            "id: b, target: 'sampleapp.jobs:tick', trigger: {interval: 1}, args: 5",
        ),
        encoding="utf-8",
    )
    done = cli(env, tmp_path, "validate", "a.yaml")
    assert done.returncode == 1
    for leaked in ("Input should", "String should", "instance of", "dictionary", "pattern '"):
        assert leaked not in done.stderr, done.stderr
    assert "trigger: expected a mapping, got 'daily'" in done.stderr
    assert "'my job' is not a valid id" in done.stderr
    assert "args: expected a list, got 5" in done.stderr
    # A failed validate ends with a summary, like apply.
    last = done.stderr.strip().splitlines()[-1]
    assert last == "error: 4 problem(s) in 1 file(s); nothing is valid until all are fixed"


def test_database_urls_are_shown_as_written(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(job_file(TICK), encoding="utf-8")
    done = cli(env, tmp_path, "apply", "a.yaml", "--db", "postgresql://u:secret@127.0.0.1:1/x")
    assert done.returncode == 1
    assert "postgresql://u:***@127.0.0.1:1/x" in done.stderr
    assert "psycopg2" not in done.stderr and "secret" not in done.stderr


def test_resume_of_a_job_never_paused_says_so(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(job_file(TICK), encoding="utf-8")
    db = f"sqlite:///{tmp_path}/runner.db"
    assert cli(env, tmp_path, "apply", "a.yaml", "--db", db).returncode == 0
    done = cli(env, tmp_path, "resume", "tick", "--db", db)
    assert (done.returncode, done.stdout) == (0, "tick is not paused; nothing to resume\n")
    assert cli(env, tmp_path, "pause", "tick", "--db", db).stdout == "tick paused\n"
    assert cli(env, tmp_path, "pause", "tick", "--db", db).stdout == "tick is already paused\n"


@pytest.mark.slow
def test_serve_output_json_logs_json_lines(env: dict[str, str], tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text(job_file(TICK), encoding="utf-8")
    db = f"sqlite:///{tmp_path}/runner.db"
    serve = ServeProcess([str(jobs)], db, env, tmp_path, ["--output", "json"]).start()
    try:
        line = serve.wait_for_log(r"serving \d+ job", 20)
        record = json.loads(line.text)
        assert record["level"] == "info" and record["logger"] == "runner.serve"
        assert serve.stop() == 0
    finally:
        serve.kill()
