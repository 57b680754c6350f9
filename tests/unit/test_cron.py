"""Unit tests for runner.cron: parsing, errors, day rules, DST behaviour and the trigger."""

from __future__ import annotations

import io
import itertools
import pickle
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runner.cron import (
    MACROS,
    CronError,
    CronSchedule,
    CrontabTrigger,
    mapping_to_expression,
    parse,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
CHATHAM = ZoneInfo("Pacific/Chatham")
ZULU = ZoneInfo("UTC")


def fires(expression: str, start: datetime, count: int, tz: ZoneInfo | None = None) -> list[str]:
    """The next `count` fire times as ISO strings (offsets show which side of a change)."""
    zone = tz or start.tzinfo
    assert isinstance(zone, ZoneInfo)
    return [t.isoformat() for t in parse(expression).next_times(start, zone, count)]


# --------------------------------------------------------------------------- parsing


def test_five_fields() -> None:
    s = parse("*/15 9-17 * * mon-fri")
    assert s.seconds == (0,)
    assert s.minutes == (0, 15, 30, 45)
    assert s.hours == tuple(range(9, 18))
    assert s.days == frozenset(range(1, 32))
    assert s.months == tuple(range(1, 13))
    assert s.weekdays == frozenset({1, 2, 3, 4, 5})
    assert s.fields == ("0", "*/15", "9-17", "*", "*", "mon-fri")
    assert s.expression == "*/15 9-17 * * mon-fri"


def test_six_fields_put_seconds_first() -> None:
    s = parse("*/20 5 12 * * *")
    assert s.seconds == (0, 20, 40)
    assert s.minutes == (5,)
    assert s.hours == (12,)
    assert fires("*/20 5 12 * * *", datetime(2027, 1, 1, tzinfo=ZULU), 4) == [
        "2027-01-01T12:05:00+00:00",
        "2027-01-01T12:05:20+00:00",
        "2027-01-01T12:05:40+00:00",
        "2027-01-02T12:05:00+00:00",
    ]


def test_whitespace_is_normalised_and_parses_are_cached() -> None:
    s = parse("  0\t9  * *   * ")
    assert s.expression == "0 9 * * *"
    assert parse("0 9 * * *") == s
    assert parse("  0\t9  * *   * ") is s
    assert str(s) == "0 9 * * *"


def test_schedules_are_immutable() -> None:
    s = parse("0 9 * * *")
    with pytest.raises(AttributeError):
        s.hours = (1,)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_macros(macro: str, expansion: str) -> None:
    assert MACROS[macro] == expansion
    ours, theirs = parse(macro), parse(expansion)
    assert ours.expression == macro
    for name in ("seconds", "minutes", "hours", "days", "months", "weekdays", "fixed_time"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert parse(macro.upper()).expression == macro


def test_macro_fire_times() -> None:
    start = datetime(2027, 5, 14, 10, 30, tzinfo=ZULU)  # a Friday
    assert fires("@hourly", start, 1) == ["2027-05-14T11:00:00+00:00"]
    assert fires("@daily", start, 1) == ["2027-05-15T00:00:00+00:00"]
    assert fires("@weekly", start, 1) == ["2027-05-16T00:00:00+00:00"]
    assert fires("@monthly", start, 1) == ["2027-06-01T00:00:00+00:00"]
    assert fires("@yearly", start, 1) == ["2028-01-01T00:00:00+00:00"]


def test_names_are_case_insensitive() -> None:
    for text in ("0 0 * jan-mar mon,WED,Fri", "0 0 * JAN-Mar 1,3,5", "0 0 * 1-3 MON,wed,fRi"):
        s = parse(text)
        assert s.months == (1, 2, 3)
        assert s.weekdays == frozenset({1, 3, 5})


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN"])
def test_sunday_is_0_and_7(sunday: str) -> None:
    s = parse(f"0 12 * * {sunday}")
    assert s.weekdays == frozenset({0})
    assert fires(f"0 12 * * {sunday}", datetime(2027, 5, 12, tzinfo=ZULU), 2) == [
        "2027-05-16T12:00:00+00:00",
        "2027-05-23T12:00:00+00:00",
    ]


def test_weekday_ranges_through_7() -> None:
    assert parse("0 0 * * 5-7").weekdays == frozenset({5, 6, 0})
    assert parse("0 0 * * 0-7").weekdays == frozenset(range(7))
    assert parse("0 0 * * */2").weekdays == frozenset({0, 2, 4, 6})  # 0,2,4,6 of 0-7
    assert parse("0 0 * * 1/2").weekdays == frozenset({1, 3, 5, 0})  # 1,3,5,7


@pytest.mark.parametrize(
    ("field", "minutes"),
    [
        ("*/15", (0, 15, 30, 45)),
        ("1-30/5", (1, 6, 11, 16, 21, 26)),
        ("5/10", (5, 15, 25, 35, 45, 55)),
        ("5-5/10", (5,)),  # the step runs through the one-value range (as cronsim >= 2.9)
        ("*/90", (0,)),  # any step >= 1 is accepted
        ("1,2,3-5,10-20/5,59", (1, 2, 3, 4, 5, 10, 15, 20, 59)),
        ("007", (7,)),
        ("*,5", tuple(range(60))),
    ],
)
def test_minute_items(field: str, minutes: tuple[int, ...]) -> None:
    assert parse(f"{field} * * * *").minutes == minutes


def test_last_day_and_last_weekday_of_month() -> None:
    start = datetime(2027, 1, 15, tzinfo=ZULU)
    assert fires("0 0 L * *", start, 3) == [
        "2027-01-31T00:00:00+00:00",
        "2027-02-28T00:00:00+00:00",
        "2027-03-31T00:00:00+00:00",
    ]
    assert fires("0 0 L 2 *", datetime(2028, 1, 1, tzinfo=ZULU), 1) == ["2028-02-29T00:00:00+00:00"]
    # 2027-10-31 is a Sunday, 2027-07-31 a Saturday: LW is the Friday before.
    assert fires("0 0 LW * *", datetime(2027, 7, 1, tzinfo=ZULU), 4) == [
        "2027-07-30T00:00:00+00:00",
        "2027-08-31T00:00:00+00:00",
        "2027-09-30T00:00:00+00:00",
        "2027-10-29T00:00:00+00:00",
    ]
    assert parse("0 0 l/5 * *").last_day  # cronsim accepts a step after L and ignores it


def test_last_and_nth_weekday() -> None:
    start = datetime(2027, 1, 1, tzinfo=ZULU)
    assert fires("0 0 * * 5L", start, 2) == [
        "2027-01-29T00:00:00+00:00",
        "2027-02-26T00:00:00+00:00",
    ]
    assert fires("0 0 * * mon#2", start, 2) == [
        "2027-01-11T00:00:00+00:00",
        "2027-02-08T00:00:00+00:00",
    ]
    assert fires("0 0 * * 7#1,0l", start, 3) == [  # first and last Sunday
        "2027-01-03T00:00:00+00:00",
        "2027-01-31T00:00:00+00:00",
        "2027-02-07T00:00:00+00:00",
    ]
    assert parse("0 0 * * 1#5").nth_weekdays == frozenset({(1, 5)})


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    s = parse("0 0 13 * fri")
    assert not s.day_and
    # Every Friday, and every 13th.
    assert fires("0 0 13 * fri", datetime(2027, 8, 1, tzinfo=ZULU), 5) == [
        "2027-08-06T00:00:00+00:00",
        "2027-08-13T00:00:00+00:00",
        "2027-08-20T00:00:00+00:00",
        "2027-08-27T00:00:00+00:00",
        "2027-09-03T00:00:00+00:00",
    ]
    assert fires("0 0 1-31 * mon", datetime(2027, 8, 1, tzinfo=ZULU), 2) == [
        "2027-08-02T00:00:00+00:00",  # 1-31 does not start with '*': OR, so every day
        "2027-08-03T00:00:00+00:00",
    ]


def test_day_rule_uses_and_when_a_field_starts_with_a_star() -> None:
    assert parse("0 0 * * fri").day_and
    assert parse("0 0 13 * *").day_and
    s = parse("0 0 */2 * fri")  # odd days that are Fridays (Debian cron's rule)
    assert s.day_and
    assert fires("0 0 */2 * fri", datetime(2027, 8, 1, tzinfo=ZULU), 3) == [
        "2027-08-13T00:00:00+00:00",
        "2027-08-27T00:00:00+00:00",
        "2027-09-03T00:00:00+00:00",
    ]
    assert parse("0 0 1 * */1").day_and


def test_february_29_is_valid_and_rare_combinations_are_found() -> None:
    assert fires("0 0 29 2 *", datetime(2027, 1, 1, tzinfo=ZULU), 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]
    # February 29 on a Sunday: 28 years apart.
    assert fires("0 0 29 2 */7", datetime(2027, 1, 1, tzinfo=ZULU), 2) == [
        "2032-02-29T00:00:00+00:00",
        "2060-02-29T00:00:00+00:00",
    ]


def test_fixed_time_classification() -> None:
    assert parse("30 2 * * *").fixed_time
    assert parse("0 0-23/2 * * *").fixed_time  # does not start with '*'
    assert parse("0,30 9,17 * * mon-fri").fixed_time
    assert parse("@daily").fixed_time
    assert not parse("@hourly").fixed_time
    assert not parse("*/15 * * * *").fixed_time
    assert not parse("0 */2 * * *").fixed_time
    assert not parse("15 * * * *").fixed_time
    assert not parse("0 30 2 * * *").fixed_time  # 6 fields follow the wall clock


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute: 61 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range 0-23"),
        ("* * 0 * *", "day: 0 is out of range 1-31"),
        ("* * 32 * *", "day: 32 is out of range 1-31"),
        ("* * * 13 *", "month: 13 is out of range 1-12"),
        ("* * * * 8", "day_of_week: 8 is out of range 0-7"),
        ("60 * * * * *", "second: 60 is out of range 0-59"),
        ("99999999999 * * * *", "minute: 99999999999 is out of range 0-59"),
        ("* 1-24 * * *", "hour: 24 is out of range 0-23"),
        ("* * * *", "expected 5 or 6 fields (or a @macro), got 4"),
        ("* * * * * * *", "expected 5 or 6 fields (or a @macro), got 7"),
        ("0 0 1 1 * 2027 x", "expected 5 or 6 fields (or a @macro), got 7"),
        ("", "empty cron expression"),
        ("   ", "empty cron expression"),
        ("@dayly", "unknown macro @dayly (did you mean @daily?)"),
        ("@daily 0", "@daily stands alone; found extra text '0'"),
        ("x * * * *", "minute: 'x' is not a number"),
        ("* * * foo *", "month: 'foo' is not a number or month name (jan-dec)"),
        (
            "* * * janu *",
            "month: 'janu' is not a number or month name (jan-dec); did you mean 'jan'?",
        ),
        (
            "* * * * mn",
            "day_of_week: 'mn' is not a number or day name (sun-sat); did you mean 'mon'?",
        ),
        ("* * mon * *", "day: 'mon' is not a number"),
        ("5-1 * * * *", "minute: range '5-1' goes backwards"),
        (
            "* * * * fri-mon",
            "day_of_week: range 'fri-mon' goes backwards (write e.g. fri-sat,sun)",
        ),
        ("*/0 * * * *", "minute: '*/0': step must be at least 1"),
        ("*/x * * * *", "minute: '*/x': step 'x' is not a positive number"),
        ("1/2/3 * * * *", "minute: '1/2/3': step '2/3' is not a positive number"),
        ("1,,2 * * * *", "minute: empty list item in '1,,2'"),
        ("1, * * * *", "minute: empty list item in '1,'"),
        ("5- * * * *", "minute: missing value in '5-'"),
        ("-5 * * * *", "minute: missing value in '-5'"),
        ("/5 * * * *", "minute: missing value in '/5'"),
        ("? * * * *", "minute: '?' is not supported; use '*'"),
        ("0 0 ? * mon", "day: '?' is not supported; use '*'"),
        (
            "0 0 15W * *",
            "day: '15w': 'W' (nearest weekday) is not supported; "
            "only 'LW' (the last weekday of the month) is",
        ),
        ("0 0 5L * *", "day: '5l': write 'L' alone for the last day of the month"),
        ("0 0 L-5 * *", "day: 'l-5': write 'L' alone for the last day of the month"),
        ("L * * * *", "minute: 'l': 'L' is only valid in day and day_of_week"),
        (
            "0 0 * * L",
            "day_of_week: 'l': 'L' must follow a day number (5L = last Friday)",
        ),
        (
            "0 0 * * friL",
            "day_of_week: 'fril': 'L' must follow a day number (5L = last Friday)",
        ),
        ("0 0 * * 8L", "day_of_week: 8 is out of range 0-7"),
        (
            "0 0 * * mon#6",
            "day_of_week: 'mon#6': the number after '#' must be 1-5 (mon#2 = 2nd Monday)",
        ),
        (
            "0 0 * * mon#0",
            "day_of_week: 'mon#0': the number after '#' must be 1-5 (mon#2 = 2nd Monday)",
        ),
        (
            "0 0 * * 1#",
            "day_of_week: '1#': the number after '#' must be 1-5 (mon#2 = 2nd Monday)",
        ),
        ("0 0 1#2 * *", "day: '1#2': '#' is only valid in day_of_week"),
        ("H * * * *", "minute: 'h': 'H' (hashed value) is not supported"),
        ("0 0 30 2 *", "never fires: day 30 does not exist in month 2"),
        ("0 0 31 4,6,9,11 *", "never fires: day 31 does not exist in months 4, 6, 9, 11"),
        ("0 0 30,31 feb *", "never fires: day 30 does not exist in month 2"),
        (
            "0 0 30 2 */2",
            "never fires: no date in month 2 matches both day '30' and day_of_week '*/2'",
        ),
        (
            "0 0 */5 2 mon#5",  # days 1, 6, ..., 26, 31; a fifth Monday of February is the 29th
            "never fires: no date in month 2 matches both day '*/5' and day_of_week 'mon#5'",
        ),
    ],
)
def test_errors(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(expression)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("expression", ["@rebooot", "@Reboots"])
def test_unknown_macro(expression: str) -> None:
    with pytest.raises(CronError, match=f"^unknown macro {expression} "):
        parse(expression)


def test_reboot_is_not_supported() -> None:
    with pytest.raises(CronError, match=r"^@reboot is not supported"):
        parse("@reboot")


def test_not_a_string() -> None:
    with pytest.raises(CronError, match="expected a cron expression string, got int"):
        parse(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 29 2 *",  # leap years
        "0 0 30 2 mon",  # OR: Mondays in February
        "0 0 31 * *",
        "0 0 L 2 *",
        "0 0 LW 2 *",
        "0 0 * 2 mon#5",  # leap years whose February starts on a Monday
        "0 0 29 2 */7",
    ],
)
def test_rare_but_possible_schedules_are_valid(expression: str) -> None:
    schedule = parse(expression)
    assert schedule.next_after(datetime(2025, 1, 1, tzinfo=ZULU), ZULU) is not None


