"""What an operator meets at the command line: exit codes, databases, liveness, start-up checks.

Every command runs as a real `runner` subprocess on real files and databases.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from serve_helpers import ServeProcess, base_env, job_file, runner_cli, wait_until
from sqlalchemy import create_engine, inspect

REPO = Path(__file__).resolve().parents[2]
TICK = "id: tick, target: 'sampleapp.jobs:tick', trigger: {interval: 1}"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path / "calls.jsonl")


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit 1 and exactly one `error:` line, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    return lines[0]


# --- 1: usage errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["apply", "--dry-rum"], "did you mean '--dry-run'"),
        (["jobs", "--output", "yaml"], "'yaml' is not one of"),
        (["runs", "--limit", "0"], "--limit"),
        (["nosuch"], "no such command 'nosuch'"),
        (["serve", "--log-level", "verbose"], "'verbose' is not one of"),
    ],
)
def test_usage_errors_exit_1_with_one_line(
    args: list[str], says: str, env: dict[str, str], tmp_path: Path
) -> None:
    line = one_error_line(runner_cli(args, env, tmp_path))
    assert says in line.lower()
    assert not list(tmp_path.glob("*.db"))


def _runner_on_path(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """A `runner` executable on PATH that is this checkout's runner, as a CI image has."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "runner"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m runner "$@"\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}


def _ci_plan_scripts() -> dict[str, tuple[list[str], str]]:
    """The plan step of each shipped CI example: (shell command, script)."""
    gitlab = yaml.safe_load((REPO / "examples/ci/gitlab-ci.yml").read_text(encoding="utf-8"))
    github = yaml.safe_load((REPO / "examples/ci/github-actions.yml").read_text(encoding="utf-8"))
    steps = github["jobs"]["plan"]["steps"]
    run = "\n".join(s["run"] for s in steps if s.get("name") in ("Validate", "Plan"))
    return {
        # GitLab runs each script line in one `sh` that stops at the first failing line.
        "gitlab": (["sh", "-ec"], "\n".join(gitlab["plan"]["script"])),
        # GitHub's default shell for `run:` is `bash -e {0}`.
        "github": (["bash", "-ec"], run),
    }


@pytest.mark.parametrize("ci", ["gitlab", "github"])
def test_ci_examples_pass_on_pending_changes_and_fail_on_a_typo(
    ci: str, env: dict[str, str], tmp_path: Path
) -> None:
    shell, script = _ci_plan_scripts()[ci]
    assert "--dry-run" in script
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text(job_file(TICK), encoding="utf-8")
    ci_env = _runner_on_path(tmp_path, env)
    ci_env["RUNNER_DATABASE_URL"] = f"sqlite:///{tmp_path}/ci.db"

    def job(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*shell, text], env=ci_env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    pending = job(script)
    assert pending.returncode == 0, pending.stderr
    assert "+ create tick" in pending.stdout + pending.stderr
    typo = job(script.replace("--dry-run", "--dry-rum"))
    assert typo.returncode != 0, typo.stdout + typo.stderr
    assert "--dry-rum" in typo.stderr


def test_ci_examples_install_from_the_repository() -> None:
    for name in ("gitlab-ci.yml", "github-actions.yml"):
        text = (REPO / "examples/ci" / name).read_text(encoding="utf-8")
        assert "pip install runner\n" not in text and "pip install runner " not in text
        assert "git+" in text


