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

import re
from collections.abc import Mapping
from typing import Any

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
        return value

    return _TOKEN.sub(substitute, text)


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


def redact(text: str | None, secrets: set[str]) -> str | None:
    """`text` with every environment value that went into the call replaced by `***`."""
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_REDACTED:
            text = text.replace(secret, REDACTED)
    return text