# --------------------------------------------------------------------------- mapping form


def test_mapping_defaults() -> None:
    assert mapping_to_expression({}) == "* * * * *"
    assert mapping_to_expression({"minute": 5, "hour": "9-17"}) == "5 9-17 * * *"
    assert mapping_to_expression({"second": 0, "minute": 30, "hour": 2}) == "30 2 * * *"
    assert (
        mapping_to_expression(
            {
                "second": 30,
                "minute": "*/5",
                "hour": 0,
                "day": "L",
                "month": "jan",
                "day_of_week": "*",
            }
        )
        == "30 */5 0 L jan *"
    )
    assert mapping_to_expression({"day_of_week": " mon-fri "}) == "* * * * mon-fri"


def test_mapping_at_a_fixed_time_keeps_crontab_dst_rules() -> None:
    """A mapping job at 02:30 runs once on both DST nights, like the crontab line."""
    berlin = ZoneInfo("Europe/Berlin")
    schedule = parse(mapping_to_expression({"minute": 30, "hour": 2}))
    spring = schedule.next_after(datetime(2027, 3, 28, 1, 0, tzinfo=berlin), berlin)
    assert spring == datetime(2027, 3, 28, 3, 0, tzinfo=berlin)
    autumn = schedule.next_after(datetime(2027, 10, 31, 0, 0, tzinfo=berlin), berlin)
    assert autumn is not None
    again = schedule.next_after(autumn, berlin)
    assert again is not None and again.date().day == 1


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"minutes": 5}, "unknown cron field 'minutes'; did you mean 'minute'?"),
        ({"day_of_weak": 1}, "unknown cron field 'day_of_weak'; did you mean 'day_of_week'?"),
        (
            {"dow": 1},
            "unknown cron field 'dow' (fields: second, minute, hour, day, month, day_of_week)",
        ),
        ({"hour": True}, "hour: expected a string or an integer, got True"),
        ({"hour": 1.5}, "hour: expected a string or an integer, got 1.5"),
        ({"hour": ""}, "hour: empty value"),
        (
            {"day_of_week": "mon fri"},
            "day_of_week: 'mon fri' contains spaces; use commas for lists",
        ),
        ({"month": 13}, "month: 13 is out of range 1-12"),
        ({"day": 30, "month": 2}, "never fires: day 30 does not exist in month 2"),
    ],
)
def test_mapping_errors(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(CronError) as caught:
        mapping_to_expression(mapping)  # type: ignore[arg-type]
    assert str(caught.value) == message


# --------------------------------------------------------------------------- next_after


def test_next_after_is_strictly_after() -> None:
    s = parse("0 9 * * *")
    at_nine = datetime(2027, 6, 1, 9, tzinfo=ZULU)
    assert s.next_after(at_nine, ZULU) == datetime(2027, 6, 2, 9, tzinfo=ZULU)
    just_before = at_nine - timedelta(microseconds=1)
    assert s.next_after(just_before, ZULU) == at_nine
    assert s.next_after(at_nine + timedelta(microseconds=1), ZULU) == at_nine + timedelta(days=1)


def test_next_after_converts_to_the_zone() -> None:
    s = parse("0 9 * * *")
    fire = s.next_after(datetime(2027, 6, 1, 12, tzinfo=ZULU), BERLIN)
    assert fire is not None
    assert fire.tzinfo is BERLIN
    assert fire.isoformat() == "2027-06-02T09:00:00+02:00"


def test_next_after_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse("* * * * *").next_after(datetime(2027, 1, 1), ZULU)


def test_next_after_jumps_instead_of_iterating() -> None:
    # A yearly schedule still answers immediately.
    s = parse("59 23 31 12 *")
    assert s.next_after(datetime(2027, 1, 1, tzinfo=ZULU), ZULU) == datetime(
        2027, 12, 31, 23, 59, tzinfo=ZULU
    )


def test_next_after_near_the_end_of_time() -> None:
    assert parse("0 0 1 1 *").next_after(datetime(9999, 6, 1, tzinfo=ZULU), ZULU) is None


# --------------------------------------------------------------------------- DST


def test_berlin_spring_forward_fixed_time_runs_after_the_jump() -> None:
    # 2027-03-28 02:00 CET -> 03:00 CEST: 02:30 does not exist.
    assert fires("30 2 * * *", datetime(2027, 3, 27, 12, tzinfo=BERLIN), 3) == [
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
        "2027-03-30T02:30:00+02:00",
    ]
    assert fires("0 2 * * *", datetime(2027, 3, 27, 12, tzinfo=BERLIN), 1) == [
        "2027-03-28T03:00:00+02:00"
    ]


def test_berlin_fall_back_fixed_time_runs_once() -> None:
    # 2027-10-31 03:00 CEST -> 02:00 CET: 02:30 happens twice, the job runs the first time.
    assert fires("30 2 * * *", datetime(2027, 10, 30, 12, tzinfo=BERLIN), 2) == [
        "2027-10-31T02:30:00+02:00",
        "2027-11-01T02:30:00+01:00",
    ]
    assert fires("0,20,40 2 * * *", datetime(2027, 10, 31, 1, tzinfo=BERLIN), 4) == [
        "2027-10-31T02:00:00+02:00",
        "2027-10-31T02:20:00+02:00",
        "2027-10-31T02:40:00+02:00",
        "2027-11-01T02:00:00+01:00",
    ]


def test_fixed_time_started_in_the_second_pass_is_not_in_the_past() -> None:
    # Started at 02:45 CET (the second 02:45): the 02:50 of this night has already been (in
    # the first pass), so the next run is tomorrow.  (cronsim would answer 02:50 CEST.)
    second_pass = datetime(2027, 10, 31, 1, 45, tzinfo=UTC).astimezone(BERLIN)
    assert second_pass.fold == 1
    assert fires("50 2 * * *", second_pass, 1) == ["2027-11-01T02:50:00+01:00"]


def test_berlin_wall_clock_jobs_follow_both_transitions() -> None:
    assert fires("*/15 * * * *", datetime(2027, 3, 28, 1, 30, tzinfo=BERLIN), 4) == [
        "2027-03-28T01:45:00+01:00",
        "2027-03-28T03:00:00+02:00",
        "2027-03-28T03:15:00+02:00",
        "2027-03-28T03:30:00+02:00",
    ]
    assert fires("*/15 * * * *", datetime(2027, 10, 31, 1, 50, tzinfo=BERLIN), 10) == [
        "2027-10-31T02:00:00+02:00",
        "2027-10-31T02:15:00+02:00",
        "2027-10-31T02:30:00+02:00",
        "2027-10-31T02:45:00+02:00",
        "2027-10-31T02:00:00+01:00",
        "2027-10-31T02:15:00+01:00",
        "2027-10-31T02:30:00+01:00",
        "2027-10-31T02:45:00+01:00",
        "2027-10-31T03:00:00+01:00",
        "2027-10-31T03:15:00+01:00",
    ]


def test_six_field_jobs_follow_the_wall_clock() -> None:
    # Skipped in spring, twice in autumn.
    assert fires("0 30 2 * * *", datetime(2027, 3, 27, 12, tzinfo=BERLIN), 1) == [
        "2027-03-29T02:30:00+02:00"
    ]
    assert fires("0 30 2 * * *", datetime(2027, 10, 30, 12, tzinfo=BERLIN), 3) == [
        "2027-10-31T02:30:00+02:00",
        "2027-10-31T02:30:00+01:00",
        "2027-11-01T02:30:00+01:00",
    ]


def test_new_york() -> None:
    # 2027-03-14 02:00 EST -> 03:00 EDT; 2027-11-07 02:00 EDT -> 01:00 EST.
    assert fires("30 2 * * *", datetime(2027, 3, 13, 12, tzinfo=NEW_YORK), 2) == [
        "2027-03-14T03:00:00-04:00",
        "2027-03-15T02:30:00-04:00",
    ]
    assert fires("30 1 * * *", datetime(2027, 11, 6, 12, tzinfo=NEW_YORK), 2) == [
        "2027-11-07T01:30:00-04:00",
        "2027-11-08T01:30:00-05:00",
    ]
    assert fires("*/30 * * * *", datetime(2027, 3, 14, 1, 10, tzinfo=NEW_YORK), 3) == [
        "2027-03-14T01:30:00-05:00",
        "2027-03-14T03:00:00-04:00",
        "2027-03-14T03:30:00-04:00",
    ]
    assert fires("*/30 * * * *", datetime(2027, 11, 7, 0, 50, tzinfo=NEW_YORK), 5) == [
        "2027-11-07T01:00:00-04:00",
        "2027-11-07T01:30:00-04:00",
        "2027-11-07T01:00:00-05:00",
        "2027-11-07T01:30:00-05:00",
        "2027-11-07T02:00:00-05:00",
    ]


def test_lord_howe_half_hour_shift() -> None:
    # 2027-10-03 02:00 +10:30 -> 02:30 +11; 2027-04-04 02:00 +11 -> 01:30 +10:30.
    assert fires("15 2 * * *", datetime(2027, 10, 2, 12, tzinfo=LORD_HOWE), 2) == [
        "2027-10-03T02:30:00+11:00",
        "2027-10-04T02:15:00+11:00",
    ]
    assert fires("45 1 * * *", datetime(2027, 4, 3, 12, tzinfo=LORD_HOWE), 2) == [
        "2027-04-04T01:45:00+11:00",
        "2027-04-05T01:45:00+10:30",
    ]
    assert fires("*/15 * * * *", datetime(2027, 10, 3, 1, 40, tzinfo=LORD_HOWE), 3) == [
        "2027-10-03T01:45:00+10:30",
        "2027-10-03T02:30:00+11:00",
        "2027-10-03T02:45:00+11:00",
    ]
    assert fires("*/15 * * * *", datetime(2027, 4, 4, 1, 40, tzinfo=LORD_HOWE), 5) == [
        "2027-04-04T01:45:00+11:00",
        "2027-04-04T01:30:00+10:30",
        "2027-04-04T01:45:00+10:30",
        "2027-04-04T02:00:00+10:30",
        "2027-04-04T02:15:00+10:30",
    ]
    # Hourly steps in absolute time, as Debian cron/cronsim do.
    assert fires("0 * * * *", datetime(2027, 4, 4, 0, 40, tzinfo=LORD_HOWE), 3) == [
        "2027-04-04T01:00:00+11:00",
        "2027-04-04T02:00:00+10:30",
        "2027-04-04T03:00:00+10:30",
    ]


def test_never_goes_back_in_time_after_odd_transitions() -> None:
    # Pacific/Chatham falls back at 03:45 +13:45 -> 02:45 +12:45.  Here cronsim's algorithm
    # would return to 03:00 +13:45 and loop; ours continues with the second pass.
    start = datetime(2025, 4, 6, 3, 43, 30, tzinfo=CHATHAM)
    assert fires("* 3-22 * * *", start, 3) == [
        "2025-04-06T03:44:00+13:45",
        "2025-04-06T03:00:00+12:45",
        "2025-04-06T03:01:00+12:45",
    ]
    # America/St_Johns in 1998 turned the date back (00:01 -> 23:01 the day before).
    st_johns = ZoneInfo("America/St_Johns")
    times = parse("* 30 */7,3 * * */5").next_times(
        datetime(1998, 10, 24, 22, 43, tzinfo=st_johns), st_johns, 5
    )
    assert len(times) == 5
    assert all(a < b for a, b in itertools.pairwise(times))


# --------------------------------------------------------------------------- trigger


def test_trigger_basics() -> None:
    trigger = CrontabTrigger("0 9 * * mon-fri", "Europe/Berlin")
    assert trigger.expression == "0 9 * * mon-fri"
    assert trigger.timezone is BERLIN
    assert str(trigger) == "cron[0 9 * * mon-fri] Europe/Berlin"
    assert repr(trigger) == (
        "<CrontabTrigger (expression='0 9 * * mon-fri', timezone='Europe/Berlin')>"
    )
    now = datetime(2027, 5, 14, 10, tzinfo=BERLIN)  # Friday, after 09:00
    fire = trigger.get_next_fire_time(None, now)
    assert fire is not None
    # Computed and answered in UTC, so no caller's arithmetic can drop `fold`.
    assert fire.tzinfo is UTC
    assert fire.astimezone(BERLIN).isoformat() == "2027-05-17T09:00:00+02:00"


def test_trigger_rejects_bad_arguments() -> None:
    with pytest.raises(CronError, match="minute: 61"):
        CrontabTrigger("61 * * * *")
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        CrontabTrigger("* * * * *", "Mars/Olympus")
    with pytest.raises(CronError, match="jitter"):
        CrontabTrigger("* * * * *", jitter=-1)


def test_trigger_now_is_inclusive_and_previous_is_exclusive() -> None:
    trigger = CrontabTrigger("0 9 * * *", "UTC")
    nine = datetime(2027, 6, 1, 9, tzinfo=ZULU)
    assert trigger.get_next_fire_time(None, nine) == nine  # like CronTrigger
    assert trigger.get_next_fire_time(None, nine + timedelta(microseconds=1)) == nine + timedelta(
        days=1
    )
    assert trigger.get_next_fire_time(nine, nine) == nine + timedelta(days=1)
    # previous + now far later (misfire catch-up): the run after previous, as CronTrigger.
    assert trigger.get_next_fire_time(nine, nine + timedelta(days=3)) == nine + timedelta(days=1)
    # A clock that went back never brings a fire back: always strictly after previous.
    assert trigger.get_next_fire_time(nine, nine - timedelta(hours=1)) == nine + timedelta(days=1)


def test_trigger_previous_in_the_repeated_hour() -> None:
    trigger = CrontabTrigger("*/30 * * * *", "Europe/Berlin")
    first_pass = datetime(2027, 10, 31, 2, 30, tzinfo=BERLIN)
    second_pass = trigger.get_next_fire_time(first_pass, first_pass)
    assert second_pass is not None
    assert second_pass.astimezone(BERLIN).isoformat() == "2027-10-31T02:00:00+01:00"
    # Passing the second pass back in, in any zone, moves on: it never returns to the first.
    for shown in (second_pass, second_pass.astimezone(BERLIN)):
        following = trigger.get_next_fire_time(shown, shown)
        assert following is not None
        assert following.astimezone(BERLIN).isoformat() == "2027-10-31T02:30:00+01:00"


def test_trigger_start_and_end_dates() -> None:
    trigger = CrontabTrigger(
        "0 12 * * *",
        "Europe/Berlin",
        start_date=datetime(2027, 6, 10, 12),  # naive: read in the trigger's zone, inclusive
        end_date=datetime(2027, 6, 12, 12, tzinfo=BERLIN),
    )
    assert trigger.start_date is not None
    assert trigger.start_date.isoformat() == "2027-06-10T12:00:00+02:00"
    now = datetime(2027, 6, 1, tzinfo=ZULU)
    first = trigger.get_next_fire_time(None, now)
    assert first is not None
    assert first.astimezone(BERLIN).isoformat() == "2027-06-10T12:00:00+02:00"
    last = trigger.get_next_fire_time(first + timedelta(days=1), now + timedelta(days=11))
    assert last is not None
    # The end date is inclusive.
    assert last.astimezone(BERLIN).isoformat() == "2027-06-12T12:00:00+02:00"
    assert trigger.get_next_fire_time(last, last) is None
    # Later `now` wins over start_date.
    assert trigger.get_next_fire_time(None, datetime(2027, 6, 11, 13, tzinfo=BERLIN)) == last


def test_trigger_end_date_is_compared_in_absolute_time() -> None:
    # 02:30 CEST (first pass) is before an end of 02:10 CET (second pass).
    end = datetime(2027, 10, 31, 1, 10, tzinfo=UTC).astimezone(BERLIN)
    trigger = CrontabTrigger("30 2 * * *", "Europe/Berlin", end_date=end)
    fire = trigger.get_next_fire_time(None, datetime(2027, 10, 30, 12, tzinfo=BERLIN))
    assert fire is not None
    assert fire.astimezone(BERLIN).isoformat() == "2027-10-31T02:30:00+02:00"


def test_trigger_jitter_bounds() -> None:
    trigger = CrontabTrigger("0 * * * *", "UTC", jitter=30)
    now = datetime(2027, 6, 1, 8, 59, tzinfo=ZULU)
    nine = datetime(2027, 6, 1, 9, tzinfo=ZULU)
    seen = set()
    for _ in range(200):
        fire = trigger.get_next_fire_time(None, now)
        assert fire is not None
        assert nine <= fire <= nine + timedelta(seconds=30)
        seen.add(fire)
    assert len(seen) > 100
    # Jitter never pushes past the end date.
    ending = CrontabTrigger("0 * * * *", "UTC", end_date=nine + timedelta(seconds=5), jitter=30)
    for _ in range(50):
        fire = ending.get_next_fire_time(None, now)
        assert fire is not None
        assert nine <= fire <= nine + timedelta(seconds=5)
    # Callers may switch jitter off (runner.triggers does, to preview fire times).
    trigger.jitter = None
    assert trigger.get_next_fire_time(None, now) == nine


class _RecordingUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.modules: set[str] = set()

    def find_class(self, module: str, name: str) -> object:
        self.modules.add(module)
        return super().find_class(module, name)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_trigger_pickle_round_trip(protocol: int) -> None:
    trigger = CrontabTrigger(
        "*/15 9-17 * * mon-fri",
        "America/New_York",
        start_date=datetime(2027, 1, 1, tzinfo=ZULU),
        end_date=datetime(2027, 11, 7, 1, 30, tzinfo=UTC).astimezone(NEW_YORK),
        jitter=10,
    )
    data = pickle.dumps(trigger, protocol)
    unpickler = _RecordingUnpickler(data)
    loaded = unpickler.load()
    assert isinstance(loaded, CrontabTrigger)
    assert loaded == trigger
    assert hash(loaded) == hash(trigger)
    assert loaded.__getstate__() == trigger.__getstate__()
    assert loaded.schedule is parse("*/15 9-17 * * mon-fri")
    assert loaded.timezone is NEW_YORK
    assert loaded.start_date == trigger.start_date
    assert loaded.end_date is not None and trigger.end_date is not None
    assert loaded.end_date.isoformat() == trigger.end_date.isoformat()
    for module in unpickler.modules:
        assert module == "runner.cron" or module.split(".")[0] in sys.stdlib_module_names, module
    now = datetime(2027, 3, 1, tzinfo=ZULU)
    loaded.jitter = trigger.jitter = None
    fire = loaded.get_next_fire_time(None, now)
    assert fire == trigger.get_next_fire_time(None, now)
    assert fire is not None
    assert fire.astimezone(NEW_YORK).isoformat() == "2027-03-01T09:00:00-05:00"


def test_trigger_state_is_compact_and_versioned() -> None:
    trigger = CrontabTrigger("@daily", "Europe/Berlin")
    assert trigger.__getstate__() == {
        "version": 1,
        "expression": "@daily",
        "timezone": "Europe/Berlin",
        "start_date": None,
        "end_date": None,
        "jitter": None,
    }
    state = dict(trigger.__getstate__(), version=99)
    fresh = CrontabTrigger.__new__(CrontabTrigger)
    with pytest.raises(ValueError, match="state version 99"):
        fresh.__setstate__(state)


def test_trigger_equality() -> None:
    a = CrontabTrigger("0 9 * * *", "Europe/Berlin")
    assert a == CrontabTrigger("0  9 * * *", ZoneInfo("Europe/Berlin"))
    assert a != CrontabTrigger("0 9 * * *", "Europe/Paris")
    assert a != CrontabTrigger("0 10 * * *", "Europe/Berlin")
    assert a != CrontabTrigger("0 9 * * *", "Europe/Berlin", jitter=5)
    assert a != "cron[0 9 * * *] Europe/Berlin"
    assert len({a, CrontabTrigger("0 9 * * *", "Europe/Berlin")}) == 1


def test_trigger_in_apscheduler() -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone="UTC")
    trigger = CrontabTrigger("0 0 1 1 *", "Europe/Berlin")
    job = scheduler.add_job(print, trigger, id="new-year")
    scheduler.start(paused=True)
    try:
        next_run = scheduler.get_job("new-year").next_run_time
        assert next_run is not None
        next_run = next_run.astimezone(BERLIN)
        assert (next_run.month, next_run.day, next_run.hour, next_run.minute) == (1, 1, 0, 0)
        assert job.trigger is trigger
    finally:
        scheduler.shutdown(wait=False)


def test_schedule_type_is_exported() -> None:
    assert isinstance(parse("* * * * *"), CronSchedule)
