"""crontab(5) schedules evaluated like Debian cron, and an APScheduler 3 trigger using them.

The behaviour is that of Debian cron as the ``cronsim`` package implements it (cronsim is the
reference the test-suite checks against; it is not imported here).

Expressions
-----------
* 5 fields ``minute hour day month day_of_week`` or 6 fields with the SECONDS FIRST
  ``second minute hour day month day_of_week``.
* Macros (case-insensitive): ``@hourly`` = ``0 * * * *``, ``@daily``/``@midnight`` =
  ``0 0 * * *``, ``@weekly`` = ``0 0 * * 0``, ``@monthly`` = ``0 0 1 * *``,
  ``@yearly``/``@annually`` = ``0 0 1 1 *``.  ``@reboot`` is rejected (there is no boot).
* A mapping ``{second, minute, hour, day, month, day_of_week}`` is turned into a 6-field
  expression by :func:`mapping_to_expression` (second defaults to ``0``, the rest to ``*``).
  Being 6-field, such jobs follow the wall clock across DST changes (see below).
* Items: ``*``, ``n``, ``a-b``, ``*/s``, ``a-b/s``, ``a/s`` (= ``a-max/s``), and lists of them.
  Names ``jan``-``dec`` and ``sun``-``sat`` are accepted case-insensitively wherever a number
  of that field is.  Day-of-week 0 and 7 are both Sunday.  Quirks kept from Debian
  cron/cronsim: any step >= 1 is accepted (``*/90`` in minutes means minute 0).  A one-value
  range with a step, ``a-a/s``, is that one value, as the step runs through the range (cronsim
  before 2.9 read it as ``a/s``).  Backward ranges (``fri-mon``) are errors.
* Special characters, exactly where cronsim supports them:

  - day: ``L`` (last day of the month) and ``LW`` (last weekday, Mon-Fri, of the month);
    a step after them is accepted and ignored (``L/2`` = ``L``).
  - day_of_week: ``nL`` (last weekday *n* of the month, numbers only: ``5L`` = last Friday)
    and ``n#k`` (the k-th weekday *n* of the month, k = 1-5; names allowed: ``mon#2``).
  - Everything else is rejected with a message: ``W`` (nearest weekday, e.g. ``15W``), ``?``,
    ``H``, a year field, ``L``/``#`` in other fields.

* Day of month vs day of week (Debian's rule): if either field *starts with* ``*`` (so also
  ``*/2``) a day must match both; otherwise (both restricted) a day matching either runs.
* Expressions that can never fire (``0 0 30 2 *``, ``0 0 31 4,6,9,11 *``, ``0 0 */5 2 mon#5``)
  are rejected (``never fires: ...``).  February 29 exists, so ``0 0 29 2 *`` is valid.

Time zones and DST
------------------
Schedules are evaluated in an IANA zone.  A 5-field expression whose minute and hour fields
both do *not* start with ``*`` is a "fixed time" job (e.g. ``30 2 * * *``, ``0 0-23/2 * * *``,
``@daily``): it is matched against the local wall clock, and

* a local time skipped by a DST jump runs at the first existing minute after it
  (2:30 on a 2:00 -> 3:00 night runs at 3:00);
* a local time that happens twice runs only the first time.

Every other job (wildcard or ``*``-stepped minute or hour, and every 6-field expression)
follows the wall clock: it runs at each instant whose local time matches, so times in a
skipped hour do not run and times in a repeated hour run twice.  Mirroring cronsim, the hour,
minute and second searches step in absolute time, which leads to its exact results in
zones with 30-minute shifts (Australia/Lord_Howe) or transitions at odd minutes
(Pacific/Chatham).

Where cronsim goes back in time we do not: :meth:`CronSchedule.next_after` always returns a
time strictly after ``after``.  This matters in two rare cases only:

* a fixed-time job searched from inside the second pass of a repeated hour: cronsim may
  answer with a first-pass time, already past; we skip to the next run;
* a wall-clock job right after a DST change that is not a whole hour at the top of an hour
  (Pacific/Chatham, Australia/Lord_Howe falling back; the 1998 America/St_Johns change that
  turned the date back): cronsim's restart from the top of the hour (or from midnight) can
  land before the change and return an earlier time or loop; we continue with the next
  instant whose local time matches.
"""

from __future__ import annotations

import difflib
import functools
import random
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger

__all__ = [
    "FIELD_NAMES",
    "MACROS",
    "CronError",
    "CronSchedule",
    "CrontabTrigger",
    "mapping_to_expression",
    "parse",
]


