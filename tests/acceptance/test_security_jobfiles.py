"""An attacker who can only write job files: the real CLI in subprocesses, on real files.

Each test plays one hole of the audit and asserts what a secure runner must do: built-in
tasks write nowhere but the operator's folder, the working directory never replaces a
module, the runner's own settings are never handed to a job, and no input can crash or
stall the reader or forge a line in what people read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from runner.store import tables

TESTS = Path(__file__).resolve().parents[1]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNNER_") or k in ("RUNNER_TEST_PG",)
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    env["RUNNER_ALLOWED_TARGETS"] = "sampleapp"
    env["SAMPLEAPP_CALLS"] = str(tmp_path / "calls.jsonl")
    env.update(extra)
    return env


def runner(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def jobs_file(folder: Path, body: str, name: str = "jobs.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def apply_and_run(
    tmp_path: Path, env: dict[str, str], body: str, job_id: str
) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    jobs_file(work, body)
    db = f"sqlite:///{tmp_path / 'runner.db'}"
    applied = runner(work, env, "apply", "jobs.yaml", "--db", db)
    assert applied.returncode == 0, applied.stderr
    return runner(work, env, "run", job_id, "--db", db)


def history(tmp_path: Path) -> list[dict[str, object]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'runner.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM runner_runs ORDER BY run_id"))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


# --- 1. built-in tasks are no way around the allowlist ---------------------------------------


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_heartbeat_never_writes_outside_the_task_folder(tmp_path: Path, where: str) -> None:
    allowed = tmp_path / "tasks"
    allowed.mkdir()
    victim = tmp_path / "victim.pth"
    path = {
        "absolute": str(victim),
        "dotdot": "../victim.pth",
        "symlink": "link.pth",
    }[where]
    (allowed / "link.pth").symlink_to(victim)
    env = env_for(tmp_path, RUNNER_TASK_DIR=str(allowed))
    body = f"""
        jobs:
          - id: beat
            target: runner.tasks:heartbeat
            kwargs: {{message: "import os", path: {json.dumps(path)}}}
            trigger: {{interval: 1h}}
        """
    result = apply_and_run(tmp_path, env, body, "beat")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refused" in result.stdout
    assert not victim.exists(), "a built-in task wrote outside RUNNER_TASK_DIR"


def test_heartbeat_without_a_task_folder_writes_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "authorized_keys"
    body = f"""
        jobs:
          - id: beat
            target: runner.tasks:heartbeat
            kwargs: {{message: "ssh-ed25519 AAAA attacker", path: "{victim}"}}
            trigger: {{interval: 1h}}
        """
    result = apply_and_run(tmp_path, env_for(tmp_path), body, "beat")
    assert result.returncode == 1
    assert "RUNNER_TASK_DIR" in result.stdout
    assert not victim.exists()


def test_heartbeat_lines_cannot_be_shaped_by_the_author(tmp_path: Path) -> None:
    allowed = tmp_path / "tasks"
    allowed.mkdir()
    env = env_for(tmp_path, RUNNER_TASK_DIR=str(allowed))
    body = """
        jobs:
          - id: beat
            target: runner.tasks:heartbeat
            kwargs: {message: "ok\\nimport os; os.system('id')", path: beat.log}
            trigger: {interval: 1h}
          - id: good
            target: runner.tasks:heartbeat
            kwargs: {message: "still here", path: beat.log}
            trigger: {interval: 1h}
        """
    result = apply_and_run(tmp_path, env, body, "beat")
    assert result.returncode == 1
    assert "one line" in result.stdout
    assert not (allowed / "beat.log").exists()
    good = runner(tmp_path / "work", env, "run", "good", "--db", f"sqlite:///{tmp_path}/runner.db")
    assert good.returncode == 0, good.stdout + good.stderr
    lines = (allowed / "beat.log").read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" still here")
    assert (allowed / "beat.log").stat().st_mode & 0o077 == 0


def test_prune_history_takes_no_database_url_from_the_yaml(tmp_path: Path) -> None:
    jobs_file(
        tmp_path,
        """
        jobs:
          - id: wipe
            target: runner.tasks:prune_history
            kwargs: {older_than: 30d, database_url: "postgresql://victim/prod"}
            trigger: {interval: 1h}
        """,
    )
    result = runner(tmp_path, env_for(tmp_path), "validate", "jobs.yaml")
    assert result.returncode == 1
    assert "job wipe: target: arguments do not match" in result.stderr
    assert "database_url" in result.stderr


def _old_run(db_file: Path, job_id: str, days: int) -> None:
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.begin() as conn:
            conn.execute(
                tables.runner_runs.insert().values(
                    job_id=job_id,
                    scheduled_at=datetime.now(UTC) - timedelta(days=days),
                    attempt=1,
                    status="succeeded",
                    node="elsewhere",
                )
            )
    finally:
        engine.dispose()


PRUNE = """
    jobs:
      - id: prune
        target: runner.tasks:prune_history
        kwargs: {older_than: %s}
        trigger: {interval: 1h}
    """


def test_prune_history_prunes_the_database_the_runner_uses(tmp_path: Path) -> None:
    """Issue 13, defect 9: `--db` is the database pruned; no ./runner.db appears."""
    work = tmp_path / "work"
    work.mkdir()
    jobs_file(work, PRUNE % "30d")
    db_file = tmp_path / "chosen.db"
    env = env_for(tmp_path)
    assert runner(work, env, "apply", "jobs.yaml", "--db", f"sqlite:///{db_file}").returncode == 0
    _old_run(db_file, "someone", days=60)
    _old_run(db_file, "someone", days=1)
    result = runner(work, env, "run", "prune", "--db", f"sqlite:///{db_file}")
    assert result.returncode == 0, result.stdout + result.stderr
    engine = create_engine(f"sqlite:///{db_file}")
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM runner_runs WHERE job_id='someone'"))
        assert left.scalar() == 1, "only the 60-day-old run is pruned"
    engine.dispose()
    assert not (work / "runner.db").exists()


def test_prune_history_keeps_at_least_a_day(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    jobs_file(work, PRUNE % "1")
    db_file = tmp_path / "runner.db"
    env = env_for(tmp_path)
    assert runner(work, env, "apply", "jobs.yaml", "--db", f"sqlite:///{db_file}").returncode == 0
    _old_run(db_file, "someone", days=0)
    result = runner(work, env, "run", "prune", "--db", f"sqlite:///{db_file}")
    assert result.returncode == 1
    assert "below the minimum of 1d" in result.stdout
    assert [r["job_id"] for r in history(tmp_path)].count("someone") == 1


# --- 2. the working directory never shadows a module ----------------------------------------

SHADOWED = ["psycopg2", "queue", "click", "sqlalchemy", "yaml", "fastapi", "uvicorn", "h11"]


def _plant(folder: Path, marker: Path) -> None:
    for name in SHADOWED:
        (folder / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\nraise SystemExit(99)\n"
        )
    (folder / "myjobs.py").write_text(
        "import os\n"
        "def hello(label='x'):\n"
        f"    open({str(marker) + '.ran'!r}, 'a').write(label + '\\n')\n"
    )


def test_modules_in_the_working_directory_never_replace_real_ones(tmp_path: Path) -> None:
    marker = tmp_path / "shadowed.txt"
    work = tmp_path / "repo"
    work.mkdir()
    _plant(work, marker)
    jobs_file(
        work,
        """
        jobs:
          - id: hello
            target: myjobs:hello
            kwargs: {label: from-cwd}
            trigger: {interval: 1h}
        """,
    )
    env = env_for(tmp_path, RUNNER_ALLOWED_TARGETS="myjobs")
    db = f"sqlite:///{tmp_path / 'runner.db'}"
    for args in (["validate", "jobs.yaml"], ["apply", "jobs.yaml", "--db", db], ["run", "hello"]):
        extra = ["--db", db] if args[0] == "run" else []
        result = runner(work, env, *args, *extra)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert not marker.exists(), f"shadowed: {marker.read_text()}"
    assert Path(str(marker) + ".ran").read_text() == "from-cwd\n", "allowed targets still import"


def test_a_module_not_under_an_allowed_prefix_is_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    jobs_file(
        tmp_path,
        """
        jobs:
          - id: evil
            target: evil:run
            trigger: {interval: 1h}
        """,
    )
    result = runner(tmp_path, env_for(tmp_path), "validate", "jobs.yaml")
    assert result.returncode == 1
    assert "module 'evil' is not allowed" in result.stderr
    assert not marker.exists()


# --- 3. a job reads only the variables the operator allows ----------------------------------


def _leak(name: str) -> str:
    return f"""
        jobs:
          - id: leak
            target: sampleapp.jobs:echo_env
            args: ["${{{name}}}"]
            trigger: {{interval: 1h}}
        """


@pytest.mark.parametrize("name", ["RUNNER_HTTP_TOKEN", "RUNNER_DATABASE_URL"])
def test_job_files_naming_the_runners_own_settings_are_refused(tmp_path: Path, name: str) -> None:
    jobs_file(tmp_path, _leak(name))
    env = env_for(tmp_path, RUNNER_JOB_ENV="*", RUNNER_HTTP_TOKEN="s3cr3t-value-42")
    for args in (["validate", "jobs.yaml", "--no-import"], ["apply", "jobs.yaml"]):
        db = ["--db", "sqlite:///r.db"] if args[0] == "apply" else []
        result = runner(tmp_path, env, *args, *db)
        assert result.returncode == 1
        assert f"job leak: args: environment variable {name} is not allowed" in result.stderr
    assert not (tmp_path / "r.db").exists(), "nothing is applied"


def test_jobs_cannot_read_unlisted_variables(tmp_path: Path) -> None:
    secret = "s3cr3t-value-42"
    env = env_for(tmp_path, RUNNER_JOB_ENV="APP_*", HOME_SECRET=secret)
    result = apply_and_run(tmp_path, env, _leak("HOME_SECRET"), "leak")
    assert result.returncode == 1
    assert "environment variable HOME_SECRET is not allowed for jobs" in result.stdout
    assert "RUNNER_JOB_ENV" in result.stdout
    calls = tmp_path / "calls.jsonl"
    assert not calls.exists() or secret not in calls.read_text()
    assert all(secret not in str(row) for row in history(tmp_path))


def test_allowed_variables_reach_the_job(tmp_path: Path) -> None:
    env = env_for(tmp_path, RUNNER_JOB_ENV="APP_*", APP_TOKEN="let-me-in")
    body = """
        jobs:
          - id: use
            target: sampleapp.jobs:echo_env
            args: ["${APP_TOKEN}"]
            trigger: {interval: 1h}
        """
    assert apply_and_run(tmp_path, env, body, "use").returncode == 0
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls[-1]["value"] == "let-me-in"


# --- 12. a secret is hidden however it is spelled, wherever it goes -------------------------


def test_secrets_are_hidden_in_every_spelling(tmp_path: Path) -> None:
    secret = "pa ss/wo\\rd\nwith-newline"
    leaky = tmp_path / "leakmod"
    leaky.mkdir()
    (leaky / "leaky.py").write_text(
        "import json, urllib.parse\n"
        "def leaky(value):\n"
        "    raise RuntimeError(repr(value) + ' ' + json.dumps(value) + ' '\n"
        "        + urllib.parse.quote(value) + ' ' + urllib.parse.quote_plus(value))\n"
    )
    env = env_for(tmp_path, RUNNER_JOB_ENV="APP_TOKEN", APP_TOKEN=secret)
    env["PYTHONPATH"] = os.pathsep.join([str(leaky), env["PYTHONPATH"]])
    env["RUNNER_ALLOWED_TARGETS"] = "leaky"
    body = """
        jobs:
          - id: show
            target: leaky:leaky
            args: ["${APP_TOKEN}"]
            trigger: {interval: 1h}
        """
    result = apply_and_run(tmp_path, env, body, "show")
    assert result.returncode == 1
    assert "RuntimeError: '***' \"***\" *** ***" in result.stdout
    rows = history(tmp_path)
    everything = result.stdout + result.stderr + json.dumps([str(r) for r in rows])
    for fragment in ["pa ss", "pa%20ss", "pa+ss", "with-newline"]:
        assert fragment not in everything, fragment


def test_a_secret_a_task_logs_is_hidden_in_the_log(tmp_path: Path) -> None:
    env = env_for(tmp_path, RUNNER_JOB_ENV="APP_TOKEN", APP_TOKEN="hunter2-secret")
    body = """
        jobs:
          - id: log
            target: runner.tasks:heartbeat
            args: ["token ${APP_TOKEN}"]
            trigger: {interval: 1h}
        """
    result = apply_and_run(tmp_path, env, body, "log")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heartbeat: token ***" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.postgres
def test_apply_on_postgres_and_serve_http_import_no_planted_module(
    tmp_path: Path, pg_url: str
) -> None:
    """psycopg2 and the HTTP stack are imported after targets are: the planted copies in a
    job repository must still never load."""
    marker = tmp_path / "shadowed.txt"
    work = tmp_path / "repo"
    work.mkdir()
    _plant(work, marker)
    jobs_file(
        work,
        """
        jobs:
          - id: hello
            target: myjobs:hello
            trigger: {interval: 1h}
        """,
    )
    env = env_for(tmp_path, RUNNER_ALLOWED_TARGETS="myjobs")
    applied = runner(work, env, "apply", "jobs.yaml", "--db", pg_url)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "serve",
            "jobs.yaml",
            "--db",
            pg_url,
            "--http",
            "127.0.0.1:0",
            "--no-watch",
        ],
        cwd=work,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        seen = []
        for line in serve.stdout:  # ends when serve exits; the test's timeout bounds it
            seen.append(line)
            if "HTTP on http://" in line:
                break
        assert any("HTTP on http://" in line for line in seen), "".join(seen)
    finally:
        serve.terminate()
        serve.communicate(timeout=30)
    assert not marker.exists(), f"shadowed: {marker.read_text()}"


# --- issue 13, defect 6: every problem is reported in one run -------------------------------


def test_every_yaml_schema_and_target_problem_is_reported_at_once(tmp_path: Path) -> None:
    jobs_file(
        tmp_path,
        """
        jobs:
          - id: one
            target: sampleapp.jobs:tick
            trigger: {interval: 1h}
            coalesce: yes
            paused: off
            timeout: 10m
            timeout: 20m
          - id: one
            target: sampleapp.jobs:tick
            trigger: {interval: 1h}
          - id: two
            target: sampleapp.jobs:nope
            trigger: {interval: 1h}
          - id: three
            target: sampleapp.jobs:tick
            trigger: {interval: 0}
          - id: four
            target: sampleapp.jobs:send_report
            kwargs: {nobody: 1}
            trigger: {interval: 1h}
        """,
    )
    result = runner(tmp_path, env_for(tmp_path), "validate", "jobs.yaml", "-o", "json")
    assert result.returncode == 1
    errors = {e["line"]: e["message"] for e in json.loads(result.stdout)["errors"]}
    assert sorted(errors) == [6, 7, 9, 10, 14, 18, 20], errors
    assert errors[6].startswith("'yes' is ambiguous")
    assert errors[7].startswith("'off' is ambiguous")
    assert errors[9] == "duplicate key 'timeout'"
    assert errors[10] == "duplicate id, first defined at jobs.yaml:3"
    assert errors[14] == "module 'sampleapp.jobs' has no attribute 'nope'"
    assert errors[18] == "0: a duration must be positive"
    assert errors[20].startswith("arguments do not match send_report")
