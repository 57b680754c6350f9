"""`${VAR}`, `${VAR:-default}` and `$$` in args and kwargs."""

from __future__ import annotations

import pytest

from runner.interpolate import MissingVariable, redact, resolve, resolve_text

ENV = {
    "HOST": "db.example.com",
    "PORT": "5432",
    "EMPTY": "",
    "TOKEN": "abc${HOST}",
    "RUNNER_JOB_ENV": "HOST,PORT,EMPTY,TOKEN,MISSING,NOPE",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ("${HOST}", "db.example.com"),
        ("postgres://${HOST}:${PORT}/x", "postgres://db.example.com:5432/x"),
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${MISSING:-a:b/c d}", "a:b/c d"),
        ("${HOST:-unused}", "db.example.com"),
        # As in the shell, `:-` also replaces a variable that is set but empty.
        ("${EMPTY:-default}", "default"),
        ("[${EMPTY}]", "[]"),
        ("$$", "$"),
        ("cost: $$5", "cost: $5"),
        ("$${HOST}", "${HOST}"),
        ("$$$${HOST}", "$${HOST}"),
        ("$$${HOST}", "$db.example.com"),
        # Not variable references: left as written.
        ("$HOST", "$HOST"),
        ("a $ b", "a $ b"),
        ("${HOST", "${HOST"),
        ("${1X}", "${1X}"),
        # A resolved value is not interpolated again.
        ("${TOKEN}", "abc${HOST}"),
    ],
)
def test_resolve_text(text: str, expected: str) -> None:
    assert resolve_text(text, ENV) == expected


def test_unset_variable_without_default_is_an_error() -> None:
    with pytest.raises(MissingVariable) as caught:
        resolve_text("x${NOPE}y", ENV)
    assert caught.value.name == "NOPE"
    assert str(caught.value) == "environment variable NOPE is not set and has no default"


def test_resolve_walks_json_values_and_leaves_keys_and_non_strings() -> None:
    value = {
        "url": "http://${HOST}",
        "${HOST}": 1,
        "nested": [{"port": "${PORT}"}, 3, 2.5, True, None, ["$$"]],
    }
    assert resolve(value, ENV) == {
        "url": "http://db.example.com",
        "${HOST}": 1,
        "nested": [{"port": "5432"}, 3, 2.5, True, None, ["$"]],
    }
    assert value["url"] == "http://${HOST}", "the input is not modified"


def test_resolve_collects_environment_values_not_defaults() -> None:
    used: set[str] = set()
    resolve(["${HOST}", "${MISSING:-literal}", {"p": "${PORT}"}], ENV, used)
    assert used == {"db.example.com", "5432"}


def test_redact_hides_collected_values() -> None:
    secrets = {"hunter22", "db.example.com", "on"}
    assert redact("login hunter22 at db.example.com: on", secrets) == "login *** at ***: on"
    assert redact(None, secrets) is None
    assert redact("", secrets) == ""


def test_redact_prefers_longer_values() -> None:
    assert redact("abcdefgh", {"abcd", "abcdefgh"}) == "***"
