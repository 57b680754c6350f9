"""`${VAR}` in args and kwargs, resolved from the running process's environment at run time.

Secrets stay out of job files and out of the store: the stored spec keeps the `${VAR}` text,
and the resolved value exists only in the call. Values taken from the environment are
collected so an error message that quotes them can be redacted before it is recorded.

`${VAR:-default}` uses the default when VAR is unset or empty, as the shell does; `$$` is a
literal `$`. A value is not interpolated again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class MissingVariable(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name} is not set and has no default")
        self.name = name


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