class CronError(ValueError):
    """An invalid crontab expression; the message names the field and what is allowed."""


FIELD_NAMES: Final = ("second", "minute", "hour", "day", "month", "day_of_week")

MACROS: Final[Mapping[str, str]] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# How far ahead a search may look.  Every expression that passes validation fires at least
# once in any 40 years (the rarest is February 29 on a given weekday); this is only a bound.
_SEARCH_YEARS: Final = 400
_LAST_YEAR: Final = 9998

_ONE_SECOND: Final = timedelta(seconds=1)
_ONE_MINUTE: Final = timedelta(minutes=1)
_ONE_HOUR: Final = timedelta(hours=1)
_ONE_DAY: Final = timedelta(days=1)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)

_MONTH_DAYS: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# _WEEK_BITS[d]: bit d, d + 7, d + 14, ... (up to 31) set.
_WEEK_BITS: Final = tuple(sum(1 << d for d in range(first, 32, 7)) for first in range(32))


def _dow_table(weekdays: int) -> tuple[int, ...]:
    """For each weekday of the 1st (Python numbering): the days of a 31-day month that fall
    on one of `weekdays` (bit 0 = Monday)."""
    return tuple(
        sum(_WEEK_BITS[1 + (w - first) % 7] for w in range(7) if weekdays >> w & 1)
        for first in range(7)
    )


_DOW_BITS: Final = tuple(_dow_table(weekdays) for weekdays in range(128))


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: Mapping[str, int]
    kind: str  # "month"/"day" when names are accepted


