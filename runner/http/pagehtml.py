"""HTML fragments of the status page: the outcome strip, times, the timeline, the job's facts.

Everything shown is escaped here. Times are written as `<time datetime=...>` with absolute
UTC inside, which the page's script turns into "in 5 s" / "3 h ago" in the browser's zone;
without script the UTC time stays. Colours come from `status-<name>` classes in page.css.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from runner import history
from runner.http.pagedata import DUE_COUNT_LIMIT, Timeline
from runner.report import took

STATUSES = (
    "succeeded",
    "failed",
    "timed_out",
    "interrupted",
    "missed",
    "skipped",
    "running",
    "queued",
)


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def program(job: dict[str, Any]) -> str:
    """What a job runs: its target, or its command line as a shell would quote it."""
    command = job.get("command")
    return shlex.join(command) if command else str(job.get("target"))


def moment(value: datetime | str | None, empty: str = "") -> str:
    """A `<time>` the script makes relative; absolute UTC without script."""
    if value is None:
        return e(empty)
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = history.as_utc(at)
    return f'<time datetime="{at.isoformat()}">{at.strftime("%Y-%m-%d %H:%M:%S")} UTC</time>'


def utc(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return history.as_utc(at).strftime("%Y-%m-%d %H:%M:%S UTC")


def first_line(text: str | None) -> str:
    return text.splitlines()[0] if text else ""


def word(status: str) -> str:
    return f'<span class="status-{e(status)}">{e(status.replace("_", " "))}</span>'


def _when(run: dict[str, Any]) -> datetime | str | None:
    value: datetime | str | None = run.get("finished_at") or run.get("started_at")
    return value or run.get("scheduled_at")


def run_title(run: dict[str, Any]) -> str:
    parts = [run["status"]]
    if run.get("duration") is not None:
        parts.append(took(run["duration"]))
    parts.append(f"attempt {run['attempt']}")
    parts.append(utc(_when(run)))
    return " · ".join(parts)


def strip(runs: Sequence[dict[str, Any]], job_url: str) -> str:
    """The last outcomes, oldest left, newest right; hover for status and duration."""
    if not runs:
        return '<span class="muted">never run</span>'
    cells = "".join(
        f'<a class="cell status-{e(r["status"])}" href="{e(job_url)}#run-{r["run_id"]}" '
        f'title="{e(run_title(r))}" data-status="{e(r["status"])}"></a>'
        for r in runs
    )
    return f'<span class="strip">{cells}</span>'


def last(runs: Sequence[dict[str, Any]]) -> str:
    if not runs:
        return ""
    newest = runs[-1]
    duration = newest.get("duration")
    took_text = f" <small>in {e(took(duration))}</small>" if duration is not None else ""
    return f"{word(newest['status'])}{took_text}<br><small>{moment(_when(newest))}</small>"


def legend() -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span class="cell status-{s}"></span>{e(s.replace("_", " "))}' for s in STATUSES
        )
        + "</div>"
    )


# --- the timeline -----------------------------------------------------------------------------
WIDTH = 1000
LABEL = 190
LANE = 18
AXIS = 20


def timeline(plan: Timeline, job_url: Callable[[str], str]) -> str:
    """The next hours as one SVG, a lane per job; positions are attributes, not inline style."""
    if not plan.lanes:
        return '<p class="muted">No fires in the next 24 hours.</p>'
    span = (plan.end - plan.start).total_seconds()
    usable = WIDTH - LABEL - 10

    def x(at: datetime) -> float:
        return round(LABEL + (at - plan.start).total_seconds() / span * usable, 1)

    hours = int(span // 3600)
    parts = []
    for hour in range(0, hours + 1, 3):
        left = round(LABEL + hour * 3600 / span * usable, 1)
        label = "now" if hour == 0 else f"+{hour} h"
        parts.append(
            f'<line class="hour" x1="{left}" y1="{AXIS - 4}" x2="{left}" '
            f'y2="{AXIS + LANE * len(plan.lanes)}"></line>'
            f'<text x="{left}" y="12" text-anchor="{"end" if hour == hours else "middle"}">'
            f"{label}</text>"
        )
    for index, lane in enumerate(plan.lanes):
        top = AXIS + index * LANE
        parts.append(
            f'<rect class="lane" x="{LABEL}" y="{top + 2}" width="{usable}" '
            f'height="{LANE - 4}"></rect>'
            f'<a href="{e(job_url(lane.job_id))}"><text x="{LABEL - 6}" y="{top + 13}" '
            f'text-anchor="end">{e(_clip(lane.job_id))}</text></a>'
        )
        if lane.more:
            begin = x(lane.fires[-1])
            parts.append(
                f'<rect class="more" x="{begin}" y="{top + 5}" width="{LABEL + usable - begin}" '
                f'height="{LANE - 10}"><title>{e(lane.job_id)}: more fires than the '
                f"{len(lane.fires)} drawn</title></rect>"
            )
        for fire in lane.fires:
            parts.append(
                f'<rect class="fire" data-job="{e(lane.job_id)}" x="{x(fire) - 1}" '
                f'y="{top + 3}" width="3" height="{LANE - 6}">'
                f"<title>{e(lane.job_id)} at {e(utc(fire))}</title></rect>"
            )
    height = AXIS + LANE * len(plan.lanes) + 4
    shown = len(plan.lanes)
    note = (
        f"{shown} job(s) shown"
        + (f", the {plan.shown_limit} due first of {_count(plan.due)}" if plan.due > shown else "")
        + "; times relative to this page's load; at most 48 fires drawn per job."
    )
    for extra in plan.notes:
        note += f" Note: {e(extra)}."
    return (
        f'<svg class="timeline" id="timeline" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="fires in the next 24 hours">'
        + "".join(parts)
        + f"</svg><p><small>{note} Generated at {e(utc(plan.start.astimezone(UTC)))}.</small></p>"
    )


def _count(due: int) -> str:
    return f"{due}+" if due >= DUE_COUNT_LIMIT else str(due)


def _clip(text: str, size: int = 28) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
