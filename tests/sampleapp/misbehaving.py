"""Targets that misbehave the ways a careless or hostile job can: each must be one failed run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from sampleapp.jobs import _record


class Custom(BaseException):
    """Not an Exception: escapes every `except Exception`."""


async def async_exit(code: int = 4) -> None:
    _record("async_exit")
    sys.exit(code)


async def async_custom() -> None:
    _record("async_custom")
    raise Custom("custom base exception")


async def async_cancelled() -> None:
    _record("async_cancelled")
    raise asyncio.CancelledError


async def async_stray_exit() -> None:
    """Leaves behind a task of its own that calls sys.exit() on the runner's event loop."""

    async def later() -> None:
        sys.exit(5)

    _record("async_stray_exit")
    asyncio.get_running_loop().create_task(later())


def sync_exit(code: int = 4) -> None:
    _record("sync_exit")
    sys.exit(code)


def sync_custom() -> None:
    _record("sync_custom")
    raise Custom("custom base exception")


def sync_dies() -> None:
    _record("sync_dies")
    os._exit(3)


def hang(label: str = "hang") -> None:
    _record("hang_start", label=label)
    time.sleep(3600)


def hang_with_grandchild() -> None:
    """Starts a process of its own, then hangs: a timeout must end both."""
    grandchild = subprocess.Popen(["sleep", "3600"])
    _record("grandchild", grandchild=grandchild.pid)
    time.sleep(3600)
