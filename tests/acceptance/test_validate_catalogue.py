"""A catalogue of malformed job files: each exits 1 with one located line and no traceback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import main

ERROR_LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?:job (?P<job>[^:]+): )?(?P<rest>.+)$"
)

GOOD_JOB = """  - id: {id}
    target: sampleapp.jobs:tick
    trigger: {{interval: 1m}}
"""


@dataclass(frozen=True)
class Case:
    name: str
    files: dict[str, bytes | str]
    file: str
    line: int
    job: str | None
    needle: str


def job(body: str, job_id: str = "j1") -> str:
    """A one-job file whose job has `body` (indented job keys after id)."""
    return f"jobs:\n  - id: {job_id}\n" + "".join(
        f"    {ln}\n" for ln in body.strip("\n").splitlines()
    )


TRIG = "trigger: {interval: 1m}"
# Each level holds ten aliases of the one before: 10**6 values from a few hundred bytes.
ALIAS_LEVELS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    for prev, name in zip("abcde", "bcdef", strict=True)
)
TARGET = "target: sampleapp.jobs:tick"

CASES = [
    Case(
        "yaml-syntax",
        {"a.yaml": "jobs:\n  - id: x\n    target: [unclosed\n"},
        "a.yaml",
        4,
        None,
        "YAML syntax",
    ),
    Case("tab-indent", {"a.yaml": "jobs:\n  - id: x\n\ttarget: y\n"}, "a.yaml", 3, None, "tab"),
    Case(
        "duplicate-key",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\n{TRIG}")},
        "a.yaml",
        5,
        None,
        "duplicate key 'trigger'",
    ),
    Case(
        "yaml11-no",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\npaused: NO")},
        "a.yaml",
        5,
        None,
        "'NO' is ambiguous",
    ),
    Case(
        "yaml11-yes-in-kwargs",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nkwargs: {{flag: yes}}")},
        "a.yaml",
        5,
        None,
        "'yes' is ambiguous",
    ),
    Case(
        "yaml11-sexagesimal",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{interval: 1:30}}")},
        "a.yaml",
        4,
        None,
        "base-60",
    ),
    Case(
        "yaml11-octal",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nkwargs: {{mode: 0755}}")},
        "a.yaml",
        5,
        None,
        "octal",
    ),
    Case(
        "python-tag",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nargs: [!!python/object/apply:os.system [ls]]")},
        "a.yaml",
        5,
        None,
        "not allowed",
    ),
    Case(
        "cron-never-fires",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{cron: '0 0 30 2 *'}}")},
        "a.yaml",
        4,
        "j1",
        "never",
    ),
    Case(
        "cron-minute-61",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{cron: '61 * * * *'}}")},
        "a.yaml",
        4,
        "j1",
        "61",
    ),
    Case(
        "cron-four-fields",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{cron: '* * * *'}}")},
        "a.yaml",
        4,
        "j1",
        "4",
    ),
    Case(
        "cron-bad-macro",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{cron: '@fortnightly'}}")},
        "a.yaml",
        4,
        "j1",
        "fortnightly",
    ),
    Case(
        "cron-bad-name",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{cron: '0 9 * * mnd'}}")},
        "a.yaml",
        4,
        "j1",
        "mnd",
    ),
    Case(
        "cron-mapping-unknown-field",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{cron: {{minit: 5}}}}")},
        "a.yaml",
        4,
        "j1",
        "minit",
    ),
    Case(
        "duplicate-id-across-files",
        {
            "a.yaml": GOOD_JOB.format(id="same").join(["jobs:\n", ""]),
            "b.yaml": "jobs:\n" + GOOD_JOB.format(id="same"),
        },
        "b.yaml",
        2,
        "same",
        "duplicate id",
    ),
    Case(
        "duplicate-id-same-file",
        {"a.yaml": "jobs:\n" + GOOD_JOB.format(id="d") + GOOD_JOB.format(id="d")},
        "a.yaml",
        5,
        "d",
        "duplicate id",
    ),
    Case(
        "unknown-key-suggests",
        {"a.yaml": job(f"{TARGET}\ntriger: {{interval: 1m}}")},
        "a.yaml",
        4,
        "j1",
        "did you mean 'trigger'",
    ),
    Case(
        "unknown-trigger-key",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{interval: 1m, jiter: 5s}}")},
        "a.yaml",
        4,
        "j1",
        "did you mean 'jitter'",
    ),
    Case(
        "unknown-retries-key",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nretries: {{max_attempt: 3}}")},
        "a.yaml",
        5,
        "j1",
        "did you mean 'max_attempts'",
    ),
    Case(
        "unknown-top-level-key",
        {"a.yaml": "job:\n  - id: x\n"},
        "a.yaml",
        1,
        None,
        "did you mean 'jobs'",
    ),
    Case(
        "wrong-type-max-instances",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nmax_instances: two")},
        "a.yaml",
        5,
        "j1",
        "max_instances",
    ),
    Case(
        "wrong-type-coalesce",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\ncoalesce: 1")},
        "a.yaml",
        5,
        "j1",
        "coalesce",
    ),
    Case(
        "string-number",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nmax_instances: '2'")},
        "a.yaml",
        5,
        "j1",
        "max_instances",
    ),
    Case(
        "zero-interval",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{interval: 0}}")},
        "a.yaml",
        4,
        "j1",
        "positive",
    ),
    Case(
        "negative-timeout",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\ntimeout: -5")},
        "a.yaml",
        5,
        "j1",
        "positive",
    ),
    Case(
        "bad-duration-unit",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\ntimeout: 5 minutes")},
        "a.yaml",
        5,
        "j1",
        "not a duration",
    ),
    Case(
        "unknown-time-zone",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\ntimezone: Mars/Olympus")},
        "a.yaml",
        5,
        "j1",
        "unknown time zone",
    ),
    Case(
        "end-before-start",
        {
            "a.yaml": job(
                f"{TARGET}\ntrigger: {{interval: 1m, "
                "start: '2027-01-02T00:00:00Z', end: '2027-01-01T00:00:00Z'}"
            )
        },
        "a.yaml",
        4,
        "j1",
        "not after start",
    ),
    Case(
        "two-trigger-kinds",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{interval: 1m, cron: '* * * * *'}}")},
        "a.yaml",
        4,
        "j1",
        "exactly one",
    ),
    Case(
        "no-trigger-kind",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{jitter: 5s}}")},
        "a.yaml",
        4,
        "j1",
        "exactly one",
    ),
    Case("missing-target", {"a.yaml": job(TRIG)}, "a.yaml", 2, "j1", "target is required"),
    Case(
        "bad-id",
        {"a.yaml": job(f"{TARGET}\n{TRIG}", job_id="-bad id")},
        "a.yaml",
        2,
        "-bad id",
        "id",
    ),
    Case(
        "target-not-importable",
        {"a.yaml": job(f"target: sampleapp.nothere:tick\n{TRIG}")},
        "a.yaml",
        3,
        "j1",
        "cannot import",
    ),
    Case(
        "target-missing-attribute",
        {"a.yaml": job(f"target: sampleapp.jobs:nope\n{TRIG}")},
        "a.yaml",
        3,
        "j1",
        "no attribute",
    ),
    Case(
        "target-not-callable",
        {"a.yaml": job(f"target: sampleapp.jobs:NOT_CALLABLE\n{TRIG}")},
        "a.yaml",
        3,
        "j1",
        "not callable",
    ),
    Case(
        "target-os-system",
        {"a.yaml": job(f"target: os:system\n{TRIG}\nargs: [ls]")},
        "a.yaml",
        3,
        "j1",
        "not allowed",
    ),
    Case(
        "target-via-alias",
        {"a.yaml": job(f"target: sampleapp.jobs:os.system\n{TRIG}\nargs: [ls]")},
        "a.yaml",
        3,
        "j1",
        "resolves to posix.system",
    ),
    Case(
        "target-builtins-eval",
        {"a.yaml": job(f"target: builtins:eval\n{TRIG}\nargs: ['1']")},
        "a.yaml",
        3,
        "j1",
        "not allowed",
    ),
    Case(
        "target-bad-shape",
        {"a.yaml": job(f"target: 'not a target'\n{TRIG}")},
        "a.yaml",
        3,
        "j1",
        "module:attribute",
    ),
    Case(
        "signature-mismatch",
        {
            "a.yaml": job(
                f"target: sampleapp.jobs:send_report\n{TRIG}\nkwargs: {{recipient: [a@b.c]}}"
            )
        },
        "a.yaml",
        3,
        "j1",
        "arguments do not match",
    ),
    Case(
        "args-not-a-list",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nargs: {{a: 1}}")},
        "a.yaml",
        5,
        "j1",
        "args",
    ),
    Case(
        "non-json-args",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nargs: [.inf]")},
        "a.yaml",
        5,
        "j1",
        "not a JSON value",
    ),
    Case(
        "non-utf8",
        {"a.yaml": b"jobs:\n  - id: x\n    description: caf\xe9\n"},
        "a.yaml",
        3,
        None,
        "UTF-8",
    ),
    Case("empty-file", {"a.yaml": ""}, "a.yaml", 1, None, "delete the file"),
    Case(
        "comments-only",
        {"a.yaml": "# nothing here\n# at all\n"},
        "a.yaml",
        1,
        None,
        "delete the file",
    ),
    Case(
        "jobs-not-a-list", {"a.yaml": "jobs: {id: x}\n"}, "a.yaml", 1, None, "jobs must be a list"
    ),
    Case("top-level-list", {"a.yaml": "- id: x\n"}, "a.yaml", 1, None, "expected a mapping"),
    Case(
        "job-not-a-mapping",
        {"a.yaml": "jobs:\n  - just-a-string\n"},
        "a.yaml",
        2,
        "#1",
        "must be a mapping",
    ),
    Case(
        "alias-bomb",
        {"a.yaml": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + ALIAS_LEVELS + "jobs: []\n"},
        "a.yaml",
        5,
        None,
        "aliases expand",
    ),
    Case(
        "oversized-file",
        {"a.yaml": "jobs: []\n" + ("#" * 100 + "\n") * (9 * 1024 * 1024 // 101)},
        "a.yaml",
        1,
        None,
        "larger than",
    ),
    Case(
        "bad-defaults",
        {"a.yaml": "defaults: {timezon: UTC}\n" + "jobs:\n" + GOOD_JOB.format(id="x")},
        "a.yaml",
        1,
        None,
        "did you mean 'timezone'",
    ),
    Case(
        "at-with-start",
        {
            "a.yaml": job(
                f"{TARGET}\ntrigger: {{at: '2027-01-01T00:00:00Z', start: '2026-01-01T00:00:00Z'}}"
            )
        },
        "a.yaml",
        4,
        "j1",
        "start and end apply",
    ),
    Case(
        "bad-at-time",
        {"a.yaml": job(f"{TARGET}\ntrigger: {{at: 'next tuesday'}}")},
        "a.yaml",
        4,
        "j1",
        "trigger.at",
    ),
    Case(
        "retries-zero-attempts",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nretries: {{max_attempts: 0}}")},
        "a.yaml",
        5,
        "j1",
        "greater than or equal to 1",
    ),
    Case(
        "labels-not-strings",
        {"a.yaml": job(f"{TARGET}\n{TRIG}\nlabels: {{team: [a]}}")},
        "a.yaml",
        5,
        "j1",
        "labels.team",
    ),
]


def test_catalogue_is_large_and_distinct() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("RUNNER_ALLOWED_TARGETS", "sampleapp")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_reported_with_location(case: Case, app_env: Path) -> None:
    for name, content in case.files.items():
        data = content.encode() if isinstance(content, str) else content
        (app_env / name).write_bytes(data)
    result = CliRunner().invoke(main, ["validate", "."])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    *lines, summary = [ln for ln in result.stderr.splitlines() if ln]
    assert lines, "no error line printed"
    pattern = (
        rf"error: {len(lines)} problem\(s\) in \d+ file\(s\); nothing is valid until all are fixed"
    )
    assert re.fullmatch(pattern, summary), summary
    matching = []
    for line in lines:
        m = ERROR_LINE.match(line)
        assert m, f"not FILE:LINE:COL: ...: {line!r}"
        if Path(m["file"]).name == case.file and case.needle in line:
            matching.append(m)
    assert matching, f"no line mentions {case.needle!r} in {case.file}: {lines}"
    first = matching[0]
    assert int(first["line"]) == case.line, lines
    assert first["job"] == case.job, lines
    assert result.stdout == "", "nothing is listed as valid when a file is invalid"


def test_every_error_is_reported_not_just_the_first(app_env: Path) -> None:
    (app_env / "a.yaml").write_text(job(f"{TARGET}\ntrigger: {{interval: 0}}\ntimeout: nope"))
    (app_env / "b.yaml").write_text("")
    result = CliRunner().invoke(main, ["validate", "."])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert any("a.yaml:4" in ln and "trigger.interval" in ln for ln in lines), lines
    assert any("a.yaml:5" in ln and "timeout" in ln for ln in lines), lines
    assert any("b.yaml:1" in ln for ln in lines), lines


def test_json_errors_follow_the_contract(app_env: Path) -> None:
    (app_env / "a.yaml").write_text(job(f"{TARGET}\ntrigger: {{cron: '61 * * * *'}}"))
    result = CliRunner().invoke(main, ["validate", ".", "--output", "json"])
    assert result.exit_code == 1
    import json

    body = json.loads(result.stdout)
    assert body["valid"] is False
    assert body["jobs"] == []
    [error] = body["errors"]
    assert set(error) == {"file", "line", "column", "job", "field", "message"}
    assert error["job"] == "j1" and error["field"] == "trigger.cron" and error["line"] == 4


def test_an_empty_folder_is_an_error_not_a_deletion(app_env: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "."])
    assert result.exit_code == 1
    assert "no job files" in result.stderr and "jobs: []" in result.stderr
    (app_env / "none.yaml").write_text("jobs: []\n")
    result = CliRunner().invoke(main, ["validate", "."])
    assert result.exit_code == 0, result.stderr
    assert "0 job(s) in 1 file(s) are valid." in result.stdout
