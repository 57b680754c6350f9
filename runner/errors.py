"""One exception root; the CLI is the only place that turns these into messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass


def printable(text: str) -> str:
    """`text` on one line: control characters are written as escapes (`\\n`, `\\x00`).

    Whatever a job file or a job puts into a message must never start a line of its own in
    a report, a plan or a log, where it could pass for one the runner wrote.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RunnerError(Exception):
    """Root of every error the runner reports to a user."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One located reason a job file is invalid."""

    file: str
    line: int
    column: int
    job: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        parts = [where]
        if self.job is not None:
            parts.append(f"job {self.job}")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return printable(": ".join(parts))

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "job": self.job,
            "field": self.field,
            "message": self.message,
        }


class InvalidJobFiles(RunnerError):
    """The job files hold at least one problem; nothing may be applied."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in job files; first: {problems[0]}")


class StoreError(RunnerError):
    """The database is unreachable, refuses us, or holds a schema we cannot use."""


class JobNotFound(RunnerError):
    """A command named a job id the store does not hold."""