_DOW_NAMES: Final = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTH_NAMES: Final = (
    *("JAN", "FEB", "MAR", "APR", "MAY", "JUN"),
    *("JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
)

_SECOND_F: Final = _Field("second", 0, 59, {}, "")
_MINUTE_F: Final = _Field("minute", 0, 59, {}, "")
_HOUR_F: Final = _Field("hour", 0, 23, {}, "")
_DAY_F: Final = _Field("day", 1, 31, {}, "")
_MONTH_F: Final = _Field("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTH_NAMES)}, "month")
_DOW_F: Final = _Field("day_of_week", 0, 7, {n: i for i, n in enumerate(_DOW_NAMES)}, "day")
_FIELDS: Final = (_SECOND_F, _MINUTE_F, _HOUR_F, _DAY_F, _MONTH_F, _DOW_F)


class _Items:
    """What one field's text means: plain values plus the L / LW / nL / n#k specials."""

    __slots__ = ("last_day", "last_dows", "last_weekday", "nth", "plain")

    def __init__(self) -> None:
        self.plain: set[int] = set()
        self.last_day = False  # day: L
        self.last_weekday = False  # day: LW
        self.nth: set[tuple[int, int]] = set()  # day_of_week: n#k  -> (n, k), Sunday = 0
        self.last_dows: set[int] = set()  # day_of_week: nL  -> n, Sunday = 0


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _show(text: str) -> str:
    return repr(text.lower())


def _bad_value(f: _Field, token: str, item: str) -> CronError:
    if token == "":
        return CronError(f"{f.name}: missing value in {_show(item)}")
    if "?" in token:
        return CronError(f"{f.name}: '?' is not supported; use '*'")
    if f is _DAY_F and "W" in token:
        return CronError(
            f"day: {_show(item)}: 'W' (nearest weekday) is not supported; "
            "only 'LW' (the last weekday of the month) is"
        )
    if f is _DAY_F and "L" in token:
        return CronError(f"day: {_show(item)}: write 'L' alone for the last day of the month")
    if "L" in token and f is not _DOW_F:
        return CronError(f"{f.name}: {_show(item)}: 'L' is only valid in day and day_of_week")
    if "#" in token and f is not _DOW_F:
        return CronError(f"{f.name}: {_show(item)}: '#' is only valid in day_of_week")
    if "H" in token and not f.names:
        return CronError(f"{f.name}: {_show(item)}: 'H' (hashed value) is not supported")
    if f.names:
        first, last = (_DOW_NAMES[0], _DOW_NAMES[-1]) if f is _DOW_F else ("JAN", "DEC")
        message = (
            f"{f.name}: {_show(token)} is not a number or {f.kind} name "
            f"({first.lower()}-{last.lower()})"
        )
        close = difflib.get_close_matches(token, list(f.names), n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0].lower()!r}?"
        return CronError(message)
    return CronError(f"{f.name}: {_show(token)} is not a number")


def _value(f: _Field, token: str, item: str) -> int:
    named = f.names.get(token)
    if named is not None:
        return named
    if not _is_digits(token):
        raise _bad_value(f, token, item)
    digits = token.lstrip("0") or "0"
    number = int(digits) if len(digits) <= 9 else None
    if number is None or not f.lo <= number <= f.hi:
        shown = digits if number is None else str(number)
        raise CronError(f"{f.name}: {shown} is out of range {f.lo}-{f.hi}")
    return number


def _range(f: _Field, text: str, item: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    start = _value(f, first, item)
    stop = _value(f, last, item)
    if stop < start:
        hint = " (write e.g. fri-sat,sun)" if f is _DOW_F else ""
        raise CronError(f"{f.name}: range {_show(text)} goes backwards{hint}")
    return start, stop


def _step(f: _Field, text: str, item: str) -> int:
    if not _is_digits(text):
        raise CronError(f"{f.name}: {_show(item)}: step {_show(text)} is not a positive number")
    digits = text.lstrip("0")
    if not digits:
        raise CronError(f"{f.name}: {_show(item)}: step must be at least 1")
    # Any step beyond the field's span selects the start only; no need for a huge int.
    return int(digits) if len(digits) <= 3 else f.hi + 1


def _parse_item(f: _Field, item: str, out: _Items) -> None:
    if item == "*":
        out.plain.update(range(f.lo, f.hi + 1))
    elif f is _DOW_F and "L" in item:
        number = item[:-1]
        if not _is_digits(number):
            raise CronError(
                f"day_of_week: {_show(item)}: 'L' must follow a day number (5L = last Friday)"
            )
        out.last_dows.add(_value(f, number, item) % 7)
    elif f is _DOW_F and "#" in item:
        day, _, nth = item.partition("#")
        if not (_is_digits(nth) and nth.lstrip("0") in ("1", "2", "3", "4", "5")):
            raise CronError(
                f"day_of_week: {_show(item)}: the number after '#' must be 1-5 (mon#2 = 2nd Monday)"
            )
        out.nth.add((_value(f, day, item) % 7, int(nth.lstrip("0"))))
    elif "/" in item:
        base, _, step_text = item.partition("/")
        step = _step(f, step_text, item)
        if f is _DAY_F and base == "L":
            out.last_day = True
        elif f is _DAY_F and base == "LW":
            out.last_weekday = True
        else:
            if base == "*":
                start, stop = f.lo, f.hi
            elif "-" in base:
                start, stop = _range(f, base, item)
            else:
                start, stop = _value(f, base, item), f.hi
            out.plain.update(range(start, stop + 1, step))
    elif "-" in item:
        start, stop = _range(f, item, item)
        out.plain.update(range(start, stop + 1))
    elif f is _DAY_F and item == "L":
        out.last_day = True
    elif f is _DAY_F and item == "LW":
        out.last_weekday = True
    else:
        out.plain.add(_value(f, item, item))


class _FieldValue(NamedTuple):
    values: tuple[int, ...]  # sorted; weekdays with Sunday = 0
    last_day: bool
    last_weekday: bool
    nth: frozenset[tuple[int, int]]
    last_dows: frozenset[int]


@functools.lru_cache(maxsize=4096)
def _parse_field(index: int, text: str) -> _FieldValue:
    """Parse one (upper-cased) field; cached, as job files repeat the same field texts."""
    f = _FIELDS[index]
    out = _Items()
    for item in text.split(","):
        if not item:
            raise CronError(f"{f.name}: empty list item in {_show(text)}")
        _parse_item(f, item, out)
    plain = {value % 7 for value in out.plain} if f is _DOW_F else out.plain
    return _FieldValue(
        tuple(sorted(plain)),
        out.last_day,
        out.last_weekday,
        frozenset(out.nth),
        frozenset(out.last_dows),
    )


def parse(expression: str) -> CronSchedule:
    """Parse and validate a crontab expression (5 or 6 fields, or a @macro).

    Raises :class:`CronError` with a short message naming the field.  Results are cached.
    """
    if not isinstance(expression, str):
        raise CronError(f"expected a cron expression string, got {type(expression).__name__}")
    return _parse(expression)


@functools.lru_cache(maxsize=8192)
def _parse(expression: str) -> CronSchedule:
    tokens = expression.split()
    if not tokens:
        raise CronError("empty cron expression")
    if tokens[0].startswith("@"):
        return _parse_macro(tokens)
    if len(tokens) not in (5, 6):
        raise CronError(f"expected 5 or 6 fields (or a @macro), got {len(tokens)}")
    return _build(" ".join(tokens), tokens)


def _parse_macro(tokens: list[str]) -> CronSchedule:
    name = tokens[0].lower()
    if name == "@reboot":
        raise CronError("@reboot is not supported: jobs run on a schedule, not at start-up")
    if name not in MACROS:
        message = f"unknown macro {tokens[0]}"
        close = difflib.get_close_matches(name, list(MACROS), n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]}?)"
        else:
            message += f" (known: {', '.join(MACROS)})"
        raise CronError(message)
    if len(tokens) > 1:
        raise CronError(f"{name} stands alone; found extra text {' '.join(tokens[1:])!r}")
    return _build(name, MACROS[name].split())


