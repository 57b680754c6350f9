"""`${VAR}` in args and kwargs, resolved from the running process's environment at run time.

Secrets stay out of job files and out of the store: the stored spec keeps the `${VAR}` text,
and the resolved value exists only in the call.
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


def resolve_text(text: str, environ: Mapping[str, str]) -> str:
    if "$" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise MissingVariable(name)

    return _TOKEN.sub(substitute, text)


def resolve(value: Any, environ: Mapping[str, str]) -> Any:
    """A copy of a JSON value with every string interpolated."""
    if isinstance(value, str):
        return resolve_text(value, environ)
    if isinstance(value, list):
        return [resolve(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, environ) for key, item in value.items()}
    return value
