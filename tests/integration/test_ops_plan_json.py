"""The JSON plan carries what an apply leaves alone: operator overrides, and with `--no-prune`
the stored jobs no file holds any more. The contract's keys stay as they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runner.cli import main

CONTRACT_KEYS = {"create", "update", "delete", "unchanged", "applied"}
JOBS = """\
jobs:
  - {id: daily, target: sampleapp.jobs:tick, trigger: {cron: "0 9 * * *"}}
  - {id: hourly, target: sampleapp.jobs:tick, trigger: {interval: 1h}}
  - {id: held, target: sampleapp.jobs:tick, trigger: {interval: 1h}, paused: true}
"""
EXTRA = "jobs:\n  - {id: extra, target: sampleapp.jobs:tick, trigger: {interval: 5m}}\n"


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def plan(jobs: Path, db_url: str, *flags: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli("apply", str(jobs), "--db", db_url, "--output", "json", *flags)
    assert code in (0, 2), err
    return code, json.loads(out)


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")


def test_the_json_plan_lists_overrides_and_kept_jobs(db_url: str, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "a.yaml").write_text(JOBS)
    (jobs / "b.yaml").write_text(EXTRA)
    code, first = plan(jobs, db_url)
    assert code == 0 and "overrides" not in first and "kept" not in first
    assert cli("pause", "hourly", "--db", db_url)[0] == 0
    assert cli("resume", "held", "--db", db_url)[0] == 0  # paused in its file, resumed

    code, nothing_kept = plan(jobs, db_url, "--dry-run", "--no-prune")
    assert code == 0 and nothing_kept["kept"] == []  # b.yaml still stored: nothing kept yet
    (jobs / "b.yaml").unlink()
    code, dry = plan(jobs, db_url, "--dry-run", "--no-prune")
    assert code == 0  # nothing to change: overrides and kept jobs are left as they are
    assert set(dry) >= CONTRACT_KEYS
    assert (dry["create"], dry["update"], dry["delete"]) == ([], [], [])
    assert dry["unchanged"] == ["daily", "held", "hourly"]
    assert dry["overrides"] == [{"id": "held", "paused": False}, {"id": "hourly", "paused": True}]
    assert dry["kept"] == ["extra"]
    assert dry["applied"] is False

    code, applied = plan(jobs, db_url, "--no-prune")
    assert code == 0 and applied["kept"] == ["extra"] and applied["delete"] == []
    listed = json.loads(cli("jobs", "--db", db_url, "--output", "json")[1])
    assert "extra" in {j["id"] for j in listed}

    # Pruning: the same job is deleted, and nothing is "kept".
    code, pruned = plan(jobs, db_url, "--dry-run")
    assert code == 2 and pruned["delete"] == ["extra"] and "kept" not in pruned
    assert pruned["overrides"] == dry["overrides"]
