"""The status page in a real headless Chromium (Debian's `chromium` + `chromium-driver`),
driven with Selenium: its buttons work, its strips, job page, timeline, broken files and
relative times show what the store holds, and it saves the screenshots in `docs/`.

The screenshots go to the test's temporary folder unless `RUNNER_PAGE_SCREENSHOTS` names a
folder, so a test run never touches the repository by itself; docs/page.md gives the command
that refreshes `docs/screenshots/`.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from runner.http.server import HttpServer, start_in_thread
from runner.serve import Server
from runner.store import tables

TOKEN = "test-token-5f1c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SCREENSHOTS_ENV = "RUNNER_PAGE_SCREENSHOTS"
SCREENSHOTS = (
    Path(os.environ[SCREENSHOTS_ENV]).resolve() if os.environ.get(SCREENSHOTS_ENV) else None
)
"""Resolved at import, before a test moves into its temporary folder."""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
COLOURS = {  # page.css, as the browser computes them
    "succeeded": "rgba(22, 163, 74, 1)",
    "failed": "rgba(220, 38, 38, 1)",
    "timed_out": "rgba(159, 18, 57, 1)",
    "interrupted": "rgba(234, 88, 12, 1)",
    "missed": "rgba(161, 98, 7, 1)",
    "skipped": "rgba(148, 163, 184, 1)",
    "running": "rgba(37, 99, 235, 1)",
    "queued": "rgba(124, 58, 237, 1)",
}
RELATIVE = re.compile(r"^(now|in \d+ (s|min|h|d)|\d+ (s|min|h|d) ago)$")

SCREEN_JOBS = """\
jobs:
  - id: nightly-report
    target: sampleapp.jobs:send_report
    kwargs: {recipients: [ops@example.com]}
    trigger: {cron: "30 2 * * *", timezone: Europe/Berlin}
    description: The nightly sales report
  - id: sync-orders
    target: sampleapp.jobs:tick
    trigger: {interval: 15m}
  - id: cleanup-tmp
    target: sampleapp.jobs:tick
    trigger: {cron: "0 */6 * * *"}
  - id: export-ledger
    target: sampleapp.jobs:boom
    trigger: {cron: "0 * * * *"}
    timeout: 5m
  - id: billing-close
    target: sampleapp.jobs:tick
    trigger: {cron: "0 0 1 * *"}
    paused: true
  - id: mixed
    target: sampleapp.jobs:tick
    trigger: {interval: 1d}
