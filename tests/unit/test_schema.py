"""`runner schema`: the JSON Schema editors use agrees with the runner about job files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from runner.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    result = CliRunner().invoke(main, ["schema", "--output", "json"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", ["example.jobs.yaml", "jobs.d/housekeeping.yaml"])
def test_shipped_job_files_satisfy_the_schema(
    validator: jsonschema.protocols.Validator, path: str
) -> None:
    document = yaml.safe_load((ROOT / path).read_text())
    # YAML's own timestamps become datetimes in PyYAML; editors see the text.
    text = json.loads(json.dumps(document, default=str))
    assert list(validator.iter_errors(text)) == []


def test_schema_rejects_what_the_runner_rejects(validator: jsonschema.protocols.Validator) -> None:
    bad = {"jobs": [{"id": "x", "target": "a:b", "trigger": {"interval": 60}, "triger": {}}]}
    assert not validator.is_valid(bad)
    assert not validator.is_valid({"jobs": [{"target": "a:b", "trigger": {"interval": 60}}]})
    assert validator.is_valid(
        {"jobs": [{"id": "x", "target": "a:b", "trigger": {"interval": "15m"}}]}
    )


def test_schema_knows_command_jobs(validator: jsonschema.protocols.Validator) -> None:
    job = {"id": "x", "command": ["echo", "hi"], "trigger": {"interval": 60}}
    assert validator.is_valid({"jobs": [job]})
    assert not validator.is_valid({"jobs": [{**job, "target": "a:b"}]})
    assert not validator.is_valid({"jobs": [{**job, "command": ["./x"]}]})
    assert not validator.is_valid({"jobs": [{"id": "x", "trigger": {"interval": 60}}]})
