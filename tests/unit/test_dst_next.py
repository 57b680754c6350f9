"""`runner validate --next` against cronsim through every clock change from 2025 to 2030.

The command's own code path (files, models, the stored trigger, `next_fire_times`, which
is the chain serve follows), run in-process with click's runner for speed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from simulation.expected import cron_fires, transitions

from runner.cli import main

ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Havana",
    "America/Santiago",
    "Africa/Cairo",
    "Australia/Sydney",
    "Europe/London",
)
EXPRESSIONS = (
    "* * * * *",
    "*/5 * * * *",
    "*/30 * * * *",
    "@hourly",
    "15 * * * *",
    "0 */2 * * *",
    "45 */3 * * *",
    "0 1-3 * * *",
    "30 2 * * *",
    "0 2 * * *",
    "0 3 * * *",
    "0 0 * * *",
    "30 0 * * *",
    "59 23 * * *",
    "*/15 1-3 * * *",
    "0 0 2 * * *",
    "0 30 * * * *",
)
SECONDS = ("*/5 * * * * *", "*/20 * * * * *")
COUNT = 100


def _file(tmp_path: Path, zone: str, expressions: tuple[str, ...]) -> Path:
    path = tmp_path / f"{zone.replace('/', '-')}-{len(expressions)}.yaml"
    jobs = [
        {"id": f"j{i}", "target": "runner.tasks:heartbeat", "trigger": {"cron": e}}
        for i, e in enumerate(expressions)
    ]
    path.write_text(yaml.safe_dump({"defaults": {"timezone": zone}, "jobs": jobs}))
    return path


def _next(path: Path, after: datetime) -> dict[str, list[datetime]]:
    result = CliRunner().invoke(
        main,
        [
            "validate",
            str(path),
            "--no-import",
            "--output",
            "json",
            "--next",
            str(COUNT),
            "--from",
            after.isoformat(),
        ],
    )
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    return {
        job["id"]: [datetime.fromisoformat(t).astimezone(UTC) for t in job["next"]]
        for job in listing["jobs"]
    }


@pytest.mark.parametrize("zone", ZONES)
def test_validate_next_agrees_with_cronsim_through_every_change_2025_to_2030(
    zone: str, tmp_path: Path
) -> None:
    minutes = _file(tmp_path, zone, EXPRESSIONS)
    seconds = _file(tmp_path, zone, SECONDS)
    changes = [c for year in range(2025, 2031) for c in transitions(zone, year)]
    assert len(changes) >= 10, changes
    for change in changes:
        for path, expressions, lead in (
            (minutes, EXPRESSIONS, timedelta(minutes=10)),
            (seconds, SECONDS, timedelta(minutes=2)),
        ):
            after = change - lead
            listed = _next(path, after)
            for index, expression in enumerate(expressions):
                got = listed[f"j{index}"]
                assert len(got) == COUNT
                want = cron_fires(expression, zone, after + timedelta(microseconds=1), got[-1])
                assert got == want, (zone, str(change), expression)
