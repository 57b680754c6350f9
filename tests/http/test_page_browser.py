"""The status page in a real headless Chromium (Debian's `chromium` + `chromium-driver`),
driven with Selenium: it shows the jobs and their last outcome, and its buttons work."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from runner.http.server import HttpServer

TOKEN = "test-token-5f1c"
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
]
RED = "rgba(185, 28, 28, 1)"  # .status-failed
GREEN = "rgba(21, 128, 61, 1)"  # .status-succeeded


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
    """The last outcome's word and colour."""
    cell = row(driver, job_id).find_element(By.CSS_SELECTOR, "td.outcome span")
    return cell.text, cell.value_of_css_property("color")


def test_page_shows_outcomes_and_its_buttons_run_and_pause(
    live: HttpServer,
    token: str,
    browser: WebDriver,
    wait: Callable[..., Any],
    finished_run: Callable[..., dict[str, Any]],
) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as api:
        api.post("/api/jobs/boom/run", headers={"Authorization": f"Bearer {TOKEN}"})
        finished_run(api, "boom", ("failed",))

        browser.get(f"{live.url}/?refresh=0")
        assert browser.title.startswith("runner")
        assert outcome(browser, "boom") == ("failed", RED)
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
        assert outcome(browser, "tick") == ("succeeded", GREEN)

        # The token is remembered for the tab: pause works without typing it again.
        pause_tick = '//tr[@data-job="tick"]//button[@data-action="pause"]'
        browser.find_element(By.XPATH, pause_tick).click()
        wait(lambda: "Paused tick." in browser.page_source, 10, "the pause")
        assert row(browser, "tick").find_element(By.CSS_SELECTOR, "td.paused").text == "yes"
        assert api.get("/api/jobs/tick").json()["paused"] is True
        resume = '//tr[@data-job="tick"]//button[@data-action="resume"]'
        browser.find_element(By.XPATH, resume).click()
        wait(lambda: "Resumed tick." in browser.page_source, 10, "the resume")
        assert api.get("/api/jobs/tick").json()["paused"] is False
