"""The status page: one server-rendered HTML page with a form per button, no build step.

The buttons post forms to `/ui/jobs/{id}/{action}`; the token travels in a form field (filled
from the page's token box by a few lines of inline script), never in a cookie, so another site
cannot press them for the operator. After an action the browser is redirected back to the
page (post/redirect/get); a refused action shows the page with the reason and its status.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from runner import queries
from runner.durations import format_duration
from runner.http import api, auth
from runner.store import tables
from runner.store.engine import READ_ONLY

if TYPE_CHECKING:
    from runner.serve import Server

FAILED = ("failed", "timed_out", "interrupted")
MAX_FORM_BYTES = 4096
ACTIONS = ("run", "pause", "resume")
DEFAULT_REFRESH = 15
"""Seconds between the page's own reloads (`?refresh=N`, 0 = never)."""
DONE = {
    "run": "Started a run of {job}.",
    "pause": "Paused {job}.",
    "resume": "Resumed {job}.",
    "pause-unchanged": "{job} was already paused.",
    "resume-unchanged": "{job} was already running on schedule.",
}


def _template() -> Template:
    text = resources.files("runner.http").joinpath("templates/status.html").read_text("utf-8")
    return Template(text)


TEMPLATE = _template()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def describe_trigger(trigger: dict[str, Any]) -> str:
    zone = trigger.get("timezone", "UTC")
    if "cron" in trigger:
        what = f"cron {trigger['cron']}"
    elif "interval" in trigger:
        what = f"every {format_duration(int(trigger['interval']))}"
    else:
        what = f"at {trigger.get('at')}"
    return f"{what} ({zone})"


def recent_failures(server: Server, limit: int = 10) -> list[dict[str, Any]]:
    runs = tables.runner_runs
    statement = (
        select(runs.c.job_id, runs.c.attempt, runs.c.status, runs.c.finished_at, runs.c.error)
        .where(runs.c.status.in_(FAILED))
        .order_by(runs.c.run_id.desc())
        .limit(limit)
    )
    with server.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        return [dict(row._mapping) for row in conn.execute(statement)]


def _short(moment: str | None) -> str:
    if moment is None:
        return ""
    return moment.replace("T", " ")[:19] + " UTC"


def _job_row(request: Request, job: dict[str, Any], refresh: int) -> str:
    job_id = job["id"]
    status = job["last_status"]
    if status:
        outcome = (
            f'<span class="status-{_e(status)}">{_e(status)}</span>'
            f"<br><small>{_e(_short(job['last_run_at']))}</small>"
        )
    else:
        outcome = '<span class="status-never">never run</span>'
    next_run = "paused" if job["paused"] else (_short(job["next_run_time"]) or "no further runs")
    buttons = []
    for action, label in (("run", "Run now"), ("pause" if not job["paused"] else "resume", "")):
        url = request.url_for("runner_page_action", job_id=job_id, action=action).path
        if refresh != DEFAULT_REFRESH:
            url += "?" + urlencode({"refresh": refresh})
        label = label or action.capitalize()
        buttons.append(
            f'<form class="action" method="post" action="{_e(url)}">'
            '<input type="hidden" name="token" value="">'
            f'<button type="submit" data-action="{action}" data-job="{_e(job_id)}">'
            f"{label}</button></form>"
        )
    detail = request.url_for("runner_api_job", job_id=job_id).path
    return (
        f'    <tr data-job="{_e(job_id)}">'
        f'<td class="id"><a href="{_e(detail)}">{_e(job_id)}</a>'
        f"<br><small>{_e(job['target'])}</small>"
        f'<br><small class="source">from {_e(job["source"])}</small></td>'
        f"<td>{_e(describe_trigger(job['trigger']))}</td>"
        f'<td class="next">{_e(next_run)}</td>'
        f'<td class="outcome">{outcome}</td>'
        f'<td class="paused">{"yes" if job["paused"] else "no"}</td>'
        f'<td class="actions">{"".join(buttons)}</td></tr>'
    )


def _control_box() -> str:
    mode = auth.control_mode()
    if mode == "insecure":
        return (
            f'<span class="pill bad">auth off</span> {auth.INSECURE_ENV}=1: '
            "anyone who can reach this page can press the buttons."
        )
    if mode == "disabled":
        return (
            f"Buttons are disabled: start the server with {auth.TOKEN_ENV} set, then type "
            "the token here."
        )
    return (
        '<label>Token <input id="token" type="password" autocomplete="off" size="32" '
        f'placeholder="value of {auth.TOKEN_ENV}"></label> '
        "<small>needed for the buttons; kept in this tab only</small>"
    )


