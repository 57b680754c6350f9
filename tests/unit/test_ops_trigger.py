"""`report.trigger`: the one trigger describer of the CLI and the page."""

from __future__ import annotations

import pytest

from runner import report

CASES = [
    ({"cron": "0 3 * * *", "timezone": "UTC"}, "cron '0 3 * * *' UTC"),
    (
        {"cron": "*/5 9-17 * * mon-fri", "timezone": "Europe/Berlin"},
        "cron '*/5 9-17 * * mon-fri' Europe/Berlin",
    ),
    ({"interval": 5400, "timezone": "UTC"}, "every 1h30m UTC"),
    (
        {"at": "2027-01-01T09:00:00+01:00", "timezone": "Asia/Tokyo"},
        "once at 2027-01-01T09:00:00+01:00 Asia/Tokyo",
    ),
]


@pytest.mark.parametrize(("trigger", "text"), CASES)
def test_report_trigger_says_kind_expression_and_zone(
    trigger: dict[str, object], text: str
) -> None:
    assert report.trigger(trigger) == text


def test_report_trigger_shows_the_refinements() -> None:
    refined = {"interval": 60, "jitter": 30, "start": "2027-01-01T00:00:00Z", "timezone": "UTC"}
    assert report.trigger(refined) == "every 1m UTC start 2027-01-01T00:00:00Z jitter 30s"
    assert report.trigger({"interval": 5400}) == "every 1h30m UTC"
