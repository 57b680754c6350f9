"""The status page: server-rendered HTML with a form per button, no build step.

`/` lists the jobs a page at a time, each with a strip of its last outcomes, then the fires
of the next 24 hours and the recent failures; `/jobs/{id}` shows one job, its history and
its last traceback. Broken job files come first on both.

The buttons post forms to `/ui/jobs/{id}/{action}`; the token travels in a form field (filled
from the page's token box by the page's script), never in a cookie, so another site cannot
press them for the operator. After an action the browser is redirected back to the page
(post/redirect/get); a refused action shows the page with the reason and its status.

The page's CSS and script are files served by the runner itself, so its
Content-Security-Policy allows no inline code and no other origin.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from runner import queries, report
from runner.http import api, auth, pagedata
from runner.http.pagehtml import (
    e,
    first_line,
    last,
    legend,
    moment,
    program,
    strip,
    timeline,
    word,
)

if TYPE_CHECKING:
    from runner.http.host import Host

MAX_FORM_BYTES = 4096
ACTIONS = ("run", "pause", "resume")
DEFAULT_REFRESH = 15
"""Seconds between the page's own reloads (`?refresh=N`, 0 = never)."""
JOB_RUNS = 30
DONE = {
    "run": "Started a run of {job}.",
    "pause": "Paused {job}.",
    "resume": "Resumed {job}.",
    "pause-unchanged": "{job} was already paused.",
    "resume-unchanged": "{job} was already running on schedule.",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
"""The page's own policy, stricter than the server-wide one: no inline code, no other origin."""


def _package_text(name: str) -> str:
    return resources.files("runner.http").joinpath(name).read_text("utf-8")


TEMPLATE = Template(_package_text("templates/page.html"))
STATIC = {
    "page.css": ("text/css; charset=utf-8", _package_text("static/page.css")),
    "page.js": ("text/javascript; charset=utf-8", _package_text("static/page.js")),
}
VERSION = {
    name: hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    for name, (_, text) in STATIC.items()
}
"""Part of each asset's URL, so a new release is never served an old cached copy."""


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(
        text,
        status_code=status,
        headers={**(headers or {}), "Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )


def _with_refresh(url: str, refresh: int) -> str:
    return url + "?" + urlencode({"refresh": refresh}) if refresh != DEFAULT_REFRESH else url


def _layout(request: Request, title: str, body: str, page_url: str, refresh: int) -> str:
    def asset(name: str) -> str:
        path = request.url_for("runner_page_static", name=name).path
        return f"{path}?v={VERSION[name]}"

    return TEMPLATE.substitute(
        title=e(title),
        css_url=e(asset("page.css")),
        js_url=e(asset("page.js")),
        control_mode=e(auth.control_mode()),
        page_url=e(page_url),
        refresh=refresh,
        body=body,
    )


# --- parts both pages show --------------------------------------------------------------------
def _header(request: Request, server: Host, extra: str = "") -> str:
    """Who is speaking, who leads, whether it is ready; then the broken job files."""
    ready, details = api.readiness(server)
    leader = queries.status(server.engine)["leader"]
    if details["leader"]:
        role = '<span class="pill ok" id="role">leader</span>'
    elif leader is not None:
        role = (
            f'<span class="pill" id="role">standby</span> leader is '
            f'<code id="leader">{e(leader["node"])}</code>'
        )
    else:
        role = '<span class="pill bad" id="role">standby, no leader now</span>'
    readiness = (
        '<span class="pill ok">ready</span>'
        if ready
        else f'<span class="pill bad" title="{e(details["reason"])}">not ready: '
        f"{e(details['reason'])}</span>"
    )
    home = request.url_for("runner_status_page").path
    return (
        f'<h1><a href="{e(home)}">runner</a>{extra}</h1>\n'
        f'<div class="meta">node <code>{e(server.node)}</code> &middot; {role} &middot; '
        f"{readiness} &middot; as of {moment(datetime.now(UTC))}</div>\n"
        f"{_broken_files(server)}"
    )


def _broken_files(server: Host) -> str:
    """Broken job files first: an edit that did not apply is what an operator must not miss."""
    problems = server.reconcile_problems
    if not problems:
        return ""
    files = len(server.broken_files)
    items = "".join(f"<li><code>{e(p)}</code></li>" for p in problems)
    return (
        f'<div class="banner error" id="broken" role="alert"><strong>{files} broken job '
        f"file(s)</strong>: their last valid jobs keep running, other files' changes apply, "
        f"and no job is deleted until they are fixed.<ul>{items}</ul></div>\n"
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
            f"Buttons are disabled: start the server with {auth.TOKEN_ENV} set to a secret "
            "and a token box appears here (or, for local use only, "
            f"{auth.INSECURE_ENV}=1 turns auth off)."
        )
    return (
        '<label>Token <input id="token" type="password" autocomplete="off" size="32" '
        f'placeholder="value of {auth.TOKEN_ENV}"></label> '
        "<small>needed for the buttons; kept in this tab only</small>"
    )


def _buttons(
    request: Request, job_id: str, paused: bool, refresh: int, back: str | None = None
) -> str:
    off = " disabled" if auth.control_mode() == "disabled" else ""
    out = []
    for action, label in (
        ("run", "Run now"),
        ("resume", "Resume") if paused else ("pause", "Pause"),
    ):
        url = request.url_for("runner_page_action", job_id=job_id, action=action).path
        query = {"back": back} if back else {}
        if refresh != DEFAULT_REFRESH:
            query["refresh"] = str(refresh)
        if query:
            url += "?" + urlencode(query)
        out.append(
            f'<form class="action" method="post" action="{e(url)}">'
            '<input type="hidden" name="token" value="">'
            f'<button type="submit" data-action="{action}" data-job="{e(job_id)}"{off}>'
            f"{label}</button></form>"
        )
    return "".join(out)


# --- the job list ---------------------------------------------------------------------------
def _job_row(
    request: Request, job: dict[str, Any], runs: list[dict[str, Any]], refresh: int
) -> str:
    job_id = job["id"]
    job_url = request.url_for("runner_job_page", job_id=job_id).path
    if job["paused"]:
        upcoming = '<span class="muted">paused</span>'
    elif job["next_run_time"] is None:
        upcoming = '<span class="muted">no further runs</span>'
    else:
        upcoming = moment(job["next_run_time"])
    state = (
        f"paused<br><small>{e(job['paused_why'])}</small>"
        if job["paused"]
        else "scheduled"
        + (f"<br><small>{e(job['paused_why'])}</small>" if job["paused_why"] else "")
    )
    return (
        f'    <tr data-job="{e(job_id)}">'
        f'<td class="id"><a href="{e(job_url)}">{e(job_id)}</a>'
        f"<br><small>{e(program(job))}</small>"
        f'<br><small class="source">from {e(job["source"])}</small></td>'
        f'<td class="trigger">{e(report.trigger(job["trigger"]))}</td>'
        f'<td class="next">{upcoming}</td>'
        f'<td class="history">{strip(runs, job_url)}</td>'
        f'<td class="last">{last(runs)}</td>'
        f'<td class="paused" data-paused="{"yes" if job["paused"] else "no"}">{state}</td>'
        f'<td class="actions">{_buttons(request, job_id, job["paused"], refresh)}</td></tr>'
    )


def render(
    request: Request,
    server: Host,
    banner: str = "",
    banner_kind: str = "info",
    refresh: int = DEFAULT_REFRESH,
    after: str | None = None,
) -> str:
    listing = pagedata.listing(server.engine, after)
    runs = pagedata.strips(server.engine, [job["id"] for job in listing.jobs])
    plan = pagedata.timeline(server.engine)
    failures = pagedata.failures(server.engine)
    page_url = _with_refresh(request.url_for("runner_status_page").path, refresh)
    rows = "\n".join(_job_row(request, job, runs[job["id"]], refresh) for job in listing.jobs)
    first = request.url_for("runner_status_page").path
    pager = [f"{len(listing.jobs)} of {listing.total} job(s), by id"]
    if after is not None:
        pager.append(f'<a href="{e(_with_refresh(first, refresh))}">first page</a>')
    if listing.next_after is not None:
        query = {"after": listing.next_after, "refresh": refresh}
        pager.append(f'<a id="next-page" href="{e(first)}?{e(urlencode(query))}">next page</a>')
    failure_items = [
        f"<li>{word(f['status'])} "
        f'<a href="{e(request.url_for("runner_job_page", job_id=f["job_id"]).path)}#run-'
        f'{f["run_id"]}"><code>{e(f["job_id"])}</code></a> attempt {e(f["attempt"])} '
        f"<small>{moment(f['finished_at'])}</small><br>"
        f"<small>{e(first_line(f['error']))}</small></li>"
        for f in failures
    ] or ["<li><small>none</small></li>"]

    def job_url(job_id: str) -> str:
        return request.url_for("runner_job_page", job_id=job_id).path

    body = (
        _header(request, server)
        + (f'<div class="banner {banner_kind}" role="status">{banner}</div>\n' if banner else "")
        + f'<div id="control">{_control_box()}</div>\n'
        + f"<h2>Jobs</h2>\n{legend()}\n"
        + '<table id="jobs">\n  <thead>\n    <tr><th>Job</th><th>Trigger</th><th>Next run</th>'
        + f"<th>Last {pagedata.STRIP} runs</th><th>Last outcome</th><th>State</th>"
        + "<th>Actions</th></tr>\n  </thead>\n  <tbody>\n"
        + (rows or '    <tr><td colspan="7"><small>no jobs</small></td></tr>')
        + "\n  </tbody>\n</table>\n"
        + f'<div class="pager" id="pager">{" &middot; ".join(pager)}</div>\n'
        + f"<h2>Next {pagedata.TIMELINE_HOURS} hours</h2>\n{timeline(plan, job_url)}\n"
        + '<h2>Recent failures</h2>\n<ul id="failures">\n'
        + "\n".join(failure_items)
        + "\n</ul>\n"
        + f'<p><small><a href="{e(request.url_for("runner_api_jobs").path)}">JSON</a> &middot; '
        + f'<a href="{e(page_url)}">reload</a></small></p>'
    )
    return _layout(request, f"runner: {server.node}", body, page_url, refresh)


# --- one job --------------------------------------------------------------------------------
def _state(job: dict[str, Any]) -> str:
    paused, why = pagedata.paused_state(job["spec"], job["override"])
    if job["override"] is not None:
        why += " (runner pause/resume, the API or this page change it)"
    return ("paused" if paused else "scheduled") + (f" <small>({e(why)})</small>" if why else "")


def render_job(request: Request, server: Host, job_id: str, refresh: int, banner: str = "") -> str:
    job = queries.show(server.engine, job_id, runs_count=JOB_RUNS, next_count=5)
    runs = list(reversed(job["runs"]))
    page_url = _with_refresh(request.url_for("runner_job_page", job_id=job_id).path, refresh)
    spec = job["spec"]
    facts = [
        ("command" if job.get("command") else "target", f"<code>{e(program(job))}</code>"),
        ("source", f'<code id="source">{e(job["source"])}</code>'),
        ("trigger", f'<span id="trigger">{e(report.trigger(job["trigger"]))}</span>'),
        ("state", f'<span id="state">{_state(job)}</span>'),
        ("next fires", ", ".join(moment(t) for t in job["next"]) or "none"),
        ("applied", f"{moment(job['applied_at'])} by {e(job['applied_by'])}"),
    ]
    if spec.get("description"):
        facts.insert(0, ("description", e(spec["description"])))
    policy = []
    if spec.get("timeout"):
        policy.append(f"timeout {report.took(spec['timeout'])}")
    if spec.get("retries", {}).get("max_attempts", 1) > 1:
        policy.append(f"{spec['retries']['max_attempts']} attempts")
    if spec.get("queue"):
        policy.append(f"queue {spec['queue']}")
    if policy:
        facts.append(("policy", e(", ".join(policy))))
    buttons = _buttons(request, job_id, job["paused"], refresh, back="job")
    dl = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    history_rows = (
        "".join(
            f'<tr id="run-{r["run_id"]}" data-status="{e(r["status"])}"><td>{r["run_id"]}</td>'
            f"<td>{moment(r['scheduled_at'])}</td><td>{r['attempt']}</td><td>{word(r['status'])}</td>"
            f"<td>{e(report.took(r['duration']))}</td><td><code>{e(r['node'])}</code></td>"
            f"<td><small>{e(first_line(r['error']))}</small></td></tr>"
            for r in job["runs"]
        )
        or '<tr><td colspan="7"><small>never run</small></td></tr>'
    )
    failure = job["last_failure"]
    if failure is None:
        failure_html = '<p class="muted" id="last-failure">No failure recorded.</p>'
    else:
        failure_html = (
            f'<div id="last-failure"><p>{word(failure["status"])} run '
            f'<a href="#run-{failure["run_id"]}">{failure["run_id"]}</a>, attempt '
            f"{failure['attempt']}, {moment(failure['finished_at'])} on "
            f"<code>{e(failure['node'])}</code></p>"
            f'<pre id="error">{e(failure["error"] or "(no error recorded)")}</pre>'
            + (
                f'<pre id="traceback">{e(failure["traceback"].rstrip())}</pre>'
                if failure["traceback"]
                else ""
            )
            + "</div>"
        )
    body = (
        _header(request, server, f" / {e(job_id)}")
        + (f'<div class="banner info" role="status">{banner}</div>\n' if banner else "")
        + f'<div id="control">{_control_box()}</div>\n'
        + f'<div class="actions" id="job-actions">{buttons}</div>\n'
        + f'<h2>Job</h2>\n<dl class="facts" id="facts">{dl}</dl>\n'
        + f"<h2>Last {len(runs)} runs</h2>\n{legend()}\n"
        + f'<p id="strip">{strip(runs, page_url)}</p>\n'
        + f"<h2>Last failure</h2>\n{failure_html}\n"
        + '<h2>History</h2>\n<table id="history" class="history"><thead><tr><th>Run</th>'
        + "<th>Scheduled</th><th>Attempt</th><th>Status</th><th>Duration</th><th>Node</th>"
        + f"<th>Error</th></tr></thead><tbody>{history_rows}</tbody></table>\n"
        + f'<p><small><a href="{e(request.url_for("runner_api_job", job_id=job_id).path)}">'
        + "JSON</a></small></p>"
    )
    return _layout(request, f"runner: {job_id}", body, page_url, refresh)


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


def _banner(done: str | None, job: str | None) -> str:
    return e(DONE[done].format(job=job)) if done in DONE and job else ""


Refresh = Annotated[int, Query(ge=0, le=3600)]


def router(server: Host) -> APIRouter:
    page = APIRouter(include_in_schema=False)

    @page.get("/", response_class=HTMLResponse, name="runner_status_page")
    def status_page(
        request: Request,
        done: str | None = None,
        job: str | None = None,
        after: Annotated[str | None, Query(max_length=200)] = None,
        refresh: Refresh = DEFAULT_REFRESH,
    ) -> HTMLResponse:
        with api.database_errors(server):
            return _html(render(request, server, _banner(done, job), refresh=refresh, after=after))

    @page.get("/jobs/{job_id}", response_class=HTMLResponse, name="runner_job_page")
    def job_page(
        request: Request, job_id: str, done: str | None = None, refresh: Refresh = DEFAULT_REFRESH
    ) -> HTMLResponse:
        try:
            with api.database_errors(server):
                text = render_job(request, server, job_id, refresh, _banner(done, job_id))
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            text = render(request, server, e(f"No job {job_id!r}."), "error", refresh)
            return _html(text, 404)
        return _html(text)

    @page.get("/ui/static/{name}", name="runner_page_static")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        media, text = STATIC[name]
        return Response(text, media_type=media, headers={"Cache-Control": "max-age=86400"})

    @page.post("/ui/jobs/{job_id}/{action}", name="runner_page_action")
    async def page_action(
        request: Request,
        job_id: str,
        action: str,
        back: Annotated[str | None, Query(pattern="^job$")] = None,
        refresh: Refresh = DEFAULT_REFRESH,
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
        query = {"done": done}
        if back == "job":
            target = request.url_for("runner_job_page", job_id=job_id).path
        else:
            target = request.url_for("runner_status_page").path
            query["job"] = job_id
        if refresh != DEFAULT_REFRESH:
            query["refresh"] = str(refresh)
        return RedirectResponse(f"{target}?{urlencode(query)}", 303)

    async def _refused(
        request: Request, status: int, message: str, refresh: int = DEFAULT_REFRESH
    ) -> Response:
        def build() -> str:
            return render(request, server, e(f"Refused: {message}"), "error", refresh)

        try:
            text = await run_in_threadpool(build)
        except Exception:  # the database is away: the reason alone
            text = f"<!doctype html><title>refused</title><p>{e(message)}</p>"
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _html(text, status, headers)

    return page


def _act(server: Host, job_id: str, action: str) -> str:
    with api.database_errors(server):
        if action == "run":
            api.run_now(server, job_id)
            return "run"
        changed = api.pause(server, job_id, action == "pause")["changed"]
        return action if changed else f"{action}-unchanged"
