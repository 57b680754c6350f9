"""Kept for imports and for the entry point stored in every APScheduler row (`run_job`)."""

from runner.executors.attempt import (
    Fire,
    Outcome,
    Recorder,
    Status,
    attempt,
    retries_of,
    run_fire,
    run_job,
)

__all__ = ["Fire", "Outcome", "Recorder", "Status", "attempt", "retries_of", "run_fire", "run_job"]
