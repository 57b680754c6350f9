"""Command jobs in the model and the allowlist: a YAML author runs only what the operator listed.

The allowlist is checked at validate time (FILE:LINE:COL: job ID: command: ...) and names
only absolute paths; a job names a program by that exact path or by a bare name looked up
in the list alone, so no relative path, `..` detour, symlink or working directory of the
author's can stand in for an allowed program.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner import commands
from runner.cli import main
from runner.commands import CommandError, allowlist, executable
from runner.jobfiles import parse_file
from runner.models import Job, JobEntry, JobFields, Trigger, resolve
from runner.plan import Desired

ECHO = "/bin/echo"


def job_text(command: str) -> str:
    return f"jobs:\n  - id: c\n    command: {command}\n    trigger: {{interval: 1h}}\n"


def validate(tmp_path: Path, text: str, allowed: str | None) -> tuple[int, list[str]]:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    env = {commands.ENV_ALLOWED: allowed} if allowed is not None else {}
    result = CliRunner().invoke(main, ["validate", str(path)], env=env)
    if allowed is None:
        assert commands.ENV_ALLOWED not in os.environ
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("error:")]
    return result.exit_code, [ln.replace(str(path), "c.yaml") for ln in lines]


# --- the model -------------------------------------------------------------------------------


def test_a_command_job_is_stored_with_its_argv_and_no_target() -> None:
    jobs, problems = parse_file("f.yaml", job_text('[echo, "${GREETING}", "a b"]').encode())
    assert problems == []
    job = jobs[0].job
    assert job.command == ["echo", "${GREETING}", "a b"] and job.target is None
    spec = Desired.of(jobs[0]).spec
    assert spec["command"] == ["echo", "${GREETING}", "a b"]
    assert not {"target", "args", "kwargs"} & set(spec)
    assert job.program == "echo '${GREETING}' 'a b'"


def test_a_target_job_keeps_its_spec_unchanged() -> None:
    """No `command` key in a target job's spec, so existing specs keep their hash."""
    job = Job(id="j", target="m:f", trigger=Trigger(interval=60))
    assert "command" not in job.canonical() and job.canonical()["args"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[echo]\n    target: m:f", "give either target or command, not both"),
        ("[echo]\n    args: [1]", "a command takes its arguments in command"),
        ("[echo]\n    kwargs: {a: 1}", "a command takes its arguments in command"),
        ("[]", "at least 1 item"),
        ("[./evil.sh]", "'./evil.sh' is a relative path"),
        ("[bin/evil]", "'bin/evil' is a relative path"),
        ("['']", "'' is a relative path"),
        ('[echo, "a\\0b"]', "NUL"),
        ("[echo, 5]", "string"),
        ("echo hi", "list"),
    ],
)
def test_malformed_commands_are_located_errors(body: str, message: str) -> None:
    jobs, problems = parse_file("f.yaml", job_text(body).encode())
    assert jobs == [] and len(problems) == 1, problems
    assert str(problems[0]).startswith("f.yaml:"), problems
    assert message in str(problems[0]), problems


def test_command_is_a_job_field_not_a_default() -> None:
    text = "defaults:\n  command: [echo]\njobs:\n  - id: c\n    trigger: {interval: 1h}\n"
    _, problems = parse_file("f.yaml", text.encode())
    assert any("unknown key 'command'" in str(p) for p in problems), problems


def test_a_command_job_does_not_inherit_the_defaults_target_or_its_arguments() -> None:
    defaults = JobFields(target="m:f", args=[1], kwargs={"a": 1}, timeout=30)
    entry = JobEntry(id="c", command=["echo"], trigger=Trigger(interval=60))
    job = resolve(entry, defaults)
    assert (job.command, job.target, job.args, job.kwargs) == (["echo"], None, [], {})
    assert job.timeout == 30  # every other default still applies
    target_job = resolve(JobEntry(id="t", trigger=Trigger(interval=60)), defaults)
    assert target_job.target == "m:f" and target_job.args == [1]


def test_a_job_needs_a_target_or_a_command() -> None:
    _, problems = parse_file("f.yaml", b"jobs:\n  - id: j\n    trigger: {interval: 1h}\n")
    assert [p.message for p in problems] == ["target is required (or command)"]


# --- the allowlist ---------------------------------------------------------------------------


