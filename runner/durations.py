"""Durations as users write them: `90`, `90s`, `15m`, `1h30m`, `2d`."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")
MAX_SECONDS = 3650 * 86400
"""Ten years: longer is a typo, and would overflow date arithmetic far from the file."""


def parse_duration(value: object) -> int:
    """Return whole seconds; reject zero, negatives and anything ambiguous."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 15m, 1h30m or 2d, got a boolean")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text.isdigit():
            seconds = int(text)
        elif _WHOLE.fullmatch(text):
            units = [unit for _, unit in _PART.findall(text)]
            if len(set(units)) != len(units) or units != sorted(units, key="dhms".index):
                raise ValueError(f"{value!r}: units must appear once each, largest first")
            seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 15m, 1h30m or 2d")
    else:
        raise ValueError(f"expected a duration like 30s, 15m, 1h30m or 2d, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{value!r}: a duration may be at most {MAX_SECONDS // 86400}d")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest canonical spelling, so plans and diffs read like the files."""
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def roughly(seconds: float) -> str:
    """An elapsed time in its largest unit (`2527d`, `5h`, `12m`, `4.2s`), for messages."""
    for unit, size in _UNIT_SECONDS.items():
        if seconds >= size * (1 if unit == "s" else 2) and unit != "s":
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.1f}s" if seconds < 10 else f"{int(seconds)}s"
