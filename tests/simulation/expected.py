"""What Debian cron runs, per cronsim: the independent reference for the simulation tier."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim

from runner.cron import MACROS


def cron_fires(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Fires at or after `start` and at or before `end`, in UTC.

    cronsim can step back in time right after a DST change that is not a whole hour (it
    restarts its search from the top of the hour); a time that is not after the previous one
    is not a new fire, so such steps are dropped.
    """
    expression = MACROS.get(expression.lower(), expression)
    start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
    # cronsim answers strictly after the time it is given; a fire at `start` itself counts.
    origin = datetime.fromtimestamp(start_utc.timestamp() - 1e-6, UTC)
    fires: list[datetime] = []
    for moment in CronSim(expression, origin.astimezone(ZoneInfo(zone))):
        fire = moment.astimezone(UTC)
        if fire > end_utc:
            break
        if fire >= start_utc and (not fires or fire > fires[-1]):
            fires.append(fire)
    return fires


def transitions(zone: str, year: int) -> list[datetime]:
    """The instants (UTC, to the minute) at which `zone` changes its UTC offset in `year`."""
    tz = ZoneInfo(zone)
    found: list[datetime] = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    step = 3600
    offset = moment.astimezone(tz).utcoffset()
    while moment.year == year:
        following = datetime.fromtimestamp(moment.timestamp() + step, UTC)
        if following.astimezone(tz).utcoffset() != offset:
            probe = moment
            while probe.astimezone(tz).utcoffset() == offset:
                probe = datetime.fromtimestamp(probe.timestamp() + 60, UTC)
            found.append(probe)
            offset = probe.astimezone(tz).utcoffset()
        moment = following
    return found
