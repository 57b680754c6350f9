"""Inputs that must neither crash, stall nor forge: the real CLI and `serve` in subprocesses.

Covers what is recorded of an error (bounded, one line), what the plan, `validate`, `runs`
and the log may show (one line per item, whatever a job file holds), files `validate` and
`serve` must both refuse the same way, and the database URL's secrets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

TESTS = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp_path / "app"), str(TESTS), env.get("PYTHONPATH")) if p
    )
    env["RUNNER_ALLOWED_TARGETS"] = "sampleapp,noisy"
    env["SAMPLEAPP_CALLS"] = str(tmp_path / "calls.jsonl")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def runner(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


NOISY = """
def huge():
    raise RuntimeError("x" * (10 * 1024 * 1024))

def forged():
    raise RuntimeError("oops\\n999  other-job  2026-01-01  attempt 1  succeeded")
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "noisy.py").write_text(NOISY)
    write(
        tmp_path / "jobs.yaml",
        """
        jobs:
          - id: huge
            target: noisy:huge
            trigger: {interval: 1h}
          - id: forged
            target: noisy:forged
            trigger: {interval: 1h}
        """,
    )
    return tmp_path


# --- 6. what is recorded of an error is bounded ---------------------------------------------


def test_a_huge_error_is_recorded_bounded(app: Path) -> None:
    env, db = env_for(app), f"sqlite:///{app / 'runner.db'}"
    assert runner(app, env, "apply", "jobs.yaml", "--db", db).returncode == 0
    result = runner(app, env, "run", "huge", "--db", db)
    assert result.returncode == 1
    assert len(result.stdout) < 4000
    assert all(len(line) < 10_000 for line in result.stderr.splitlines())
    runs = json.loads(runner(app, env, "runs", "--db", db, "--output", "json").stdout)
    assert runs[0]["status"] == "failed"
    assert runs[0]["error"].startswith("RuntimeError: xxx")
    assert len(runs[0]["error"]) <= 2000
    assert "cut at 2000" in runs[0]["error"]
    assert (app / "runner.db").stat().st_size < 1024 * 1024


# --- 7. nothing a job or a job file says can start a line of its own ------------------------


def test_error_text_cannot_forge_runs_or_log_lines(app: Path) -> None:
    env, db = env_for(app), f"sqlite:///{app / 'runner.db'}"
    assert runner(app, env, "apply", "jobs.yaml", "--db", db).returncode == 0
    result = runner(app, env, "run", "forged", "--db", db)
    assert result.returncode == 1
    listing = runner(app, env, "runs", "--db", db)
    assert listing.returncode == 0
    header, *rows = listing.stdout.strip().splitlines()
    assert header.split()[:2] == ["RUN", "JOB"], listing.stdout
    assert len(rows) == 1, listing.stdout  # one run, one line, however its error reads
    assert "oops\\n999" in rows[0]
    for line in result.stderr.splitlines():
        assert not line.startswith("999"), result.stderr


def test_label_and_kwargs_keys_cannot_forge_plan_lines(tmp_path: Path) -> None:
    env, db = env_for(tmp_path), f"sqlite:///{tmp_path / 'runner.db'}"
    job = """
        jobs:
          - id: report
            target: sampleapp.jobs:tick
            trigger: {{interval: 1h}}
            labels: {{{labels}}}
        """
    write(tmp_path / "jobs.yaml", job.format(labels="team: a"))
    assert runner(tmp_path, env, "apply", "jobs.yaml", "--db", db).returncode == 0
    forged = '"x\\n- delete payroll\\nPlan: 0 to create, 0 to update, 0 to delete, 9 unchanged.": z'
    write(tmp_path / "jobs.yaml", job.format(labels=forged))
    plan = runner(tmp_path, env, "apply", "jobs.yaml", "--db", db, "--dry-run")
    assert plan.returncode == 2, plan.stderr
    lines = plan.stdout.strip().splitlines()
    assert len(lines) == 2, plan.stdout
    assert lines[0].startswith("~ update report (")
    assert lines[1] == "Plan: 0 to create, 1 to update, 0 to delete, 0 unchanged."
    assert not any(line.startswith("- delete") for line in lines)


