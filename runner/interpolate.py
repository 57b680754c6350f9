"""`${VAR}` in args and kwargs, resolved from the running process's environment at run time.

Secrets stay out of job files and out of the store: the stored spec keeps the `${VAR}` text,
and the resolved value exists only in the call. Values taken from the environment are
collected so an error message that quotes them can be redacted before it is recorded.

`${VAR:-default}` uses the default when VAR is unset or empty, as the shell does; `$$` is a
literal `$`. A value is not interpolated again.

A job reads only the variables the operator lists in `RUNNER_JOB_ENV` (comma-separated
names, `PREFIX_*` for a prefix), never the runner's own `RUNNER_*` settings (its database
URL, its HTTP token): the author of a job file is not trusted with the process environment.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


ENV_JOB_ENV = "RUNNER_JOB_ENV"
OWN_PREFIX = "RUNNER_"


class MissingVariable(LookupError):
    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"environment variable {name} is not set and has no default")
        self.name = name


class ForbiddenVariable(MissingVariable):
    """The variable exists or not, but a job may not read it."""

    def __init__(self, name: str) -> None:
        if name.startswith(OWN_PREFIX):
            why = f"{OWN_PREFIX}* variables are the runner's own settings and never given to jobs"
        else:
            why = f"add it to {ENV_JOB_ENV} (comma-separated names, PREFIX_* for a prefix)"
        super().__init__(name, f"environment variable {name} is not allowed for jobs: {why}")


def variable_allowed(name: str, environ: Mapping[str, str]) -> bool:
    if name.startswith(OWN_PREFIX):
        return False
    for entry in environ.get(ENV_JOB_ENV, "").split(","):
        entry = entry.strip()
        if entry.endswith("*") and name.startswith(entry[:-1]):
            return True
        if entry == name:
            return True
    return False


REDACTED = "***"
MIN_REDACTED = 4
"""Shorter values are not redacted: hiding every `1` or `on` in a message would garble it."""


def resolve_text(text: str, environ: Mapping[str, str], used: set[str] | None = None) -> str:
    if "$" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if not variable_allowed(name, environ):
            raise ForbiddenVariable(name)
        value = environ.get(name)
        if default is not None and not value:  # as in the shell: unset or empty
            return default
        if value is None:
            raise MissingVariable(name)
        if used is not None:
            used.add(value)
        _remember(value)
        return value

    return _TOKEN.sub(substitute, text)


def own_settings_named(value: Any) -> list[str]:
    """The runner's own `RUNNER_*` variables a JSON value refers to, which no job may read:
    `validate` can refuse them without knowing the environment jobs will run in."""
    if isinstance(value, str):
        if "${" + OWN_PREFIX not in value:
            return []
        return [
            m.group(1)
            for m in _TOKEN.finditer(value)
            if m.group(1) and m.group(1).startswith(OWN_PREFIX)
        ]
    if isinstance(value, list):
        return [name for item in value for name in own_settings_named(item)]
    if isinstance(value, dict):
        return [name for item in value.values() for name in own_settings_named(item)]
    return []


def resolve(value: Any, environ: Mapping[str, str], used: set[str] | None = None) -> Any:
    """A copy of a JSON value with every string interpolated (keys are left alone).

    `used` collects the values taken from the environment.
    """
    if isinstance(value, str):
        return resolve_text(value, environ, used)
    if isinstance(value, list):
        return [resolve(item, environ, used) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, environ, used) for key, item in value.items()}
    return value


_resolved: set[str] = set()
_resolved_lock = threading.Lock()


def _remember(value: str) -> None:
    if len(value) >= MIN_REDACTED and value not in _resolved:
        with _resolved_lock:
            _resolved.add(value)


def resolved_values() -> frozenset[str]:
    """Every value this process has handed to a job from the environment, so that logs and
    the history can hide them wherever a job put them (a target may log its arguments)."""
    with _resolved_lock:
        return frozenset(_resolved)


def spellings(secret: str) -> set[str]:
    """The ways a value shows up in text: as is, inside `repr()` or JSON (newlines and
    backslashes escaped), and URL-encoded."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    return {form for form in forms if len(form) >= MIN_REDACTED}


def redact(text: str | None, secrets: Iterable[str]) -> str | None:
    """`text` with every environment value that went into the call replaced by `***`."""
    if not text:
        return text
    forms = {
        form for secret in secrets if len(secret) >= MIN_REDACTED for form in spellings(secret)
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text
