"""Real `runner serve` processes on a clock of the test's choosing, through libfaketime.

libfaketime (Debian package `faketime`) replaces the process's wall clock; the monotonic
clock stays real (`FAKETIME_DONT_FAKE_MONOTONIC`), so waits and timeouts behave as on a
host whose clock says that date. With `FAKETIME_TIMESTAMP_FILE` the offset is re-read from a
file, so a test can step a running server's clock, as an NTP correction does.
"""

from __future__ import annotations

import glob
from datetime import UTC, datetime
from pathlib import Path

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


def starting_at(moment: datetime) -> dict[str, str]:
    """Environment for a process whose wall clock starts at `moment` and then runs."""
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return {
        "LD_PRELOAD": library(),
        "FAKETIME": f"@{stamp}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
        "TZ": "UTC",
    }


def offset_file(path: Path, seconds: int = 0) -> dict[str, str]:
    """Environment for a process whose clock is the host's plus the offset in `path`;
    `step` changes it while the process runs."""
    step(path, seconds)
    return {
        "LD_PRELOAD": library(),
        "FAKETIME_TIMESTAMP_FILE": str(path),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "TZ": "UTC",
    }


def step(path: Path, seconds: int) -> None:
    path.write_text(f"{seconds:+d}\n", encoding="ascii")