@pytest.mark.parametrize(
    ("job_id", "shown"),
    [
        ("bad\\nid", "job bad\\nid: "),
        ("nul\\0id", "job nul\\x00id: "),
        ("e\\e[2Jid", "job e\\x1b[2Jid: "),
    ],
)
def test_validate_reports_one_line_per_problem_whatever_the_id(
    tmp_path: Path, job_id: str, shown: str
) -> None:
    write(
        tmp_path / "jobs.yaml",
        f"""
        jobs:
          - id: "{job_id}"
            target: sampleapp.jobs:tick
            trigger: {{interval: 1h}}
        """,
    )
    env = env_for(tmp_path)
    text = runner(tmp_path, env, "validate", "jobs.yaml")
    as_json = json.loads(runner(tmp_path, env, "validate", "jobs.yaml", "-o", "json").stdout)
    assert text.returncode == 1
    lines = [line for line in text.stderr.splitlines() if re.match(r"jobs\.yaml:\d+:\d+: ", line)]
    assert len(lines) == len(as_json["errors"]) >= 1
    assert shown in lines[0], text.stderr
    assert all(ch.isprintable() for ch in text.stderr.replace("\n", ""))


# --- 8. validate and serve read the same bounded way and agree ------------------------------

BAD_FILES: dict[str, Callable[[Path], None]] = {
    "interval.yaml": lambda p: write(
        p,
        """
        jobs:
          - id: huge-interval
            target: sampleapp.jobs:tick
            trigger: {interval: 999999999999}
        """,
    ),
    "jitter.yaml": lambda p: write(
        p,
        """
        jobs:
          - id: huge-jitter
            target: sampleapp.jobs:tick
            trigger: {cron: "* * * * *", jitter: 99999999999999}
        """,
    ),
    "far.yaml": lambda p: write(
        p,
        """
        jobs:
          - id: far-future
            target: sampleapp.jobs:tick
            trigger: {at: "9999-12-31T23:59:59-12:00"}
        """,
    ),
    "loop.yaml": lambda p: p.symlink_to(p),
    "fifo.yaml": lambda p: os.mkfifo(p),
    "sparse.yaml": lambda p: (p.touch(), os.truncate(p, 512 * 1024 * 1024)),
    "values.yaml": lambda p: p.write_text("jobs: [" + ",".join(["1"] * 300_000) + "]\n"),
}


def _bad_folder(folder: Path) -> None:
    for name, make in BAD_FILES.items():
        make(folder / name)


def test_validate_refuses_every_bad_file_with_its_location(tmp_path: Path) -> None:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    _bad_folder(folder)
    result = runner(tmp_path, env_for(tmp_path), "validate", "jobs.d")
    assert result.returncode == 1
    assert "internal error" not in result.stderr
    for name in BAD_FILES:
        assert re.search(rf"^jobs\.d/{name}:\d+:\d+: ", result.stderr, re.M), name
    apply = runner(tmp_path, env_for(tmp_path), "apply", "jobs.d", "--db", "sqlite:///r.db")
    assert apply.returncode == 1
    assert "internal error" not in apply.stderr


def test_serve_survives_bad_files_and_keeps_running_the_good_ones(tmp_path: Path) -> None:
    folder = tmp_path / "jobs.d"
    folder.mkdir()
    write(
        folder / "good.yaml",
        """
        jobs:
          - id: ticker
            target: sampleapp.jobs:tick
            trigger: {interval: 1s}
        """,
    )
    calls = tmp_path / "calls.jsonl"
    log = tmp_path / "serve.log"

    def named(name: str) -> bool:
        return re.search(rf"jobs\.d/{name}:\d+:\d+: ", log.read_text()) is not None

    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "jobs.d", "--db", "sqlite:///r.db"],
            cwd=tmp_path,
            env=env_for(tmp_path),
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for(lambda: calls.exists() and calls.read_text().count("\n"), 30, "a first tick")
        _bad_folder(folder)
        # The watcher may see the bad files in more than one batch: wait until every one is
        # reported, then for ticks after that.
        wait_for(lambda: all(named(name) for name in BAD_FILES), 60, "every bad file reported")
        before = calls.read_text().count("\n")
        wait_for(lambda: calls.read_text().count("\n") > before + 2, 30, "ticks after the change")
        assert proc.poll() is None, "serve died on a bad file"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    output = log.read_text()
    assert "internal error" not in output and "OverflowError" not in output
    assert "Traceback" not in output, output
    for name in BAD_FILES:
        assert named(name), (name, output)


