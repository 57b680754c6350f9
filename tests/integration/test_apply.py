"""`runner apply` end to end, on SQLite and PostgreSQL, through the real command line.

Most tests drive the click command in-process (fast); a few run the installed program in a
subprocess to check what a shell or CI sees: exit codes, one-line errors, no traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pgserver
import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect, text

from runner import jobstate, reconcile
from runner import validate as validating
from runner.cli import main
from runner.cron import CrontabTrigger
from runner.plan import Desired
from runner.store.engine import connect

TESTS = Path(__file__).resolve().parents[1]

BASE = """\
defaults:
  timezone: Europe/Berlin
jobs:
  - id: report
    target: sampleapp.jobs:send_report
    kwargs: {recipients: [ops@example.com], subject: daily}
    trigger: {cron: "0 9 * * mon-fri"}
  - id: ticker
    target: sampleapp.jobs:tick
    kwargs: {label: a}
    trigger: {interval: 1h}
  - id: sleeper
    target: sampleapp.jobs:tick
    trigger: {interval: 15m}
    paused: true
  - id: once
    target: sampleapp.jobs:tick
    trigger: {at: "2030-01-01T09:00:00+01:00"}
"""
BASE_IDS = ["once", "report", "sleeper", "ticker"]


pytestmark = pytest.mark.usefixtures("sampleapp_only")


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    return folder


# --- helpers ---------------------------------------------------------------------------------


def write(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def apply(folder: Path, db: str, *extra: str) -> Result:
    return cli("apply", str(folder), "--db", db, *extra)


def apply_json(folder: Path, db: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = apply(folder, db, "--output", "json", *extra)
    return result.exit_code, json.loads(result.stdout)


def proc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["RUNNER_ALLOWED_TARGETS"] = "sampleapp"
    return env


def run_proc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        env=proc_env(),
        timeout=60,
        check=False,
    )


def one_line_error(stderr: str) -> str:
    """The single `error: ...` line a failing command prints, with no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _plain(value: object) -> object:
    return bytes(value) if isinstance(value, memoryview) else value


def dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, byte for byte; on PostgreSQL with each row's xmin."""
    engine = create_engine(url)
    try:
        names = sorted(inspect(engine).get_table_names())
        out: dict[str, list[tuple[object, ...]]] = {}
        with engine.connect() as conn:
            for name in names:
                sql = f'SELECT * FROM "{name}"'
                if engine.dialect.name == "postgresql":
                    sql = f'SELECT xmin::text AS row_xmin, * FROM "{name}"'
                rows = [tuple(_plain(v) for v in row) for row in conn.execute(text(sql))]
                out[name] = sorted(rows, key=repr)
        return out
    finally:
        engine.dispose()


def query(url: str, sql: str, **params: object) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params: object) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def next_runs(url: str) -> dict[str, float | None]:
    rows = query(url, "SELECT id, next_run_time FROM apscheduler_jobs")
    return {row[0]: row[1] for row in rows}


def state_of(url: str, job_id: str) -> dict[str, Any]:
    rows = query(url, "SELECT job_state FROM apscheduler_jobs WHERE id = :i", i=job_id)
    return jobstate.loads(bytes(rows[0][0]))


def owned(url: str) -> dict[str, str]:
    return dict(query(url, "SELECT id, spec_hash FROM runner_jobs"))  # type: ignore[arg-type]


def add_foreign_job(url: str, job_id: str = "legacy") -> None:
    """A job written by plain APScheduler, as an existing deployment would have it."""
    from sampleapp.jobs import tick

    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)}, timezone="UTC"
    )
    scheduler.start(paused=True)
    try:
        scheduler.add_job(tick, "interval", minutes=5, id=job_id, kwargs={"label": "legacy"})
    finally:
        scheduler.shutdown(wait=False)


@contextmanager
def stock_scheduler(url: str) -> Iterator[BackgroundScheduler]:
    """A stock APScheduler 3 scheduler on the same table, started paused so nothing runs."""
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)}, timezone="UTC"
    )
    scheduler.start(paused=True)
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)


# --- create / update / delete / unchanged ------------------------------------------------------