"""
BROKEN = "jobs:\n  - id: half-written\n    target: sampleapp.jobs:tick\n    trigger: {cron: nope}\n"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: install Debian's chromium and chromium-driver (scripts/test does)",
            pytrace=False,
        )
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = _tool("chromium")
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(
        service=Service(executable_path=_tool("chromedriver")), options=options
    )
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def row(driver: WebDriver, job_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')


def outcome(driver: WebDriver, job_id: str) -> tuple[str, str]:
    """The last outcome's word and colour, or the strip's "never run"."""
    found = row(driver, job_id).find_elements(By.CSS_SELECTOR, "td.last span")
    if not found:
        return row(driver, job_id).find_element(By.CSS_SELECTOR, "td.history").text, ""
    return found[0].text, found[0].value_of_css_property("color")


def test_page_shows_outcomes_and_its_buttons_run_and_pause(
    live: HttpServer,
    token: str,
    browser: WebDriver,
    wait: Callable[..., Any],
    finished_run: Callable[..., dict[str, Any]],
) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as api:
        api.post("/api/jobs/boom/run", headers=BEARER)
        finished_run(api, "boom", ("failed",))

        browser.get(f"{live.url}/?refresh=0")
        assert browser.title.startswith("runner")
        assert outcome(browser, "boom") == ("failed", COLOURS["failed"])
        assert outcome(browser, "tick")[0] == "never run"
        failures = browser.find_element(By.ID, "failures").text
        assert "boom" in failures and "ValueError: boom" in failures

        # Without the token the button is refused, and the page says why.
        run_tick = '//tr[@data-job="tick"]//button[@data-action="run"]'
        browser.find_element(By.XPATH, run_tick).click()
        wait(lambda: "Refused" in browser.page_source, 10, "the refusal")
        assert "missing token" in browser.find_element(By.CSS_SELECTOR, ".banner.error").text
        assert api.get("/api/runs", params={"job": "tick"}).json() == []

        # With the token typed in, "Run now" produces a run in the history.
        browser.get(f"{live.url}/?refresh=0")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.XPATH, run_tick).click()
        wait(lambda: "Started a run of tick." in browser.page_source, 10, "the confirmation")
        assert browser.current_url.endswith("/?done=run&job=tick&refresh=0")
        run = finished_run(api, "tick")
        assert run["attempt"] == 1

        browser.get(f"{live.url}/?refresh=0")
        assert outcome(browser, "tick") == ("succeeded", COLOURS["succeeded"])

        # The token is remembered for the tab: pause works without typing it again.
        pause_tick = '//tr[@data-job="tick"]//button[@data-action="pause"]'
        browser.find_element(By.XPATH, pause_tick).click()
        wait(lambda: "Paused tick." in browser.page_source, 10, "the pause")
        state = row(browser, "tick").find_element(By.CSS_SELECTOR, "td.paused")
        assert state.get_attribute("data-paused") == "yes"
        assert "paused by an operator" in state.text
        assert api.get("/api/jobs/tick").json()["paused"] is True

        # The job page's own buttons come back to the job page.
        browser.get(f"{live.url}/jobs/tick?refresh=0")
        browser.find_element(By.CSS_SELECTOR, '#job-actions button[data-action="resume"]').click()
        wait(lambda: "Resumed tick." in browser.page_source, 10, "the resume")
        assert browser.current_url.endswith("/jobs/tick?done=resume&refresh=0")
        assert api.get("/api/jobs/tick").json()["paused"] is False


def test_without_a_token_configured_the_buttons_are_disabled_as_the_page_says(
    live: HttpServer, browser: WebDriver
) -> None:
    browser.get(f"{live.url}/?refresh=0")
    assert browser.find_element(By.ID, "control").text.startswith("Buttons are disabled")
    buttons = browser.find_elements(By.CSS_SELECTOR, "#jobs button")
    assert buttons and not any(b.is_enabled() for b in buttons)


# --- what an operator sees: strips, timeline, broken files, the job page ---------------------
def _seed(server: Server, job_id: str, statuses: list[str], start: datetime) -> None:
    """History rows as the runner writes them: one attempt per fire, minutes apart."""
    rows = []
    for index, status in enumerate(statuses):
        scheduled = start + timedelta(minutes=15 * index)
        done = status not in ("running", "queued")
        rows.append(
            {
                "job_id": job_id,
                "scheduled_at": scheduled,
                "attempt": 1,
                "status": status,
                "started_at": None if status in ("queued", "missed") else scheduled,
                "finished_at": scheduled + timedelta(seconds=2 + index % 7) if done else None,
                "duration": 2.0 + index % 7 if done and status not in ("missed",) else None,
                "error": "ValueError: seeded" if status == "failed" else None,
                "traceback": None,
                "node": server.node,
            }
        )
    with server.engine.begin() as conn:
        conn.execute(tables.runner_runs.insert(), rows)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _screenshot(driver: WebDriver, folder: Path, name: str) -> Path:
    """The whole page in one PNG: the window is made as tall as the page first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 140, 4000))
    view = driver.execute_script(
        "return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]"
    )
    path = folder / name
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    assert _png_size(path) == (int(view[0]), int(view[1]))
    assert _png_size(path)[0] == 1280
    return path


@pytest.fixture
def screen_server(
    tmp_path: Path,
    make_server: Callable[..., Server],
    sqlite_url: str,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Server, HttpServer, Path]]:
    monkeypatch.chdir(tmp_path)  # the page shows sources as the server was given them
    folder = Path("jobs.d")
    folder.mkdir()
    (folder / "jobs.yaml").write_text(SCREEN_JOBS, encoding="utf-8")
    server = make_server(folder, sqlite_url)
    http = start_in_thread(server, "127.0.0.1:0")
    yield server, http, folder
    http.stop()