# --- 2: read-only commands never create a database -----------------------------------------
READ_ONLY = [["jobs"], ["runs"], ["status"], ["run", "x"], ["pause", "x"], ["resume", "x"]]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: a[0])
def test_missing_sqlite_database_is_an_error_and_stays_missing(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    line = one_error_line(runner_cli([*args, "--db", "sqlite:///typo.db"], env, tmp_path))
    assert "sqlite:///typo.db" in line and "does not exist" in line
    # With no --db and no RUNNER_DATABASE_URL: the default, named as such.
    line = one_error_line(runner_cli(args, env, tmp_path))
    assert "sqlite:///runner.db" in line and "RUNNER_DATABASE_URL" in line
    assert not list(tmp_path.glob("*.db*"))


def test_database_without_runner_tables_is_an_error_and_gets_none(
    env: dict[str, str], tmp_path: Path, pg_url: str
) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for url in (f"sqlite:///{empty}", pg_url):
        for args in READ_ONLY:
            line = one_error_line(runner_cli([*args, "--db", url], env, tmp_path))
            assert "holds no runner tables" in line and "runner apply" in line
        engine = create_engine(url)
        try:
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()


# --- 3: honest liveness in `runner status` -------------------------------------------------
def _status(env: dict[str, str], cwd: Path, db: str, *extra: str) -> dict[str, Any]:
    done = runner_cli(["status", "--db", db, "--output", "json", *extra], env, cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _serve(tmp_path: Path, env: dict[str, str], db: str) -> ServeProcess:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir(exist_ok=True)
    (jobs / "a.yaml").write_text(job_file(TICK), encoding="utf-8")
    return ServeProcess([str(jobs)], db, env, tmp_path).start()


@pytest.mark.slow
def test_status_on_sqlite_names_the_leader_marks_the_dead_and_forgets_the_stopped(
    env: dict[str, str], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path}/runner.db"
    first = _serve(tmp_path, env, db)
    try:
        first.wait_ready()
        report = _status(env, tmp_path, db)
        assert report["leader"] is not None
        node = report["leader"]["node"]
        assert [(n["node"], n["role"]) for n in report["nodes"]] == [(node, "leader")]
        assert report["nodes"][0]["heartbeat_age_seconds"] < 5

        assert first.proc is not None
        first.proc.kill()  # SIGKILL: no chance to say goodbye
        first.wait_exit(10)

        def dead() -> dict[str, Any] | None:
            report = _status(env, tmp_path, db)
            return report if report["nodes"][0]["role"] == "dead" else None

        report = wait_until(dead, 15, 0.25, "the killed node to show as dead")
        assert report["leader"] is None
        assert report["nodes"][0]["heartbeat_age_seconds"] >= 5  # shown rounded: 5.04 is 5.0
        text = runner_cli(["status", "--db", db], env, tmp_path).stdout
        assert "leader: none" in text and f"dead     {node}  dead: no heartbeat for" in text
    finally:
        first.kill()

    second = _serve(tmp_path, env, db)  # a dead node does not block a new one
    try:
        second.wait_ready()
        assert second.stop() == 0
    finally:
        second.kill()
    report = _status(env, tmp_path, db)
    assert report["leader"] is None
    assert [n["role"] for n in report["nodes"]] == ["dead"]  # the stopped one is forgotten
    shown = {n["role"] for n in _status(env, tmp_path, db, "--all")["nodes"]}
    assert shown == {"dead", "stopped"}


# --- 4: serve checks its input before the database -----------------------------------------
def _hide_http_extra(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """An interpreter on which `import uvicorn` fails, as on a core install."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.modules['uvicorn'] = None\n", encoding="utf-8"
    )
    return {**env, "PYTHONPATH": f"{site}{os.pathsep}{env['PYTHONPATH']}"}


def test_serve_refuses_bad_input_at_once_and_touches_no_database(
    env: dict[str, str], tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    good = jobs / "a.yaml"
    good.write_text(job_file(TICK), encoding="utf-8")
    db = f"sqlite:///{tmp_path}/runner.db"

    def serve(*args: str, run_env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return runner_cli(["serve", *args, "--db", db], run_env, tmp_path, timeout=30)

    done = serve("nosuchdir")
    assert done.returncode == 1
    assert "nosuchdir:1:1: no such file or directory" in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("not serving")

    bad = jobs / "b.yaml"
    bad.write_text(job_file("id: b, target: 'sampleapp.jobs:nope', trigger: {interval: 1}"))
    done = serve(str(jobs))
    assert done.returncode == 1
    assert f"{bad}:1:" in done.stderr or "b.yaml:2:" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: 1 problem(s) in job files; not serving"
    bad.unlink()

    line = one_error_line(serve(str(good), "--http", "nonsense"))
    assert "--http 'nonsense': expected HOST:PORT" in line

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = serve(str(good), "--http", f"127.0.0.1:{port}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: --http 127.0.0.1:{port}")

    line = one_error_line(serve(str(good), "--http", ":0", run_env=_hide_http_extra(tmp_path, env)))
    assert "http extra" in line and "runner[http]" in line

    assert not list(tmp_path.glob("*.db*")), "a refused serve must not create the database"
