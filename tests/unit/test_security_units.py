"""The small rules the security model rests on, each checked on its own."""

from __future__ import annotations

import pytest

from runner import interpolate
from runner.durations import parse_duration
from runner.errors import Problem, printable
from runner.history import MAX_ERROR, MAX_TRACEBACK, recorded_error, recorded_traceback
from runner.http.guard import host_allowed
from runner.store.engine import masked


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("postgresql://u:hunter2@h/db", "hunter2"),
        ("postgresql://u@h/db?password=hunter2", "hunter2"),
        ("postgresql://u@h/db?sslpassword=hunter2&sslmode=require", "hunter2"),
        ("postgresql://u:pw@h:notaport/db", "pw"),
    ],
)
def test_masked_urls_hide_every_password(url: str, hidden: str) -> None:
    assert hidden not in masked(url)


def test_masked_keeps_what_helps() -> None:
    shown = masked("postgresql://u@h/db?password=x&sslmode=require")
    assert shown == "postgresql://u@h/db?password=***&sslmode=require"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("10.1.2.3", True),
        ("localhost:8080", True),
        ("LOCALHOST.", True),
        ("evil.example:8080", False),
        ("localhost.evil.example", False),
        ("", False),
        (None, False),
        ("runner.internal", True),
    ],
)
def test_hosts(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, {"RUNNER_HTTP_HOSTS": "runner.internal"}) is allowed


def test_variables_follow_the_allowlist_and_never_the_runners_own() -> None:
    env = {"RUNNER_JOB_ENV": "APP_*,ONE", "APP_X": "a", "ONE": "1", "TWO": "2"}
    env["RUNNER_HTTP_TOKEN"] = "t"
    assert interpolate.resolve_text("${APP_X}${ONE}", env) == "a1"
    for name in ("TWO", "RUNNER_HTTP_TOKEN"):
        with pytest.raises(interpolate.ForbiddenVariable, match=f"{name} is not allowed"):
            interpolate.resolve_text(f"${{{name}}}", env)
    everything = {**env, "RUNNER_JOB_ENV": "*"}
    assert interpolate.resolve_text("${TWO}", everything) == "2"
    with pytest.raises(interpolate.ForbiddenVariable):
        interpolate.resolve_text("${RUNNER_HTTP_TOKEN}", everything)


def test_redaction_covers_escaped_and_encoded_spellings() -> None:
    secret = 'a b\\c\n"d/é'
    text = " | ".join(sorted(interpolate.spellings(secret)))
    assert interpolate.redact(text, {secret}) == " | ".join(["***"] * text.count(" | ") + ["***"])


def test_one_line_text() -> None:
    assert printable("a\nb\x00c\x1b") == "a\\nb\\x00c\\x1b"
    problem = Problem("f.yaml", 1, 2, "x\ny", None, "bad\rthing")
    assert "\n" not in str(problem) and "\r" not in str(problem)


def test_recorded_errors_are_bounded_and_one_line() -> None:
    error = recorded_error("E: " + "x\n" * 1_000_000)
    assert error is not None and len(error) <= MAX_ERROR and "\n" not in error
    trace = recorded_traceback("start\n" + "y" * 10_000_000 + "\nValueError: end")
    assert trace is not None and len(trace) < MAX_TRACEBACK + 100
    assert trace.startswith("start") and trace.endswith("ValueError: end")


def test_durations_are_bounded() -> None:
    assert parse_duration("3650d") == 3650 * 86400
    with pytest.raises(ValueError, match="at most 3650d"):
        parse_duration(999_999_999_999)
