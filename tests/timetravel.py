"""Real `runner serve` processes on a clock of the test's choosing, through libfaketime.

libfaketime (Debian package `faketime`) replaces the process's wall clock; the monotonic
clock stays real (`FAKETIME_DONT_FAKE_MONOTONIC`), so waits and timeouts behave as on a
host whose clock says that date. With `FAKETIME_TIMESTAMP_FILE` the offset is re-read from a
file, so a test can step a running server's clock, as an NTP correction does.
"""

from __future__ import annotations

import glob
import os
from datetime import UTC, datetime
from pathlib import Path

SITE = Path(__file__).resolve().parent / "faketime_site"

LIBRARY_GLOBS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def library() -> str:
    """The preload library; missing it is a failure, not a skip (`.ci/run` installs it)."""
    for pattern in LIBRARY_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise AssertionError(
        "libfaketime is not installed (apt-get install faketime); the DST serve tests need it"
    )


def _with_site(env: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    path = base.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), path) if p)
    return env


def starting_at(moment: datetime, base: dict[str, str]) -> dict[str, str]:
    """`base` for a process whose wall clock starts at `moment` and then runs."""
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return _with_site(
        dict(base)
        | {
            "LD_PRELOAD": library(),
            "FAKETIME": f"@{stamp}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1",
            "TZ": "UTC",
        },
        base,
    )


def offset_file(path: Path, base: dict[str, str], seconds: int = 0) -> dict[str, str]:
    """`base` for a process whose clock is the host's plus the offset in `path`; `step`
    changes it while the process runs."""
    step(path, seconds)
    return _with_site(
        dict(base)
        | {
            "LD_PRELOAD": library(),
            "FAKETIME_TIMESTAMP_FILE": str(path),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "TZ": "UTC",
        },
        base,
    )


def step(path: Path, seconds: int) -> None:
    path.write_text(f"{seconds:+d}\n", encoding="ascii")