def test_create_then_reapply_writes_nothing(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    result = apply(jobs_dir, db_url)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "+ create once",
        "+ create report",
        "+ create sleeper",
        "+ create ticker",
        "Plan: 4 to create, 0 to update, 0 to delete, 0 unchanged.",
    ]
    assert sorted(owned(db_url)) == BASE_IDS
    assert sorted(next_runs(db_url)) == BASE_IDS

    before = dump(db_url)
    again = apply(jobs_dir, db_url)
    assert again.exit_code == 0, again.stderr
    assert again.stdout.splitlines() == [
        "Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged."
    ]
    code, plan = apply_json(jobs_dir, db_url)
    assert code == 0
    assert plan == {
        "create": [],
        "update": [],
        "delete": [],
        "unchanged": BASE_IDS,
        "runtime": [],
        "applied": False,
    }
    # Byte for byte (and on PostgreSQL, same xmin: no row was even rewritten in place).
    assert dump(db_url) == before


def test_update_shows_old_and_new_in_text_and_json(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    changed = BASE.replace("kwargs: {label: a}", "kwargs: {label: b}").replace(
        "subject: daily}", "subject: weekly report}"
    )
    write(jobs_dir, "a.yaml", changed)

    dry = apply(jobs_dir, db_url, "--dry-run")
    assert dry.exit_code == 2, dry.stderr
    assert dry.stdout.splitlines() == [
        '~ update report (kwargs.subject: daily -> "weekly report")',
        "~ update ticker (kwargs.label: a -> b)",
        "Plan: 0 to create, 2 to update, 0 to delete, 2 unchanged.",
    ]
    code, plan = apply_json(jobs_dir, db_url)
    assert code == 0
    assert plan == {
        "create": [],
        "update": [
            {"id": "report", "changes": {"kwargs.subject": ["daily", "weekly report"]}},
            {"id": "ticker", "changes": {"kwargs.label": ["a", "b"]}},
        ],
        "delete": [],
        "unchanged": ["once", "sleeper"],
        "runtime": [],
        "applied": True,
    }
    assert state_of(db_url, "ticker")["args"][1]["kwargs"] == {"label": "b"}

    # Several fields at once, nested ones flattened, sorted by field name.
    write(
        jobs_dir,
        "a.yaml",
        changed.replace("trigger: {interval: 1h}", "trigger: {interval: 2h}\n    timeout: 5m"),
    )
    code, plan = apply_json(jobs_dir, db_url)
    assert code == 0
    assert plan["update"] == [
        {"id": "ticker", "changes": {"timeout": [None, 300], "trigger.interval": [3600, 7200]}}
    ]


def test_delete_prunes_unless_no_prune(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    write(
        jobs_dir,
        "b.yaml",
        """\
        jobs:
          - id: extra
            target: sampleapp.jobs:tick
            trigger: {interval: 5m}
        """,
    )
    assert apply(jobs_dir, db_url).exit_code == 0
    (jobs_dir / "b.yaml").unlink()

    kept = apply(jobs_dir, db_url, "--no-prune")
    assert kept.exit_code == 0
    assert kept.stdout.splitlines() == ["Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged."]
    assert "extra" in owned(db_url)

    result = apply(jobs_dir, db_url)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "- delete extra",
        "Plan: 0 to create, 0 to update, 1 to delete, 4 unchanged.",
    ]
    assert sorted(owned(db_url)) == BASE_IDS
    assert sorted(next_runs(db_url)) == BASE_IDS


def test_dry_run_writes_nothing_and_exit_codes(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    empty = dump(db_url)
    code, plan = apply_json(jobs_dir, db_url, "--dry-run")
    assert code == 2
    assert plan == {
        "create": BASE_IDS,
        "update": [],
        "delete": [],
        "unchanged": [],
        "runtime": [],
        "applied": False,
    }
    assert dump(db_url) == empty  # not even the schema

    assert apply(jobs_dir, db_url).exit_code == 0
    before = dump(db_url)
    result = apply(jobs_dir, db_url, "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged."
    ]

    write(jobs_dir, "a.yaml", BASE.replace("interval: 15m", "interval: 20m"))
    (jobs_dir / "b.yaml").write_text(
        "jobs:\n  - {id: new, target: sampleapp.jobs:tick, trigger: {interval: 1m}}\n"
    )
    code, plan = apply_json(jobs_dir, db_url, "--dry-run", "--no-prune")
    assert code == 2
    assert plan["create"] == ["new"]
    assert plan["update"] == [{"id": "sleeper", "changes": {"trigger.interval": [900, 1200]}}]
    assert plan["applied"] is False
    assert dump(db_url) == before


def test_dry_run_does_not_create_a_sqlite_file(tmp_path: Path, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    database = tmp_path / "never.db"
    code, plan = apply_json(jobs_dir, f"sqlite:///{database}", "--dry-run")
    assert code == 2
    assert plan["create"] == BASE_IDS
    assert list(tmp_path.iterdir()) == [jobs_dir]


def test_invalid_file_exits_1_and_leaves_store_as_it_was(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    before = dump(db_url)
    # One good change and one bad file: nothing at all may be applied.
    write(jobs_dir, "a.yaml", BASE.replace("label: a", "label: z"))
    write(
        jobs_dir,
        "b.yaml",
        """\
        jobs:
          - id: broken
            target: sampleapp.jobs:tick
            trigger: {interval: 5m}
            coalese: true
        """,
    )
    result = apply(jobs_dir, db_url)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "b.yaml:5:5: job broken: coalese: unknown key 'coalese'; did you mean 'coalesce'?" in (
        result.stderr
    )
    assert "nothing was applied" in result.stderr
    assert dump(db_url) == before

    # Arguments that do not bind are caught per job, even when another job of the same
    # target binds fine.
    write(
        jobs_dir,
        "b.yaml",
        """\
        jobs:
          - {id: good, target: sampleapp.jobs:tick, kwargs: {label: x}, trigger: {interval: 5m}}
          - {id: bad, target: sampleapp.jobs:tick, kwargs: {labl: x}, trigger: {interval: 5m}}
          - {id: bad2, target: sampleapp.jobs:tick, kwargs: {labl: z}, trigger: {interval: 5m}}
        """,
    )
    result = apply(jobs_dir, db_url)
    assert result.exit_code == 1
    errors = result.stderr.splitlines()[:-1]
    assert [line.split(": ")[1] for line in errors] == ["job bad", "job bad2"]
    assert all("unexpected keyword argument 'labl'" in line for line in errors)
    assert dump(db_url) == before

    (jobs_dir / "b.yaml").write_text("# emptied by an editor\n")
    result = apply(jobs_dir, db_url)
    assert result.exit_code == 1
    assert "delete the file to remove its jobs" in result.stderr
    assert dump(db_url) == before


# --- next run times ----------------------------------------------------------------------------


def test_next_run_times_survive_unless_the_trigger_changes(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    start = datetime.now(UTC)
    assert apply(jobs_dir, db_url).exit_code == 0
    first = next_runs(db_url)
    assert first["sleeper"] is None  # paused: stored, never due
    assert first["ticker"] is not None
    assert start + timedelta(hours=1) <= datetime.fromtimestamp(first["ticker"], UTC)
    assert first["once"] == datetime(2030, 1, 1, 8, tzinfo=UTC).timestamp()

    # Re-applying later: an interval job rebuilt now would get a later first fire.
    assert apply(jobs_dir, db_url).exit_code == 0
    assert next_runs(db_url) == first

    # kwargs only: the schedule is untouched, the stored arguments change.
    write(jobs_dir, "a.yaml", BASE.replace("label: a", "label: b"))
    assert apply(jobs_dir, db_url).exit_code == 0
    assert next_runs(db_url) == first
    assert state_of(db_url, "ticker")["args"][1]["kwargs"] == {"label": "b"}

    # A trigger change recomputes this job's next run, and only this job's.
    write(jobs_dir, "a.yaml", BASE.replace("label: a", "label: b").replace("1h}", "2h}"))
    changed_at = datetime.now(UTC)
    assert apply(jobs_dir, db_url).exit_code == 0
    after = next_runs(db_url)
    ticker = after["ticker"]
    assert ticker is not None
    assert changed_at + timedelta(hours=2) <= datetime.fromtimestamp(ticker, UTC)
    assert datetime.fromtimestamp(ticker, UTC) <= datetime.now(UTC) + timedelta(hours=2)
    assert {k: v for k, v in after.items() if k != "ticker"} == {
        k: v for k, v in first.items() if k != "ticker"
    }
    assert state_of(db_url, "ticker")["trigger"].interval == timedelta(hours=2)

    # Un-pausing in the file schedules the job; pausing it again stores NULL.
    write(jobs_dir, "a.yaml", BASE.replace("    paused: true\n", ""))
    assert apply(jobs_dir, db_url).exit_code == 0
    assert next_runs(db_url)["sleeper"] is not None
    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    assert next_runs(db_url)["sleeper"] is None
    assert state_of(db_url, "sleeper")["next_run_time"] is None


# --- other APScheduler users of the table --------------------------------------------------------


def test_foreign_row_survives_and_a_colliding_id_is_refused(db_url: str, jobs_dir: Path) -> None:
    add_foreign_job(db_url)
    foreign = query(db_url, "SELECT * FROM apscheduler_jobs WHERE id = 'legacy'")
    assert len(foreign) == 1

    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    write(jobs_dir, "a.yaml", BASE.replace("  - id: once", "  - id: gone"))
    result = apply(jobs_dir, db_url)  # prunes `once`, must leave `legacy` alone
    assert "- delete once" in result.stdout
    assert "legacy" not in result.stdout
    assert query(db_url, "SELECT * FROM apscheduler_jobs WHERE id = 'legacy'") == foreign
    assert "legacy" not in owned(db_url)

    before = dump(db_url)
    write(
        jobs_dir,
        "b.yaml",
        """\
        jobs:
          - id: fresh
            target: sampleapp.jobs:tick
            trigger: {interval: 5m}
          - id: legacy
            target: sampleapp.jobs:tick
            trigger: {interval: 5m}
        """,
    )
    for extra in ((), ("--dry-run",)):
        result = apply(jobs_dir, db_url, *extra)
        assert result.exit_code == 1, (extra, result.stdout)
        line = one_line_error(result.stderr)
        assert "job legacy" in line
        assert "did not create" in line
        assert dump(db_url) == before


def test_stock_apscheduler_loads_every_job(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    before = dump(db_url)
    stored = next_runs(db_url)

    with stock_scheduler(db_url) as scheduler:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        # Reading deleted nothing (the stock store drops rows it cannot unpickle).
        assert dump(db_url) == before
    assert sorted(jobs) == BASE_IDS
    for job_id, job in jobs.items():
        expected = stored[job_id]
        actual = job.next_run_time.timestamp() if job.next_run_time else None
        assert actual == expected, job_id
        assert job.func_ref == jobstate.ENTRY_POINT
        assert job.args[0] == job_id
        assert job.misfire_grace_time == 600
        assert job.coalesce is True
        assert job.max_instances == 1
    report = jobs["report"].trigger
    assert isinstance(report, CrontabTrigger)
    assert report.expression == "0 9 * * mon-fri"
    assert str(report.timezone) == "Europe/Berlin"
    assert isinstance(jobs["ticker"].trigger, IntervalTrigger)
    assert jobs["ticker"].trigger.interval == timedelta(hours=1)
    assert jobs["sleeper"].next_run_time is None
    once = jobs["once"].trigger
    assert isinstance(once, DateTrigger)
    assert once.run_date == datetime(2030, 1, 1, 8, tzinfo=UTC)
    # Nor did its shutdown write anything, and the runner still sees its jobs unchanged.
    assert dump(db_url) == before
    assert apply(jobs_dir, db_url).stdout.splitlines() == [
        "Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged."
    ]


# --- concurrency -------------------------------------------------------------------------------


def _file_set(folder: Path, variant: str) -> None:
    """Two job sets that overlap in ids but differ in every spec."""
    folder.mkdir(exist_ok=True)
    for number in range(3):
        lines = ["jobs:"]
        for job in range(20):
            job_id = f"shared-{number}-{job}" if job % 2 else f"{variant}-{number}-{job}"
            lines += [
                f"  - id: {job_id}",
                "    target: sampleapp.jobs:tick",
                f"    kwargs: {{label: {variant}}}",
                f"    trigger: {{interval: {job + 1}m}}",
            ]
        (folder / f"{number}.yaml").write_text("\n".join(lines) + "\n")


def _expected(folder: Path) -> dict[str, str]:
    loaded, problems = validating.load_valid([str(folder)])
    assert not problems
    return {s.job.id: Desired.of(s).hash for s in loaded.jobs}


def _assert_consistent(url: str, sets: list[dict[str, str]]) -> None:
    final = owned(url)
    assert final in sets, "the store mixes two applies"
    states = {
        row[0]: jobstate.loads(bytes(row[1]))
        for row in query(url, "SELECT id, job_state FROM apscheduler_jobs")
    }
    assert sorted(states) == sorted(final)
    labels = {state["args"][1]["kwargs"]["label"] for state in states.values()}
    assert labels == {"a" if final == sets[0] else "b"}


def test_concurrent_applies_leave_one_whole_file_set(db_url: str, tmp_path: Path) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    _file_set(folders[0], "a")
    _file_set(folders[1], "b")
    sets = [_expected(f) for f in folders]
    desired = []
    for folder in folders:
        loaded, _ = validating.load_valid([str(folder)])
        desired.append([Desired.of(s) for s in loaded.jobs])

    def worker(wanted: list[Desired], start: threading.Barrier, errors: list[Exception]) -> None:
        engine = connect(db_url)
        try:
            start.wait(timeout=30)
            reconcile.apply(engine, wanted)
        except Exception as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    for _round in range(4):
        barrier = threading.Barrier(2)
        errors: list[Exception] = []
        threads = [threading.Thread(target=worker, args=(d, barrier, errors)) for d in desired]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        _assert_consistent(db_url, sets)


def test_a_new_sqlite_file_busy_in_another_connection_is_waited_for(
    tmp_path: Path, jobs_dir: Path
) -> None:
    """The first connection switches a new file to WAL, which needs the file to itself.

    While another connection holds the write lock, SQLite refuses the switch at once rather
    than waiting (two applies starting on a fresh file hit this); the runner must wait.
    """
    write(jobs_dir, "a.yaml", BASE)
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("CREATE TABLE other (x)")
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO other VALUES (1)")
        # Hold the lock briefly, then let go: the apply has to wait for it, not fail.
        release = threading.Timer(0.2, holder.execute, ["COMMIT"])
        release.start()
        result = apply(jobs_dir, f"sqlite:///{path}")
        release.join(timeout=30)
    finally:
        holder.close()
    assert result.exit_code == 0, result.stderr
    assert sorted(owned(f"sqlite:///{path}")) == BASE_IDS
    mode = query(f"sqlite:///{path}", "PRAGMA journal_mode")
    assert mode[0][0] == "wal"


def test_concurrent_apply_processes(db_url: str, tmp_path: Path) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    _file_set(folders[0], "a")
    _file_set(folders[1], "b")
    sets = [_expected(f) for f in folders]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "runner", "apply", str(folder), "--db", db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=proc_env(),
        )
        for folder in folders
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err == ""
    _assert_consistent(db_url, sets)


# --- errors ------------------------------------------------------------------------------------


def test_unreachable_database_is_one_line(jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    result = run_proc("apply", str(jobs_dir), "--db", "postgresql://postgres@127.0.0.1:1/x")
    assert result.returncode == 1
    line = one_line_error(result.stderr)
    assert "unreachable" in line
    assert result.stdout == ""

    # Invalid files fail before any connection: every problem, then one summary line.
    write(jobs_dir, "a.yaml", BASE.replace("1h}", "nope}"))
    bad = run_proc("apply", str(jobs_dir), "--db", "postgresql://postgres@127.0.0.1:1/x")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == [
        f"{jobs_dir / 'a.yaml'}:11:15: job ticker: trigger.interval: 'nope' is not a duration; "
        "write e.g. 30s, 15m, 1h30m or 2d",
        "error: 1 problem(s) in job files; nothing was applied",
    ]


def test_exit_codes_seen_by_a_shell(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    assert run_proc("apply", str(jobs_dir), "--db", db_url, "--dry-run").returncode == 2
    done = run_proc("apply", str(jobs_dir), "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert run_proc("apply", str(jobs_dir), "--db", db_url, "--dry-run").returncode == 0


@pytest.mark.postgres
def test_password_is_never_printed(pg_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    secret = "s3cr3t-Pa55"
    database = pgserver.database_name(pg_url)
    host = pg_url.split("@", 1)[1].split("/", 1)[0]
    urls = [
        # The test server trusts local connections, so a refused login is an unknown role.
        f"postgresql://nobody_here:{secret}@{host}/{database}",
        f"postgresql://postgres:{secret}@{host}/no_such_database",
        f"postgresql://postgres:{secret}@127.0.0.1:1/x",
    ]
    for url in urls:
        for args in (("apply", str(jobs_dir)), ("apply", str(jobs_dir), "--dry-run")):
            result = cli(*args, "--db", url)
            assert result.exit_code == 1, url
            line = one_line_error(result.stderr)
            assert secret not in result.stderr + result.stdout
            assert "***" in line


def test_newer_schema_version_is_refused(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    execute(db_url, "UPDATE runner_meta SET value = '999' WHERE key = 'schema_version'")
    before = dump(db_url)
    write(jobs_dir, "a.yaml", BASE.replace("label: a", "label: b"))
    for extra in ((), ("--dry-run",)):
        result = apply(jobs_dir, db_url, *extra)
        assert result.exit_code == 1
        line = one_line_error(result.stderr)
        assert "schema is version 999" in line
        assert "upgrade runner" in line
    assert dump(db_url) == before


def test_spec_from_a_newer_runner_is_refused(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    execute(db_url, "UPDATE runner_jobs SET spec_format = 999 WHERE id = 'ticker'")
    before = dump(db_url)
    for extra in ((), ("--dry-run",)):
        result = apply(jobs_dir, db_url, *extra)
        assert result.exit_code == 1
        line = one_line_error(result.stderr)
        assert "job ticker was stored by a newer runner" in line
    assert dump(db_url) == before


# --- operator pause ----------------------------------------------------------------------------


def test_pause_override_outlives_apply_until_resume(db_url: str, jobs_dir: Path) -> None:
    write(jobs_dir, "a.yaml", BASE)
    assert apply(jobs_dir, db_url).exit_code == 0
    paused = cli("pause", "ticker", "--db", db_url)
    assert paused.exit_code == 0, paused.stderr
    assert next_runs(db_url)["ticker"] is None

    dry = apply(jobs_dir, db_url, "--dry-run")
    assert dry.exit_code == 0  # an override is not a pending change
    assert dry.stdout.splitlines() == [
        "! override ticker: paused by an operator (runner resume/pause to change)",
        "Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged.",
    ]
    assert apply(jobs_dir, db_url).exit_code == 0
    assert next_runs(db_url)["ticker"] is None

    # Even a trigger change keeps the operator's pause.
    write(jobs_dir, "a.yaml", BASE.replace("1h}", "2h}"))
    result = apply(jobs_dir, db_url)
    assert result.exit_code == 0
    assert "~ update ticker (trigger.interval: 3600 -> 7200)" in result.stdout
    assert next_runs(db_url)["ticker"] is None
    assert state_of(db_url, "ticker")["trigger"].interval == timedelta(hours=2)

    resumed_at = datetime.now(UTC)
    resumed = cli("resume", "ticker", "--db", db_url)
    assert resumed.exit_code == 0, resumed.stderr
    ticker = next_runs(db_url)["ticker"]
    assert ticker is not None
    assert datetime.fromtimestamp(ticker, UTC) >= resumed_at
    assert apply(jobs_dir, db_url, "--dry-run").stdout.splitlines() == [
        "Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged."
    ]