def test_strips_job_page_timeline_broken_files_and_times_and_the_screenshots(
    screen_server: tuple[Server, HttpServer, Path],
    browser: WebDriver,
    wait: Callable[..., Any],
    finished_run: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    server, live, folder = screen_server
    shots = SCREENSHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    every = list(COLOURS)
    _seed(server, "mixed", every, now - timedelta(hours=3))
    _seed(
        server,
        "sync-orders",
        ["succeeded"] * 26 + ["failed"] + ["succeeded"] * 3,
        now - timedelta(hours=8),
    )
    _seed(
        server,
        "cleanup-tmp",
        ["succeeded", "skipped", "succeeded", "missed", "succeeded"],
        now - timedelta(days=2),
    )
    _seed(
        server,
        "nightly-report",
        ["succeeded"] * 11 + ["timed_out", "succeeded", "interrupted", "succeeded"],
        now - timedelta(days=20),
    )
    ledger = ["succeeded"] * 17 + ["timed_out", "succeeded", "succeeded"]
    _seed(server, "export-ledger", ledger, now - timedelta(hours=21))
    with httpx.Client(base_url=live.url, timeout=10) as api:
        assert api.post("/api/jobs/export-ledger/run", headers=BEARER).status_code == 202
        failed = finished_run(api, "export-ledger", ("failed",))

    # A half-written file arrives while the server runs, as hot reload sees it.
    (folder / "half.yaml").write_text(BROKEN, encoding="utf-8")
    server.reconcile({str(folder / "half.yaml")})
    assert server.broken_files

    browser.get(f"{live.url}/?refresh=0")
    # Broken files come first, above the jobs.
    broken = browser.find_element(By.ID, "broken")
    assert "half.yaml" in broken.text and "1 broken job file(s)" in broken.text
    assert broken.location["y"] < browser.find_element(By.ID, "jobs").location["y"]

    # The strip: one cell per attempt, oldest first, coloured by its outcome.
    cells = row(browser, "mixed").find_elements(By.CSS_SELECTOR, ".strip .cell")
    assert [c.get_attribute("data-status") for c in cells] == every
    assert [c.value_of_css_property("background-color") for c in cells] == list(COLOURS.values())
    assert cells[1].get_attribute("title").startswith("failed · 3.00s · attempt 1 · ")
    assert len(row(browser, "sync-orders").find_elements(By.CSS_SELECTOR, ".strip .cell")) == 30
    assert outcome(browser, "mixed") == ("queued", COLOURS["queued"])

    # Times turn relative in the browser; the UTC time stays on hover.
    nxt = row(browser, "sync-orders").find_element(By.CSS_SELECTOR, "td.next time")
    wait(lambda: RELATIVE.match(nxt.text), 10, "a relative next run")
    assert nxt.text.startswith("in ") and "UTC" in nxt.get_attribute("title")
    for element in browser.find_elements(By.CSS_SELECTOR, "#jobs time"):
        assert RELATIVE.match(element.text), element.text

    # The timeline: the nightly report's next 02:30 in Berlin, drawn with its UTC time.
    berlin = datetime.now(ZoneInfo("Europe/Berlin"))
    fire = berlin.replace(hour=2, minute=30, second=0, microsecond=0)
    if fire <= berlin:
        fire += timedelta(days=1)
    marks = browser.find_elements(
        By.CSS_SELECTOR, 'svg.timeline rect.fire[data-job="nightly-report"]'
    )
    assert len(marks) == 1
    title = marks[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert title == f"nightly-report at {fire.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    lanes = browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect.fire")
    assert not browser.find_elements(By.CSS_SELECTOR, 'rect.fire[data-job="billing-close"]')
    assert len(lanes) > 48
    _screenshot(browser, shots, "status-jobs.png")

    # The job page: as stored, its history, and the last failure's traceback.
    browser.set_window_size(1280, 1000)
    row(browser, "export-ledger").find_element(By.CSS_SELECTOR, "td.id a").click()
    wait(lambda: browser.find_elements(By.ID, "traceback"), 10, "the job page")
    assert browser.current_url.endswith("/jobs/export-ledger")
    facts = browser.find_element(By.ID, "facts").text
    assert "cron '0 * * * *' UTC" in facts and "timeout 5m" in facts
    assert browser.find_element(By.ID, "source").text.endswith("jobs.yaml:13")
    trace = browser.find_element(By.ID, "traceback").text
    assert trace.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("boom")' in trace and trace.rstrip().endswith("ValueError: boom")
    history = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(history) == len(ledger) + 1
    assert history[0].get_attribute("id") == f"run-{failed['run_id']}"
    assert [h.get_attribute("data-status") for h in history[1:]] == ledger[::-1]
    assert re.search(r"failed \d+\.\d\ds ", history[0].text), history[0].text
    _screenshot(browser, shots, "status-job.png")

    # A paused job says who paused it.
    browser.get(f"{live.url}/jobs/billing-close?refresh=0")
    assert browser.find_element(By.ID, "state").text == "paused (paused in its file)"
