"""Resolve `module:attribute` targets, and keep YAML authors away from dangerous callables.

A target is allowed only when the module that really defines the resolved object (not the
string the author wrote: `logging.os:system` is `posix.system`) lies under an allowed
prefix. Allowed prefixes come from `RUNNER_ALLOWED_TARGETS` (comma-separated); the runner's
own `runner.tasks` is always allowed.

The working directory is never put on `sys.path`: a job repository holding `psycopg2.py` or
`uvicorn.py` would otherwise replace the real modules inside `apply` and `serve`. Only the
top-level packages of the allowed prefixes may be found there, and only when nothing
installed already provides them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

BUILTIN_PREFIXES = ("runner.tasks",)
ENV_ALLOWED = "RUNNER_ALLOWED_TARGETS"


class TargetError(ValueError):
    """The target cannot be used; the message says why and what to do."""


def allowed_prefixes(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    extra = [p.strip() for p in environ.get(ENV_ALLOWED, "").split(",") if p.strip()]
    return (*BUILTIN_PREFIXES, *extra)


def split_target(target: str) -> tuple[str, str]:
    if ":" in target:
        module, _, attribute = target.partition(":")
        return module, attribute
    module, _, attribute = target.rpartition(".")
    if not module:
        raise TargetError(f"{target!r} names no module; write module:attribute")
    return module, attribute


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def check_allowed_name(target: str, prefixes: Sequence[str]) -> None:
    """The import-free check `validate --no-import` can still make."""
    module, _ = split_target(target)
    if not _under(module, prefixes):
        raise TargetError(_not_allowed(module, prefixes))


def _not_allowed(module: str, prefixes: Sequence[str]) -> str:
    return (
        f"module {module!r} is not allowed (allowed: {', '.join(prefixes)}); "
        f"add its package to {ENV_ALLOWED}"
    )


class _WorkingDirectoryFinder(importlib.abc.MetaPathFinder):
    """Finds the allowed top-level packages in the working directory, and nothing else.

    It sits last on `sys.meta_path`, so an installed module always wins over a file there.
    """

    def __init__(self) -> None:
        self.allowed: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None or fullname not in self.allowed:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [os.getcwd()])


_finder = _WorkingDirectoryFinder()


def _allow_from_working_directory(prefixes: Iterable[str]) -> None:
    _finder.allowed.update(p.split(".")[0] for p in prefixes if p)
    if _finder not in sys.meta_path:
        sys.meta_path.append(_finder)


def resolve(target: str, prefixes: Sequence[str]) -> Callable[..., Any]:
    """Import and return the callable, or raise TargetError saying why not."""
    check_allowed_name(target, prefixes)
    module_name, attribute = split_target(target)
    _allow_from_working_directory([module_name.split(".")[0]])
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise TargetError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(obj) or inspect.ismodule(obj):
        raise TargetError(f"{target!r} is not callable")
    real_module = getattr(obj, "__module__", None) or type(obj).__module__
    if not isinstance(real_module, str) or not _under(real_module, prefixes):
        raise TargetError(
            f"{target!r} resolves to {real_module}.{getattr(obj, '__qualname__', '?')}, "
            f"{_not_allowed(str(real_module), prefixes)}"
        )
    return obj  # type: ignore[no-any-return]


def check_call(func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Fail now, not at 3 a.m., when the arguments cannot bind to the signature."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TargetError(f"arguments do not match {func.__name__}{signature}: {exc}") from None
