"""Prometheus metrics, behind a tiny API the core calls at the moments that matter.

Every function here is safe to call from any thread and costs next to nothing. Without
prometheus-client installed (the core install, without the `http` extra) they do nothing,
so the core never needs to know whether metrics are wanted.

The metrics live in prometheus-client's default registry, so an application that embeds the
runner and already exposes `/metrics` shows them too. Label `job_id`, not `job`: Prometheus
attaches its own `job` label to every scraped series, and a clash renames ours.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:
    import prometheus_client
except ImportError:  # the core install: metrics are off
    prometheus_client = None  # type: ignore[assignment]

ENABLED = prometheus_client is not None
"""Whether metrics are collected (prometheus-client is importable)."""

CONTENT_TYPE = (
    prometheus_client.CONTENT_TYPE_LATEST
    if prometheus_client is not None
    else "text/plain; version=0.0.4; charset=utf-8"
)

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# name -> (kind, help, labels); the single source for the code below and for docs/http.md.
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "runner_runs_total": (
        "counter",
        "Finished attempts, by job and outcome status.",
        ("job_id", "status"),
    ),
    "runner_run_duration_seconds": (
        "histogram",
        "Wall-clock duration of each finished attempt.",
        ("job_id",),
    ),
    "runner_firing_lag_seconds": (
        "histogram",
        "How late first attempts start: started_at - scheduled_at.",
        (),
    ),
    "runner_runs_in_progress": ("gauge", "Attempts running now.", ()),
    "runner_retries_total": ("counter", "Attempts after the first, by job.", ("job_id",)),
    "runner_fires_missed_total": (
        "counter",
        "Fires that did not run, by job and status (missed or skipped).",
        ("job_id", "status"),
    ),
    "runner_reconciles_total": ("counter", "Reconciles of the job files.", ()),
    "runner_reconcile_errors_total": (
        "counter",
        "Reconciles that met a problem: an invalid file (new or edited) or a store error.",
        (),
    ),
    "runner_job_files_invalid": (
        "gauge",
        "Job files that are invalid now (their last valid jobs stay scheduled).",
        (),
    ),
    "runner_leader": ("gauge", "1 while this node leads (schedules), else 0.", ()),
    "runner_jobs_loaded": ("gauge", "Jobs the scheduler holds.", ()),
    "runner_ready": ("gauge", "1 while /readyz would answer 200, else 0.", ()),
    # Read from the store at scrape time (storemetrics.py): the same on every node.
    "runner_job_last_success_timestamp_seconds": (
        "gauge",
        "When the job's last succeeded attempt finished (Unix time); absent if it never did.",
        ("job_id",),
    ),
    "runner_job_last_failure_timestamp_seconds": (
        "gauge",
        "When the job's last failed, timed-out or interrupted attempt finished (Unix time).",
        ("job_id",),
    ),
    "runner_queue_depth": (
        "gauge",
        "Handed-over fires due and waiting for a worker, per queue (--executor procrastinate).",
        ("queue",),
    ),
    "runner_worker_attempts_running": (
        "gauge",
        "Attempts running on each live worker (--executor procrastinate).",
        ("worker",),
    ),
}
FROM_STORE = frozenset(
    {
        "runner_job_last_success_timestamp_seconds",
        "runner_job_last_failure_timestamp_seconds",
        "runner_queue_depth",
        "runner_worker_attempts_running",
    }
)
"""Metrics computed from the database when scraped, not counted by this process."""

_metrics: dict[str, Any] = {}


def _build() -> None:
    assert prometheus_client is not None
    kinds: dict[str, Any] = {
        "counter": prometheus_client.Counter,
        "gauge": prometheus_client.Gauge,
        "histogram": prometheus_client.Histogram,
    }
    for name, (kind, help_text, labels) in DEFINITIONS.items():
        if name in FROM_STORE:
            continue
        extra: dict[str, Any] = {}
        if name == "runner_run_duration_seconds":
            extra["buckets"] = DURATION_BUCKETS
        elif name == "runner_firing_lag_seconds":
            extra["buckets"] = LAG_BUCKETS
        # Counters are declared without the `_total` suffix; prometheus-client adds it.
        declared = name.removesuffix("_total") if kind == "counter" else name
        _metrics[name] = kinds[kind](declared, help_text, labels, **extra)


class _StoreCollector:
    """Yields the FROM_STORE families of the node being watched (none before `watch`)."""

    source: Any = None

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        families = {
            name: GaugeMetricFamily(name, DEFINITIONS[name][1], labels=DEFINITIONS[name][2])
            for name in sorted(FROM_STORE)
        }
        if self.source is not None:
            for name, labels, sample in self.source.samples():
                families[name].add_metric(list(labels.values()), sample)
        yield from families.values()

    def describe(self) -> Any:
        return []  # collected lazily: registering must not touch a database


_store = _StoreCollector()

if prometheus_client is not None:
    _build()
    prometheus_client.REGISTRY.register(_store)


def run_started(job_id: str, attempt: int, scheduled_at: datetime, started_at: datetime) -> None:
    """An attempt started; the first attempt's lateness is the firing lag."""
    if not ENABLED:
        return
    _metrics["runner_runs_in_progress"].inc()
    if attempt > 1:
        _metrics["runner_retries_total"].labels(job_id).inc()
    else:
        lag = (started_at - scheduled_at).total_seconds()
        _metrics["runner_firing_lag_seconds"].observe(max(lag, 0.0))


def run_finished(job_id: str, attempt: int, status: str, duration: float) -> None:
    """An attempt ended with `status` (succeeded, failed, timed_out, interrupted)."""
    if not ENABLED:
        return
    _metrics["runner_runs_in_progress"].dec()
    _metrics["runner_runs_total"].labels(job_id, status).inc()
    _metrics["runner_run_duration_seconds"].labels(job_id).observe(max(duration, 0.0))


def fire_marked(job_id: str, status: str) -> None:
    """A fire will not run: `missed` (late beyond grace, or coalesced) or `skipped`."""
    if not ENABLED:
        return
    _metrics["runner_fires_missed_total"].labels(job_id, status).inc()


def reconciled(ok: bool) -> None:
    if not ENABLED:
        return
    _metrics["runner_reconciles_total"].inc()
    if not ok:
        _metrics["runner_reconcile_errors_total"].inc()


def set_broken_files(n: int) -> None:
    if not ENABLED:
        return
    _metrics["runner_job_files_invalid"].set(n)


def set_leader(leading: bool) -> None:
    if not ENABLED:
        return
    _metrics["runner_leader"].set(1 if leading else 0)


def set_jobs(n: int) -> None:
    if not ENABLED:
        return
    _metrics["runner_jobs_loaded"].set(n)


def set_ready(ready: bool) -> None:
    if not ENABLED:
        return
    _metrics["runner_ready"].set(1 if ready else 0)


def watch(engine: Any, workers: bool) -> None:
    """Read the per-job and worker metrics from this node's store from now on (the latest
    call wins: one serving node per process)."""
    if not ENABLED:
        return
    from runner.storemetrics import StoreMetrics

    _store.source = StoreMetrics(engine, workers)


def exposition() -> bytes:
    """The Prometheus text format of the default registry (runner and process metrics)."""
    if prometheus_client is None:
        return b""
    return prometheus_client.generate_latest(prometheus_client.REGISTRY)


def value(name: str, **labels: str) -> float | None:
    """A sample's current value from the default registry, for tests and the status page."""
    if prometheus_client is None:
        return None
    result = prometheus_client.REGISTRY.get_sample_value(name, labels)
    return None if result is None else float(result)