# --- 13. the database URL keeps its secrets; the file its privacy ----------------------------


def test_a_password_in_the_url_query_is_never_printed(tmp_path: Path) -> None:
    url = "postgresql://someone@127.0.0.1:1/db?password=hunter2secret&sslpassword=k3y"
    write(tmp_path / "jobs.yaml", "jobs: []\n")
    result = runner(tmp_path, env_for(tmp_path), "apply", "jobs.yaml", "--db", url)
    jobs = runner(tmp_path, env_for(tmp_path), "jobs", "--db", url)
    for out in (result, jobs):
        assert out.returncode == 1
        assert "127.0.0.1" in out.stderr, out.stderr
        assert "hunter2secret" not in out.stdout + out.stderr
        assert "k3y" not in out.stdout + out.stderr


@pytest.mark.postgres
def test_serve_start_up_line_hides_a_query_password(tmp_path: Path, pg_url: str) -> None:
    write(
        tmp_path / "jobs.yaml",
        """
        jobs:
          - id: ticker
            target: sampleapp.jobs:tick
            trigger: {interval: 1h}
        """,
    )
    url = f"{pg_url}?password=hunter2secret"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "jobs.yaml", "--no-watch", "--db", url],
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "runner serve starting" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    everything = "".join(seen) + rest
    assert "runner serve starting" in everything
    assert "hunter2secret" not in everything
    assert "password=***" in everything


def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    write(tmp_path / "jobs.yaml", "jobs: []\n")
    result = runner(tmp_path, env_for(tmp_path), "apply", "jobs.yaml", "--db", "sqlite:///r.db")
    assert result.returncode == 0, result.stderr
    for name in ("r.db", "r.db-wal", "r.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, name


def test_a_non_numeric_port_is_a_clear_error(tmp_path: Path) -> None:
    result = runner(tmp_path, env_for(tmp_path), "jobs", "--db", "postgresql://u:pw@host:abc/db")
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid database URL")
    assert "internal error" not in result.stderr and "pw@" not in result.stderr


# --- 14. a container user without a passwd entry can apply -----------------------------------


def _open_to_all(path: str) -> bool:
    """Whether any user may run `path`: every folder above it must be searchable by others."""
    parts = Path(path).resolve().parents
    return all(stat.S_IMODE(p.stat().st_mode) & 0o001 for p in parts)


def _interpreter_for_anyone() -> tuple[str, list[str]] | None:
    """An interpreter another uid can start, and the import path it needs for our packages."""
    if _open_to_all(sys.executable):
        return sys.executable, []
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    site = [p for p in sys.path if p.endswith("site-packages") and _open_to_all(p)]
    if system.exists() and site:
        return str(system), [str(TESTS.parent), *site]
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as a uid without passwd entry")
def test_apply_runs_as_a_uid_without_a_passwd_entry() -> None:
    found = _interpreter_for_anyone()
    if found is None:
        pytest.skip("no Python interpreter another user may run")
    python, path = found
    tmp_path = Path(tempfile.mkdtemp(prefix="runner-nouser-"))  # pytest's folders are private
    try:
        _apply_as_nobody(tmp_path, python, path)
    finally:
        shutil.rmtree(tmp_path)


def _apply_as_nobody(tmp_path: Path, python: str, path: list[str]) -> None:
    tmp_path.chmod(0o777)
    write(
        tmp_path / "jobs.yaml",
        "jobs:\n  - {id: a, target: runner.tasks:heartbeat, trigger: {interval: 1h}}\n",
    )
    (tmp_path / "jobs.yaml").chmod(0o644)
    env = env_for(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([*path, env["PYTHONPATH"]])
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME", "HOME"):
        env.pop(name, None)
    result = subprocess.run(
        [python, "-m", "runner", "apply", "jobs.yaml", "--db", "sqlite:///r.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        user=54321,
    )
    assert result.returncode == 0, result.stderr
    assert "+ create a" in result.stdout
