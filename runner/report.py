"""Text for the terminal: `runner runs` as a table with headers, `runner show` as a page.

JSON output is the contract; this is for people, so times are short and durations read as
they are written in job files.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner.durations import format_duration

if TYPE_CHECKING:
    from runner.plan import Plan


def when(iso: str | None) -> str:
    """`2026-12-02 04:31:53Z`: second precision, always UTC."""
    if iso is None:
        return "-"
    moment = datetime.fromisoformat(iso)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    return format_duration(round(seconds))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is left unpadded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = []
    for cells in (headers, *rows):
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, cells[-1]]).rstrip())
    return lines


RUN_HEADERS = ("RUN", "JOB", "SCHEDULED (UTC)", "ATTEMPT", "STATUS", "DURATION", "ERROR")


def run_cells(run: dict[str, Any]) -> list[str]:
    error = (run["error"] or "").splitlines()
    return [
        str(run["run_id"]),
        run["job_id"],
        when(run["scheduled_at"]),
        str(run["attempt"]),
        run["status"],
        took(run["duration"]),
        error[0] if error else "",
    ]


def runs(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["no runs"]
    return table(RUN_HEADERS, [run_cells(r) for r in rows])


def plan_json(plan: Plan, applied: bool, kept: Sequence[str] | None) -> dict[str, Any]:
    """The contract's plan JSON, plus what the apply leaves as it is, each key only when it has
    something to say (so a plan without them is byte for byte what it always was):
    `overrides`, the jobs an operator paused or resumed (`[{"id", "paused"}]`), and with
    `--no-prune` (`kept` not None) `kept`, the stored jobs that no file holds any more."""
    out = plan.as_json(applied)
    if plan.overridden:
        out["overrides"] = [
            {"id": job_id, "paused": paused} for job_id, paused in sorted(plan.overridden.items())
        ]
    if kept is not None:
        out["kept"] = sorted(kept)
    return out


def trigger(spec: dict[str, Any]) -> str:
    zone = spec.get("timezone", "UTC")
    if "cron" in spec:
        what = f"cron {spec['cron']!r}"
    elif "interval" in spec:
        what = f"every {format_duration(int(spec['interval']))}"
    else:
        what = f"once at {spec.get('at')}"
    extras = [f"{k} {spec[k]}" for k in ("start", "end") if k in spec]
    if "jitter" in spec:
        extras.append(f"jitter {format_duration(int(spec['jitter']))}")
    return " ".join([what, zone, *extras])


def program(job: dict[str, Any]) -> str:
    """What a job runs: its target, or a command job's argv as a shell would quote it."""
    return job["target"] or shlex.join(job.get("command") or [])


def job_line(row: dict[str, Any]) -> str:
    """One `runner jobs` line: id, source, what it runs, when next, how it last went."""
    state = "paused" if row["paused"] else (row["next_run_time"] or "no further runs")
    last = row["last_status"] or "never run"
    if row["last_run_at"]:
        last += f" at {row['last_run_at']}"
    for status in ("running", "queued"):
        if row[status]:
            last += f"  {status}: {row[status]}"
    return f"{row['id']}  {row['source']}  {program(row)}  next: {state}  last: {last}"


def show(job: dict[str, Any]) -> list[str]:
    spec = job["spec"]
    runs_what = "target:  " if job["target"] else "command: "
    if job["override"] is not None:
        state = "paused by an operator" if job["override"] else "resumed by an operator"
        state += " (runner pause/resume to change)"
    else:
        state = "paused in its file" if job["paused"] else "scheduled"
    lines = [
        f"job {job['id']}  ({job['source']})",
        f"  {runs_what} {program(job)}",
        f"  trigger:  {trigger(job['trigger'])}",
        f"  state:    {state}",
        f"  applied:  {when(job['applied_at'])} by {job['applied_by']}",
    ]
    settings = [f"timeout {format_duration(spec['timeout'])}"] if spec.get("timeout") else []
    retries = spec.get("retries", {})
    if retries.get("max_attempts", 1) > 1:
        settings.append(f"{retries['max_attempts']} attempts")
    if settings:
        lines.append(f"  policy:   {', '.join(settings)}")
    upcoming = ", ".join(when(t) for t in job["next"]) or "none"
    lines.append(f"  next:     {upcoming}")
    lines.append("")
    lines.append("last runs:")
    lines.extend(f"  {line}" for line in runs(job["runs"]))
    failure = job["last_failure"]
    if failure is not None:
        lines.append("")
        lines.append(
            f"last failure: run {failure['run_id']} ({failure['status']}, attempt "
            f"{failure['attempt']}) at {when(failure['finished_at'])} on {failure['node']}"
        )
        lines.append(f"  {failure['error'] or '(no error recorded)'}")
        if failure["traceback"]:
            lines.extend(f"  {line}" for line in failure["traceback"].rstrip().splitlines())
    return lines
