"""The per-job last-outcome metrics and the shipped alert rules, against a real `runner serve`.

promtool is not part of the test environment, so the rules file is checked as YAML of the
Prometheus rule-file shape, and every metric its expressions name must appear in a real
scrape of a real serve.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from runner import metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docs" / "alerts.yaml"
TOKEN = "metrics-token-2b7e"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Series suffixes a histogram's or counter's expression may use beyond its base name.
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def _sample(text: str, name: str, **labels: str) -> float | None:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}\{{{re.escape(inner)}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.M)
    return None if found is None else float(found[1])


def _rule_metrics() -> set[str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    names: set[str] = set()
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules"}, group.keys()
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] and isinstance(rule["expr"], str), rule
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
            names.update(re.findall(r"\brunner_[a-z_]+", rule["expr"]))
    return names


def test_the_rules_file_is_a_prometheus_rule_file_naming_only_real_metrics() -> None:
    names = _rule_metrics()
    known = {
        name + suffix
        for name, (kind, _help, _labels) in metrics.DEFINITIONS.items()
        for suffix in ("", *SUFFIXES)
    }
    assert names, "no runner metric in the rules"
    assert names <= known, names - known
    # The alerts the docs promise are there.
    for wanted in (
        "runner_job_last_success_timestamp_seconds",
        "runner_job_last_failure_timestamp_seconds",
        "runner_ready",
        "runner_reconcile_errors_total",
        "runner_queue_depth",
    ):
        assert wanted in names, wanted


def test_a_real_serve_scrape_has_last_outcome_times_and_every_alert_metric(
    jobs_dir: Path,
    tmp_path: Path,
    child_env: Callable[..., dict[str, str]],
    processes: Callable[..., Any],
    wait: Callable[..., Any],
) -> None:
    db = f"sqlite:///{tmp_path}/serve.db"
    env = child_env(RUNNER_HTTP_TOKEN=TOKEN)
    args = ["-m", "runner", "serve", str(jobs_dir), "--db", db, "--http", "127.0.0.1:0"]
    serve = processes(args, env, tmp_path)
    found = re.search(r"http://127\.0\.0\.1:\d+", serve.wait_for_line("HTTP on http://"))
    assert found is not None
    with httpx.Client(base_url=found[0], timeout=10) as client:
        wait(lambda: client.get("/readyz").status_code == 200, 20, "readiness")
        before = client.get("/metrics").text
        assert _sample(before, "runner_job_last_success_timestamp_seconds", job_id="tick") is None

        def finished(job_id: str, status: str) -> dict[str, Any] | None:
            rows = client.get("/api/runs", params={"job": job_id, "status": status}).json()
            return rows[0] if rows else None

        for job_id in ("tick", "boom"):
            assert client.post(f"/api/jobs/{job_id}/run", headers=BEARER).status_code == 202
        ok = wait(lambda: finished("tick", "succeeded"), 20, "tick to succeed")
        bad = wait(lambda: finished("boom", "failed"), 20, "boom to fail")

        # The values are read from the store, at most MAX_AGE old: wait for the refresh.
        def scraped() -> str | None:
            text: str = client.get("/metrics").text
            has = _sample(text, "runner_job_last_failure_timestamp_seconds", job_id="boom")
            return text if has is not None else None

        text = wait(scraped, 20, "the last-outcome series")
        success = _sample(text, "runner_job_last_success_timestamp_seconds", job_id="tick")
        failure = _sample(text, "runner_job_last_failure_timestamp_seconds", job_id="boom")
        assert success == pytest.approx(datetime.fromisoformat(ok["finished_at"]).timestamp())
        assert failure == pytest.approx(datetime.fromisoformat(bad["finished_at"]).timestamp())
        assert _sample(text, "runner_job_last_success_timestamp_seconds", job_id="boom") is None
        assert _sample(text, "runner_job_last_failure_timestamp_seconds", job_id="tick") is None
        assert _sample(text, "runner_ready") == 1.0
        # Every metric an alert names is in the exposition of a real serve (the worker
        # gauges as empty families: this serve runs its fires itself).
        for name in _rule_metrics():
            base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
            assert re.search(rf"^# TYPE {base} ", text, re.M), name

    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(20) == 0, serve.output()
