"""Targets with the shapes real jobs have: sync, async, failing, slow, recording."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

NOT_CALLABLE = 42
CALLS = os.environ.get("SAMPLEAPP_CALLS", "")


def _record(name: str, **fields: object) -> None:
    """Append one JSON line per call so a test in another process can see what ran."""
    path = os.environ.get("SAMPLEAPP_CALLS")
    if path:
        line = {
            "name": name,
            "at": datetime.now(UTC).isoformat(),
            "pid": os.getpid(),
            # Sync targets run in a child process of the runner: this is the runner's pid.
            "ppid": os.getppid(),
            **fields,
        }
        with Path(path).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def send_report(recipients: list[str], subject: str = "report") -> None:
    _record("send_report", recipients=recipients, subject=subject)


def tick(label: str = "tick") -> None:
    _record("tick", label=label)


async def async_tick(label: str = "async") -> None:
    await asyncio.sleep(0)
    _record("async_tick", label=label)


def slow(seconds: float = 1.0, label: str = "slow") -> None:
    _record("slow_start", label=label)
    time.sleep(seconds)
    _record("slow_end", label=label)


async def async_slow(seconds: float = 1.0, label: str = "async_slow") -> None:
    _record("async_slow_start", label=label)
    await asyncio.sleep(seconds)
    _record("async_slow_end", label=label)


def flaky(fail_times: int = 2, marker: str = "flaky") -> None:
    """Fails the first `fail_times` calls (counted in a file beside SAMPLEAPP_CALLS)."""
    counter = Path(os.environ["SAMPLEAPP_CALLS"] + f".{marker}.count")
    count = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(count + 1))
    _record("flaky", attempt=count + 1)
    if count < fail_times:
        raise RuntimeError(f"flaky failure {count + 1}")


def boom() -> None:
    _record("boom")
    raise ValueError("boom")


def echo_env(value: str) -> None:
    _record("echo_env", value=value)
