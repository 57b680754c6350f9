"""`runner schema` and the runner agree both ways, on samples and on the malformed catalogue."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from runner.cli import main
from runner.schema import job_file_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "acceptance"))
from test_validate_catalogue import CASES

T = "runner.tasks:heartbeat"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(job_file_schema())


def runner_accepts(document: dict[str, Any], tmp_path: Path) -> bool:
    path = tmp_path / "a.yaml"
    path.write_text(json.dumps(document), encoding="utf-8")  # JSON is YAML
    # Commands enabled: which programs are allowed is the operator's, beyond any schema.
    env = {"RUNNER_ALLOWED_COMMANDS": "/bin/echo"}
    result = CliRunner().invoke(main, ["validate", str(path), "--no-import"], env=env)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code == 0


def one(trigger: Any, **job: Any) -> dict[str, Any]:
    return {"jobs": [{"id": "x", "target": T, "trigger": trigger, **job}]}


def cmd(command: Any, **job: Any) -> dict[str, Any]:
    return {"jobs": [{"id": "x", "command": command, "trigger": {"interval": 5}, **job}]}


SAMPLES = {
    "spaced-duration": one({"interval": "10 s"}),
    "spaced-hours-minutes": one({"interval": "1h 30m"}),
    "seconds-integer": one({"interval": 10}),
    "zero-string": one({"interval": "0"}),
    "zero-seconds": one({"interval": "0s"}),
    "zero-integer": one({"interval": 0}),
    "negative": one({"interval": -5}),
    "units-out-of-order": one({"interval": "30m1h"}),
    "fraction": one({"interval": "1.5s"}),
    "cron-and-interval": one({"cron": "* * * * *", "interval": 10}),
    "no-kind": one({}),
    "only-jitter": one({"jitter": "5s"}),
    "null-beside-a-kind": one({"cron": "@daily", "interval": None}),
    "all-null": one({"cron": None, "interval": None, "at": None}),
    "at": one({"at": "2027-01-01T09:00:00+01:00"}),
    "at-with-start": one({"at": "2027-01-01T09:00:00Z", "start": "2026-01-01T00:00:00Z"}),
    "cron-mapping": one({"cron": {"minute": 5, "hour": "*/2"}}),
    "cron-four-fields": one({"cron": "* * * *"}),
    "cron-macro": one({"cron": "@hourly"}),
    "cron-unknown-macro": one({"cron": "@fortnightly"}),
    "target-from-defaults": {
        "defaults": {"target": T},
        "jobs": [{"id": "x", "trigger": {"interval": 5}}],
    },
    "trigger-from-defaults": {
        "defaults": {"trigger": {"interval": 5}},
        "jobs": [{"id": "x", "target": T}],
    },
    "no-target": {"jobs": [{"id": "x", "trigger": {"interval": 5}}]},
    "no-trigger-with-other-defaults": {
        "defaults": {"timeout": 5},
        "jobs": [{"id": "x", "target": T}],
    },
    "command": cmd(["echo", "hi"]),
    "command-absolute": cmd(["/bin/echo", "${NAME:-x}"]),
    "command-empty": cmd([]),
    "command-empty-program": cmd([""]),
    "command-relative": cmd(["./echo"]),
    "command-relative-dir": cmd(["bin/echo"]),
    "command-not-a-list": cmd("echo hi"),
    "command-number-item": cmd(["echo", 5]),
    "command-nul": cmd(["echo", "a\x00b"]),
    "command-and-target": cmd(["echo"], target=T),
    "command-and-args": cmd(["echo"], args=[1]),
    "command-and-kwargs": cmd(["echo"], kwargs={"a": 1}),
    "command-and-null-target": cmd(["echo"], target=None),
    "command-beside-default-target": {
        "defaults": {"target": T, "args": [1]},
        "jobs": [{"id": "x", "command": ["echo"], "trigger": {"interval": 5}}],
    },
    "command-in-defaults": {
        "defaults": {"command": ["echo"]},
        "jobs": [{"id": "x", "trigger": {"interval": 5}}],
    },
    "neither-target-nor-command": {"jobs": [{"id": "x", "trigger": {"interval": 5}}]},
    "target-dotted": one({"interval": 5}, target="runner.tasks.heartbeat"),
    "target-with-space": one({"interval": 5}, target="runner.tasks: heartbeat"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_schema_and_runner_agree(
    name: str, validator: jsonschema.protocols.Validator, tmp_path: Path
) -> None:
    document = SAMPLES[name]
    assert validator.is_valid(document) == runner_accepts(document, tmp_path)


def test_the_samples_cover_both_verdicts(
    validator: jsonschema.protocols.Validator, tmp_path: Path
) -> None:
    verdicts = {validator.is_valid(d) for d in SAMPLES.values()}
    assert verdicts == {True, False}


# What a JSON Schema cannot see, by catalogue case: the YAML text itself, facts about other
# files or the installed code, and rules that need computation. Everything else it rejects.
BEYOND_SCHEMA = {
    "duplicate-key": "YAML text",
    "yaml11-no": "YAML text (PyYAML reads a boolean)",
    "yaml11-yes-in-kwargs": "YAML text",
    "yaml11-sexagesimal": "YAML text",
    "yaml11-octal": "YAML text",
    "oversized-file": "file size",
    "cron-never-fires": "computing fire times",
    "cron-minute-61": "cron field ranges",
    "cron-bad-name": "cron field names",
    "duplicate-id-across-files": "other files",
    "duplicate-id-same-file": "uniqueness of a property",
    "unknown-time-zone": "the host's time zone database",
    "end-before-start": "comparing two times",
    "target-not-importable": "the installed code",
    "target-missing-attribute": "the installed code",
    "target-not-callable": "the installed code",
    "target-os-system": "the target allowlist",
    "target-via-alias": "the target allowlist",
    "target-builtins-eval": "the target allowlist",
    "signature-mismatch": "the installed code",
    "non-json-args": "NaN is a number to JSON Schema",
    "bad-at-time": "format date-time is an annotation unless a checker asserts it",
}


def _schema_verdicts(validator: jsonschema.protocols.Validator) -> dict[str, bool]:
    verdicts = {}
    for case in CASES:
        content = case.files[case.file]
        try:
            document = yaml.safe_load(content)
        except (yaml.YAMLError, UnicodeDecodeError):
            continue  # not data at all: nothing to give a schema
        verdicts[case.name] = validator.is_valid(json.loads(json.dumps(document, default=str)))
    return verdicts


def test_schema_rejects_every_catalogue_case_it_can_see(
    validator: jsonschema.protocols.Validator,
) -> None:
    verdicts = _schema_verdicts(validator)
    accepted = {name for name, ok in verdicts.items() if ok}
    assert accepted - set(BEYOND_SCHEMA) == set(), "the schema should reject these"
    assert set(BEYOND_SCHEMA) - accepted == set(), "the schema rejects these now: list them no more"
