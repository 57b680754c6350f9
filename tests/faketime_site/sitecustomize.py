"""Loaded only into processes the tests run under libfaketime (see tests/timetravel.py).

libfaketime 0.9.10 (Debian 12) with a real monotonic clock answers EINVAL to
clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which is how Python's `time.sleep` waits;
condition-variable waits (`threading.Event.wait`) are unaffected. This routes `time.sleep`
through one, so the process under test behaves as it does on a real host.
"""

from __future__ import annotations

import threading
import time

_real_sleep = time.sleep


def _sleep(seconds: float) -> None:
    try:
        _real_sleep(seconds)
    except OSError:
        threading.Event().wait(seconds)


time.sleep = _sleep