def _build(normalised: str, tokens: list[str]) -> CronSchedule:
    five_fields = len(tokens) == 5
    upper = [token.upper() for token in tokens]
    if five_fields:
        upper.insert(0, "0")
        shown = ("0", *tokens)
    else:
        shown = tuple(tokens)
    seconds, minutes, hours, day, month, dow = (
        _parse_field(index, text) for index, text in enumerate(upper)
    )
    schedule = CronSchedule(
        expression=normalised,
        fields=shown,
        seconds=seconds.values,
        minutes=minutes.values,
        hours=hours.values,
        days=frozenset(day.values),
        months=month.values,
        weekdays=frozenset(dow.values),
        nth_weekdays=dow.nth,
        last_weekdays=dow.last_dows,
        last_day=day.last_day,
        last_weekday=day.last_weekday,
        day_and=upper[3].startswith("*") or upper[5].startswith("*"),
        fixed_time=five_fields and not upper[1].startswith("*") and not upper[2].startswith("*"),
    )
    schedule._check_fires()
    return schedule


def mapping_to_expression(fields: Mapping[str, str | int]) -> str:
    """Turn ``{minute: 5, hour: "9-17", ...}`` into a crontab expression.

    Keys: second minute hour day month day_of_week; a missing second is ``0``, any other
    missing field ``*``.  Without a second (or with second 0) the result is the 5-field
    line, so a mapping behaves exactly like the crontab line it spells, DST rules included;
    otherwise 6 fields, seconds first.  Unknown keys and bad values raise :class:`CronError`.
    """
    if not isinstance(fields, Mapping):
        raise CronError(f"expected a mapping of cron fields, got {type(fields).__name__}")
    parts: dict[str, str] = {}
    for key, value in fields.items():
        if key not in FIELD_NAMES:
            message = f"unknown cron field {key!r}"
            close = difflib.get_close_matches(str(key), FIELD_NAMES, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
            else:
                message += f" (fields: {', '.join(FIELD_NAMES)})"
            raise CronError(message)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise CronError(f"{key}: expected a string or an integer, got {value!r}")
        text = str(value).strip()
        if not text:
            raise CronError(f"{key}: empty value")
        if len(text.split()) != 1:
            raise CronError(f"{key}: {text!r} contains spaces; use commas for lists")
        parts[key] = text
    names = FIELD_NAMES if parts.get("second", "0") != "0" else FIELD_NAMES[1:]
    expression = " ".join(parts.get(name, "*") for name in names)
    parse(expression)
    return expression


# --------------------------------------------------------------------------- evaluation


def _low_bit(bits: int) -> int:
    """Index of the lowest set bit (bits > 0)."""
    return (bits & -bits).bit_length() - 1


def _month_length(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _MONTH_DAYS[month]


def _exists(moment: datetime) -> bool:
    """False for a wall time skipped by a DST jump (fold=0 reading)."""
    tz = moment.tzinfo
    # Same tzinfo on both sides: == compares the wall clock fields.
    return moment.astimezone(UTC).astimezone(tz) == moment


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed crontab expression.  Build it with :func:`parse`.

    Weekdays use cron numbering (Sunday = 0).  ``day_and`` tells whether a day must match
    both the day-of-month and day-of-week fields (one of them starts with ``*``) or either.
    ``fixed_time`` marks 5-field jobs whose minute and hour fields do not start with ``*``:
    they get Debian cron's DST treatment (see the module docstring).
    """

    expression: str
    fields: tuple[str, ...]  # 6 texts, seconds first, as written
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    nth_weekdays: frozenset[tuple[int, int]]  # (weekday, k): the k-th such weekday
    last_weekdays: frozenset[int]  # the last such weekday of the month
    last_day: bool  # L
    last_weekday: bool  # LW
    day_and: bool
    fixed_time: bool
    _second_set: frozenset[int] = field(init=False, repr=False, compare=False)
    _minute_set: frozenset[int] = field(init=False, repr=False, compare=False)
    _hour_set: frozenset[int] = field(init=False, repr=False, compare=False)
    _month_set: frozenset[int] = field(init=False, repr=False, compare=False)
    _dow_bits: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _masks: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        init = object.__setattr__
        init(self, "_second_set", frozenset(self.seconds))
        init(self, "_minute_set", frozenset(self.minutes))
        init(self, "_hour_set", frozenset(self.hours))
        init(self, "_month_set", frozenset(self.months))
        weekday_bits = 0
        for weekday in self.weekdays:
            weekday_bits |= 1 << (weekday + 6) % 7  # Python numbering, Monday = 0
        init(self, "_dow_bits", _DOW_BITS[weekday_bits])
        init(self, "_masks", {})

    def __str__(self) -> str:
        return self.expression

    # -- days

    def _mask(self, first: int, length: int) -> int:
        """Bit d set: day d matches in a month of `length` days starting on weekday `first`."""
        key = first * 32 + length
        cached = self._masks.get(key)
        if cached is not None:
            return cached
        dom = 0
        for day in self.days:
            dom |= 1 << day
        if self.last_day:
            dom |= 1 << length
        if self.last_weekday:
            last = (first + length - 1) % 7
            dom |= 1 << (length - 1 if last == 5 else length - 2 if last == 6 else length)
        dow = self._dow_bits[first]
        for weekday, nth in self.nth_weekdays:
            day = 1 + ((weekday + 6) % 7 - first) % 7 + 7 * (nth - 1)
            if day <= length:
                dow |= 1 << day
        for weekday in self.last_weekdays:
            day = 1 + ((weekday + 6) % 7 - first) % 7
            dow |= 1 << (day + 7 * ((length - day) // 7))
        mask = (dom & dow if self.day_and else dom | dow) & ((2 << length) - 2)
        self._masks[key] = mask
        return mask

    def _day_mask(self, year: int, month: int) -> int:
        return self._mask(date(year, month, 1).weekday(), _month_length(year, month))

    def _check_fires(self) -> None:
        if not self.day_and or len(self.days) == 31:
            return  # any day-of-week entry occurs in some month (a 5th Monday, say)
        if (self.last_day or self.last_weekday or min(self.days, default=99) <= 28) and len(
            self.weekdays
        ) == 7:
            return
        lengths: set[int] = set()
        for month in self.months:
            lengths.update((28, 29) if month == 2 else (_MONTH_DAYS[month],))
        if any(self._mask(first, n) for n in sorted(lengths, reverse=True) for first in range(7)):
            return
        months = ", ".join(str(m) for m in self.months)
        where = f"month {months}" if len(self.months) == 1 else f"months {months}"
        if self.days and len(self.weekdays) == 7:
            raise CronError(f"never fires: day {min(self.days)} does not exist in {where}")
        raise CronError(
            f"never fires: no date in {where} matches both day {self.fields[3].lower()!r} "
            f"and day_of_week {self.fields[5].lower()!r}"
        )

    def _next_month(self, year: int, month: int) -> tuple[int, int]:
        """The first allowed month at or after (year, month); month may be 13."""
        index = bisect_left(self.months, month)
        if index == len(self.months):
            return year + 1, self.months[0]
        return year, self.months[index]

    # -- searching

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        """The first fire time strictly after `after` (aware), as an aware datetime in `tz`.

        ``None`` only if there is none within 400 years (cannot happen for a validated
        expression, except near the year 9999).
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError(f"next_after needs an aware datetime, got {after!r}")
        try:
            local = after.astimezone(tz)
            after_utc = after.astimezone(UTC)
            while True:
                if self.fixed_time:
                    found = self._next_fixed(local, tz)
                else:
                    found = self._next_wall_clock(local, tz)
                if found is None or found.astimezone(UTC) > after_utc:
                    return found
                # Only reachable when `after` is in the second pass of a repeated hour.
                local = found
        except OverflowError:
            return None

    def next_times(self, after: datetime, tz: ZoneInfo, count: int) -> list[datetime]:
        """Up to `count` successive fire times strictly after `after`."""
        times: list[datetime] = []
        current: datetime | None = after
        while len(times) < count and current is not None:
            current = self.next_after(current, tz)
            if current is not None:
                times.append(current)
        return times

    def _next_naive(
        self, y: int, mo: int, d: int, h: int, mi: int, s: int, limit: int
    ) -> datetime | None:
        """The first naive wall time at or after the given one matching every field."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        month_set, hour_set = self._month_set, self._hour_set
        minute_set, second_set = self._minute_set, self._second_set
        while True:
            if mo not in month_set:
                y, mo = self._next_month(y, mo)
                if y > limit:
                    return None
                d = 1
                h = mi = s = 0
            rest = self._day_mask(y, mo) >> d
            if not rest & 1:
                if not rest:
                    mo += 1
                    d = 1
                    h = mi = s = 0
                    continue
                d += _low_bit(rest)
                h = mi = s = 0
            if h not in hour_set:
                index = bisect_left(hours, h)
                if index == len(hours):
                    d += 1
                    h = mi = s = 0
                    continue
                h = hours[index]
                mi = s = 0
            if mi not in minute_set:
                index = bisect_left(minutes, mi)
                if index == len(minutes):
                    h += 1
                    mi = s = 0
                    continue
                mi = minutes[index]
                s = 0
            if s not in second_set:
                index = bisect_left(seconds, s)
                if index == len(seconds):
                    mi += 1
                    s = 0
                    continue
                s = seconds[index]
            return datetime(y, mo, d, h, mi, s)

    def _next_fixed(self, local: datetime, tz: ZoneInfo) -> datetime | None:
        """Debian cron's fixed-time rule: match naive wall time, move skipped times forward."""
        wall = local.replace(tzinfo=None, microsecond=0, fold=0) + _ONE_SECOND
        limit = min(wall.year + _SEARCH_YEARS, _LAST_YEAR)
        found = self._next_naive(
            wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second, limit
        )
        if found is None:
            return None
        moment = found.replace(tzinfo=tz)
        while not _exists(moment):  # in a DST gap: the first existing minute after it
            moment += _ONE_MINUTE
        return moment

    def _next_wall_clock(self, local: datetime, tz: ZoneInfo) -> datetime | None:
        start = local.replace(microsecond=0)
        # Fast path: away from DST changes the answer is the next matching wall time.  No
        # zone in tzdata has two changes less than four days apart, so equal offsets at both
        # ends of a span shorter than a day mean no change in between.
        wall = start.replace(tzinfo=None, fold=0) + _ONE_SECOND
        limit = min(wall.year + _SEARCH_YEARS, _LAST_YEAR)
        found = self._next_naive(
            wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second, limit
        )
        if found is None:
            return None
        candidate = found.replace(tzinfo=tz, fold=start.fold)
        candidate_utc = candidate.astimezone(UTC)
        normal = candidate_utc.astimezone(tz)
        offset = start.utcoffset()
        if (
            normal == candidate
            and normal.utcoffset() == offset
            # The hour search restarts from the top of the hour, which must not be on the
            # other side of a DST change either.
            and start.replace(minute=0, second=0).utcoffset() == offset
            and candidate_utc - start.astimezone(UTC) < _ONE_DAY
        ):
            return normal
        walked = self._walk(start, tz, limit, monotone=False)
        if isinstance(walked, _Stuck) or (
            walked is not None and walked.astimezone(UTC) <= start.astimezone(UTC)
        ):
            # cronsim would go back in time here (only possible right after a DST change
            # that is not a whole hour at the top of an hour, e.g. Pacific/Chatham).
            walked = self._walk(start, tz, limit, monotone=True)
            if isinstance(walked, _Stuck):  # pragma: no cover - monotone walks make progress
                raise AssertionError("unreachable")
        return walked

    def _walk(
        self, start: datetime, tz: ZoneInfo, limit: int, *, monotone: bool
    ) -> datetime | _Stuck | None:
        """Field-by-field search where hours/minutes/seconds advance in absolute time.

        This is Debian cron's (and cronsim's) algorithm for jobs that follow the wall clock;
        it differs from plain wall-clock matching only around DST changes.  When restarting
        the hour (or minute) from its top crosses back over a DST change, that algorithm
        can step back in time: with ``monotone`` such steps are skipped; without, more than
        a few of them give up with `_STUCK`.
        """
        moment = (start.astimezone(UTC) + _ONE_SECOND).astimezone(tz)
        backward = 0
        while True:
            now = moment.astimezone(UTC)
            year, month = moment.year, moment.month
            if year > limit:
                return None
            if month not in self._month_set:
                year, month = self._next_month(year, month)
                if year > limit:
                    return None
                moment = datetime(year, month, 1, tzinfo=tz)
                if monotone:
                    moment = _not_before(moment, now, tz)
                    year, month = moment.year, moment.month
            day = moment.day
            mask = self._day_mask(year, month)
            floor = now if monotone else None
            if not (mask >> day) & 1:
                rest = mask >> (day + 1)
                if rest:
                    moment = datetime(year, month, day + 1 + _low_bit(rest), tzinfo=tz)
                elif month == 12:
                    moment = datetime(year + 1, 1, 1, tzinfo=tz)
                else:
                    moment = datetime(year, month + 1, 1, tzinfo=tz)
                if monotone:
                    moment = _not_before(moment, now, tz)
            elif moment.hour not in self._hour_set:
                base = moment.replace(minute=0, second=0)
                moment = _advance(base, _ONE_HOUR, 0, self.hours, tz, floor)
            elif moment.minute not in self._minute_set:
                base = moment.replace(second=0)
                moment = _advance_with_jump(base, _ONE_MINUTE, 1, self.minutes, tz, floor)
            elif moment.second not in self._second_set:
                moment = _advance_with_jump(moment, _ONE_SECOND, 2, self.seconds, tz, floor)
            else:
                return moment.astimezone(UTC).astimezone(tz)
            if not monotone and moment.astimezone(UTC) < now:
                backward += 1
                if backward > _MAX_BACKWARD:
                    return _STUCK


def _not_before(midnight: datetime, now: datetime, tz: ZoneInfo) -> datetime:
    """`midnight` if it is after `now`, else the first minute after `now` on that date or
    later (a DST change can turn the local date back, e.g. America/St_Johns in 1998)."""
    if midnight.astimezone(UTC) > now:
        return midnight
    target = midnight.date()
    moment = now.replace(second=0, microsecond=0) + _ONE_MINUTE
    while (local := moment.astimezone(tz)).date() < target:
        moment += _ONE_MINUTE
    return local


class _Stuck:
    """Marks a search that kept stepping back in time."""


_STUCK: Final = _Stuck()
_MAX_BACKWARD: Final = 4


def _part(moment: datetime, which: int) -> int:
    return moment.hour if which == 0 else moment.minute if which == 1 else moment.second


def _advance_with_jump(
    base: datetime,
    unit: timedelta,
    which: int,
    values: tuple[int, ...],
    tz: ZoneInfo,
    floor: datetime | None,
) -> datetime:
    """Like `_advance`, but with a single allowed value jump straight to it first."""
    if len(values) == 1:
        delta = (values[0] - _part(base, which)) % 60
        moment = (base.astimezone(UTC) + unit * delta).astimezone(tz)
        if _part(moment, which) == values[0] and (floor is None or moment.astimezone(UTC) > floor):
            return moment
        # A DST change left the clock elsewhere: continue unit by unit from there.
        base = moment
    return _advance(base, unit, which, values, tz, floor)


def _advance(
    base: datetime,
    unit: timedelta,
    which: int,
    values: tuple[int, ...],
    tz: ZoneInfo,
    floor: datetime | None,
) -> datetime:
    """Step `base` forward by `unit` (absolute time) at least once, until the hour/minute/
    second (`which` = 0/1/2) is in `values` or wraps to 0 -- and, given `floor`, is later
    than it."""
    modulus = 24 if which == 0 else 60
    origin = base.astimezone(UTC)
    first = (origin + unit).astimezone(tz)
    current = _part(first, which)
    if (current == 0 or current in values) and (floor is None or first.astimezone(UTC) > floor):
        return first
    index = bisect_left(values, current + 1)
    target = values[index] if index < len(values) else modulus
    steps = target - current + 1
    moment = (origin + unit * steps).astimezone(tz)
    if (
        moment.utcoffset() == first.utcoffset()
        and _part(moment, which) == target % modulus
        and (floor is None or moment.astimezone(UTC) > floor)
    ):
        return moment
    # A DST change in between (or still not past `floor`): step one unit at a time.
    for steps in range(2, 20 * modulus):
        moment = (origin + unit * steps).astimezone(tz)
        current = _part(moment, which)
        if (current == 0 or current in values) and (
            floor is None or moment.astimezone(UTC) > floor
        ):
            return moment
    raise AssertionError("unreachable: the clock did not advance")  # pragma: no cover


# --------------------------------------------------------------------------- trigger


def _zone(timezone: str | ZoneInfo) -> ZoneInfo:
    if isinstance(timezone, ZoneInfo):
        if timezone.key is None:
            raise CronError("the time zone must be a named IANA zone")
        return timezone
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
        raise CronError(f"unknown time zone {timezone!r}") from error


def _aware(moment: datetime | None, tz: ZoneInfo, name: str) -> datetime | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise CronError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(tz)


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]
    """APScheduler 3 trigger firing on a crontab expression in an IANA time zone.

    Start and end dates are inclusive, like APScheduler's ``CronTrigger``; naive ones are
    read in the trigger's zone.  ``jitter`` delays each fire by up to that many seconds.
    Pickles compactly (version-tagged state of plain strings and numbers).
    """

    __slots__ = ("end_date", "jitter", "schedule", "start_date", "timezone")

    _STATE_VERSION: Final = 1

    def __init__(
        self,
        expression: str,
        timezone: str | ZoneInfo = "UTC",
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        jitter: int | None = None,
    ) -> None:
        self.schedule: CronSchedule = parse(expression)
        self.timezone: ZoneInfo = _zone(timezone)
        self.start_date: datetime | None = _aware(start_date, self.timezone, "start_date")
        self.end_date: datetime | None = _aware(end_date, self.timezone, "end_date")
        if jitter is not None and (
            isinstance(jitter, bool) or not isinstance(jitter, int | float) or jitter < 0
        ):
            raise CronError(f"jitter must be a number of seconds >= 0, got {jitter!r}")
        self.jitter: int | None = jitter

    @property
    def expression(self) -> str:
        return self.schedule.expression

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The first fire strictly after `previous_fire_time` (else at or after `now`), in UTC.

        Everything is computed in UTC: adding a timedelta to an aware local time is wall-clock
        arithmetic that drops `fold`, which sends the second pass of a repeated hour back to
        the first.  Jitter is added in UTC for the same reason.
        """
        if previous_fire_time is not None:
            after = previous_fire_time.astimezone(UTC)
        else:
            after = now.astimezone(UTC) - _ONE_MICROSECOND
            if self.start_date is not None:
                after = max(after, self.start_date.astimezone(UTC) - _ONE_MICROSECOND)
        fire = self.schedule.next_after(after, self.timezone)
        if fire is None:
            return None
        fire = fire.astimezone(UTC)
        end = None if self.end_date is None else self.end_date.astimezone(UTC)
        if end is not None and fire > end:
            return None
        if self.jitter:
            fire += timedelta(seconds=random.uniform(0, self.jitter))
            if end is not None and fire > end:
                return end
        return fire

    # -- pickling, equality, display

    def __getstate__(self) -> dict[str, Any]:
        return {
            "version": self._STATE_VERSION,
            "expression": self.schedule.expression,
            "timezone": self.timezone.key,
            "start_date": None if self.start_date is None else self.start_date.isoformat(),
            "end_date": None if self.end_date is None else self.end_date.isoformat(),
            "jitter": self.jitter,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        version = state.get("version")
        if version != self._STATE_VERSION:
            raise ValueError(
                f"cannot load a {type(self).__name__} pickled with state version {version!r} "
                f"(this version reads {self._STATE_VERSION})"
            )
        self.schedule = parse(state["expression"])
        self.timezone = _zone(state["timezone"])
        self.start_date = _loaded_date(state["start_date"], self.timezone)
        self.end_date = _loaded_date(state["end_date"], self.timezone)
        self.jitter = state["jitter"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CrontabTrigger):
            return NotImplemented
        return self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash(tuple(self.__getstate__().items()))

    def __str__(self) -> str:
        return f"cron[{self.schedule.expression}] {self.timezone.key}"

    def __repr__(self) -> str:
        options = [f"expression={self.schedule.expression!r}", f"timezone={self.timezone.key!r}"]
        if self.start_date is not None:
            options.append(f"start_date={self.start_date.isoformat()!r}")
        if self.end_date is not None:
            options.append(f"end_date={self.end_date.isoformat()!r}")
        if self.jitter:
            options.append(f"jitter={self.jitter}")
        return f"<{type(self).__name__} ({', '.join(options)})>"


def _loaded_date(text: str | None, tz: ZoneInfo) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(tz)