def test_allowlist_entries_are_absolute_paths_split_on_commas_and_pathsep() -> None:
    setting = f" /bin/echo, /usr/bin/env{os.pathsep}/bin/sh ,"
    assert allowlist({commands.ENV_ALLOWED: setting}) == ("/bin/echo", "/usr/bin/env", "/bin/sh")
    assert allowlist({}) == ()
    with pytest.raises(CommandError, match="'echo' is not an absolute path"):
        allowlist({commands.ENV_ALLOWED: "/bin/sh,echo"})


def test_a_program_is_the_exact_path_or_a_bare_name_of_one_entry() -> None:
    allowed = ("/bin/echo", "/usr/bin/env")
    assert executable("/bin/echo", allowed) == "/bin/echo"
    assert executable("echo", allowed) == "/bin/echo"
    assert executable("env", allowed) == "/usr/bin/env"


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ("/bin/../bin/echo", "is not allowed"),  # the same file, but not the operator's spelling
        ("/usr/bin/../../bin/sh", "is not allowed"),
        ("/bin/sh", "is not allowed"),
        ("sh", "is not allowed"),  # never looked up on PATH
        ("./echo", "relative path"),
        ("bin/echo", "relative path"),
        ("..", "relative path"),
        ("echo/", "relative path"),
    ],
)
def test_anything_else_is_refused(program: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        executable(program, ("/bin/echo",))


def test_a_symlink_to_an_allowed_program_is_not_that_program(tmp_path: Path) -> None:
    link = tmp_path / "echo"
    link.symlink_to(ECHO)
    with pytest.raises(CommandError, match="is not allowed"):
        executable(str(link), (ECHO,))
    # and a bare name never finds the author's file, wherever the author put it
    assert executable("echo", (ECHO,)) == ECHO


def test_a_name_two_entries_share_must_be_written_in_full() -> None:
    with pytest.raises(CommandError, match="ambiguous"):
        executable("python3", ("/usr/bin/python3", "/opt/py/bin/python3"))
    assert executable("/opt/py/bin/python3", ("/usr/bin/python3", "/opt/py/bin/python3"))


def test_without_the_setting_every_command_is_refused_naming_it() -> None:
    with pytest.raises(CommandError, match=f"disabled.*{commands.ENV_ALLOWED}"):
        executable("/bin/echo", ())


# --- validate --------------------------------------------------------------------------------


def test_validate_refuses_every_command_when_commands_are_disabled(tmp_path: Path) -> None:
    code, lines = validate(tmp_path, job_text("[/bin/echo, hi]"), None)
    assert code == 1
    assert lines == [
        "c.yaml:3:5: job c: command: command jobs are disabled: the operator enables them by "
        f"listing the programs they may run in {commands.ENV_ALLOWED} (absolute paths, "
        "comma-separated)"
    ]


def test_validate_locates_a_program_not_allowed(tmp_path: Path) -> None:
    text = (
        job_text("[/bin/echo, hi]")
        + "  - id: d\n    command: [rm, -rf, /]\n    trigger: {cron: '@daily'}\n"
    )
    code, lines = validate(tmp_path, text, ECHO)
    assert code == 1
    assert lines == [
        f"c.yaml:6:5: job d: command: 'rm' is not allowed ({commands.ENV_ALLOWED}: /bin/echo)"
    ]
    assert validate(tmp_path, job_text("[echo, hi]"), ECHO) == (0, [])


def test_validate_refuses_the_runners_own_settings_and_an_interpolated_program(
    tmp_path: Path,
) -> None:
    code, lines = validate(tmp_path, job_text('["${PROGRAM}", "${RUNNER_DATABASE_URL}"]'), ECHO)
    assert code == 1
    assert any("'${PROGRAM}' is not allowed" in ln for ln in lines), lines
    assert any("never interpolated" in ln for ln in lines), lines
    assert any("RUNNER_DATABASE_URL is not allowed for jobs" in ln for ln in lines), lines


def test_a_bad_allowlist_entry_is_reported_on_each_command_job(tmp_path: Path) -> None:
    code, lines = validate(tmp_path, job_text("[echo]"), "echo")
    assert code == 1 and len(lines) == 1
    assert "RUNNER_ALLOWED_COMMANDS entry 'echo' is not an absolute path" in lines[0]
