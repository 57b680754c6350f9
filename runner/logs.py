"""Log setup for the CLI: readable lines by default, one JSON object per line for shippers.

Messages quote what jobs and job files said (errors, ids, file names). So every record is
cut at MAX_MESSAGE characters, values handed to jobs from the environment are hidden, and in
text format a message is one line and a traceback's lines are indented: only the runner
starts a line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from runner import interpolate
from runner.errors import printable

MAX_MESSAGE = 8192
_EXTRA_FIELDS = ("job_id", "attempt", "event", "outcome", "duration", "node")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRA_FIELDS:
            if hasattr(record, name):
                payload[name] = getattr(record, name)
        if record.exc_text:
            payload["exception"] = record.exc_text
        elif record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def bounded(text: str) -> str:
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters)"
    return interpolate.redact(text, interpolate.resolved_values()) or text


class Sanitizer(logging.Filter):
    """Bounds and redacts each record's message and exception text, once, for any format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = bounded(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = bounded(record.exc_text)
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message` on one line; a traceback follows, every line indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = printable(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        extra = record.exc_text or (
            self.formatException(record.exc_info) if record.exc_info else ""
        )
        if record.stack_info:
            extra = (
                f"{extra}\n{self.formatStack(record.stack_info)}" if extra else record.stack_info
            )
        if extra:
            text += "\n" + "\n".join(f"    {line}" for line in extra.splitlines())
        return text


def setup(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Sanitizer())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler's own per-job chatter duplicates ours.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
