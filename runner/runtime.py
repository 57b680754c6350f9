"""Kept for imports: the local executor lives in `runner.executors.local`."""

from runner.executors.local import SKIP_REASON, Runtime

__all__ = ["SKIP_REASON", "Runtime"]