def render(
    request: Request,
    server: Server,
    banner: str = "",
    banner_kind: str = "info",
    refresh: int = DEFAULT_REFRESH,
) -> str:
    jobs = queries.jobs(server.engine)
    failures = recent_failures(server)
    ready, details = api.readiness(server)
    page_url = request.url_for("runner_status_page").path
    if refresh != DEFAULT_REFRESH:
        page_url += "?" + urlencode({"refresh": refresh})
    failure_items = [
        f'<li><span class="status-{_e(f["status"])}">{_e(f["status"])}</span> '
        f"<code>{_e(f['job_id'])}</code> attempt {_e(f['attempt'])} "
        f"<small>{_e(_short(api.iso(f['finished_at'])))}</small><br>"
        f"<small>{_e(f['error'] or '')}</small></li>"
        for f in failures
    ] or ["<li><small>none</small></li>"]
    return TEMPLATE.substitute(
        node=_e(server.node),
        control_mode=_e(auth.control_mode()),
        role='<span class="pill ok">leader</span>'
        if details["leader"]
        else '<span class="pill">standby</span>',
        readiness='<span class="pill ok">ready</span>'
        if ready
        else f'<span class="pill bad" title="{_e(details["reason"])}">not ready</span>',
        job_count=len(jobs),
        now=_e(datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        page_url=_e(page_url),
        api_jobs_url=_e(request.url_for("runner_api_jobs").path),
        refresh=refresh,
        banner=f'<div class="banner {banner_kind}" role="status">{banner}</div>' if banner else "",
        broken=_broken_files(server),
        control=_control_box(),
        rows="\n".join(_job_row(request, job, refresh) for job in jobs)
        or '    <tr><td colspan="6"><small>no jobs</small></td></tr>',
        failures="\n".join(failure_items),
    )


def _broken_files(server: Server) -> str:
    """Broken job files first: an edit that did not apply is what an operator must not miss."""
    problems = server.reconcile_problems
    if not problems:
        return ""
    files = len(server.broken_files)
    items = "".join(f"<li><code>{_e(p)}</code></li>" for p in problems)
    return (
        f'<div class="banner error" id="broken" role="alert"><strong>{files} broken job '
        f"file(s)</strong>: their last valid jobs keep running, other files' changes apply, "
        f"and no job is deleted until they are fixed.<ul>{items}</ul></div>"
    )


async def _form_token(request: Request) -> str | None:
    """The token from the Authorization header, else from the urlencoded form body."""
    presented = auth.bearer_token(request)
    if presented is not None:
        return presented
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    try:
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:
        raise HTTPException(400, "malformed form") from None
    token = values.get("token", [""])[0]
    return token or None


def router(server: Server) -> APIRouter:
    page = APIRouter(include_in_schema=False)

    @page.get("/", response_class=HTMLResponse, name="runner_status_page")
    def status_page(
        request: Request,
        done: str | None = None,
        job: str | None = None,
        refresh: Annotated[int, Query(ge=0, le=3600)] = DEFAULT_REFRESH,
    ) -> HTMLResponse:
        banner = ""
        if done in DONE and job:
            banner = _e(DONE[done].format(job=job))
        with api.database_errors(server):
            return HTMLResponse(render(request, server, banner, refresh=refresh))

    @page.post("/ui/jobs/{job_id}/{action}", name="runner_page_action")
    async def page_action(
        request: Request,
        job_id: str,
        action: str,
        refresh: Annotated[int, Query(ge=0, le=3600)] = DEFAULT_REFRESH,
    ) -> Response:
        if action not in ACTIONS:
            raise HTTPException(404, f"unknown action {action!r}")
        try:
            auth.check(request, await _form_token(request))
        except auth.Denied as denied:
            return await _refused(request, denied.status, denied.message, refresh)
        try:
            done = await run_in_threadpool(_act, server, job_id, action)
        except HTTPException as exc:
            return await _refused(request, exc.status_code, str(exc.detail), refresh)
        target = request.url_for("runner_status_page").path
        query = {"done": done, "job": job_id}
        if refresh != DEFAULT_REFRESH:
            query["refresh"] = str(refresh)
        return RedirectResponse(f"{target}?{urlencode(query)}", 303)

    async def _refused(
        request: Request, status: int, message: str, refresh: int = DEFAULT_REFRESH
    ) -> Response:
        def build() -> str:
            return render(request, server, _e(f"Refused: {message}"), "error", refresh)

        try:
            text = await run_in_threadpool(build)
        except Exception:  # the database is away: the reason alone
            text = f"<!doctype html><title>refused</title><p>{_e(message)}</p>"
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTMLResponse(text, status_code=status, headers=headers)

    return page


def _act(server: Server, job_id: str, action: str) -> str:
    with api.database_errors(server):
        if action == "run":
            api.run_now(server, job_id)
            return "run"
        changed = api.pause(server, job_id, action == "pause")["changed"]
        return action if changed else f"{action}-unchanged"
