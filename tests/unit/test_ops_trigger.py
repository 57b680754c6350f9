"""`report.trigger` says all the page's describer says (the page is to switch to it), and more."""

from __future__ import annotations

import pytest

from runner import report
from runner.http.page import describe_trigger

TRIGGERS = [
    {"cron": "0 3 * * *", "timezone": "UTC"},
    {"cron": "*/5 9-17 * * mon-fri", "timezone": "Europe/Berlin"},
    {"interval": 5400, "timezone": "UTC"},
    {"at": "2027-01-01T09:00:00+01:00", "timezone": "Asia/Tokyo"},
    {"interval": 60, "jitter": 30, "start": "2027-01-01T00:00:00Z", "timezone": "UTC"},
]


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_report_trigger_carries_what_the_page_shows(trigger: dict[str, object]) -> None:
    page, ours = describe_trigger(trigger), report.trigger(trigger)
    what = page.rsplit(" (", 1)[0].removeprefix("cron ").removeprefix("at ")
    assert what in ours.replace("'", ""), (page, ours)
    assert str(trigger["timezone"]) in ours


def test_report_trigger_shows_the_refinements() -> None:
    assert report.trigger(TRIGGERS[-1]) == ("every 1m UTC start 2027-01-01T00:00:00Z jitter 30s")
    assert report.trigger({"interval": 5400}) == "every 1h30m UTC"
