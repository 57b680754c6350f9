"""`runner validate`: every problem in the job files, and optionally their next fire times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from runner import commands, jobfiles, targets, triggers
from runner.durations import format_duration, roughly
from runner.errors import Problem
from runner.jobfiles import Loaded, SourcedJob
from runner.models import Job


@dataclass(slots=True)
class Report:
    loaded: Loaded
    problems: list[Problem]
    next_times: dict[str, list[datetime]]
    warnings: list[Problem] = field(default_factory=list)
    """Valid but worth saying: a one-off whose time has passed will never run."""

    @property
    def valid(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        jobs = self.loaded.jobs if self.valid else []
        return {
            "valid": self.valid,
            "jobs": [
                {
                    "id": s.job.id,
                    "file": s.file,
                    "line": s.line,
                    "target": s.job.target,
                    "trigger": triggers.describe(s.job),
                    "next": [t.isoformat() for t in self.next_times.get(s.job.id, [])],
                }
                for s in jobs
            ],
            "errors": [p.as_json() for p in self.problems],
            "warnings": [p.as_json() for p in self.warnings],
        }


TargetKey = tuple[str, int, tuple[str, ...]]
"""What a target check depends on: the target, how many positional arguments and the keyword
names, never the values."""


def target_key(job: Job) -> TargetKey:
    assert job.target is not None, "command jobs have no target check"
    return (job.target, len(job.args), tuple(job.kwargs))


class TargetChecks:
    """Targets must be allowed, and (when importing) callable with the given arguments;
    each distinct TargetKey is checked once, however many jobs share it."""

    def __init__(self, import_targets: bool) -> None:
        self.import_targets = import_targets
        self.prefixes = targets.allowed_prefixes()
        self._verdicts: dict[TargetKey, str | None] = {}

    def verdict(self, key: TargetKey) -> str | None:
        """Why jobs with this key cannot run, or None."""
        if key not in self._verdicts:
            self._verdicts[key] = self._check(key)
        return self._verdicts[key]

    def _check(self, key: TargetKey) -> str | None:
        target, positional, keywords = key
        try:
            if self.import_targets:
                func = targets.resolve(target, self.prefixes)
                targets.check_call(func, [None] * positional, dict.fromkeys(keywords))
            else:
                targets.check_allowed_name(target, self.prefixes)
        except targets.TargetError as exc:
            return str(exc)
        return None

    def problems(self, jobs: Sequence[SourcedJob]) -> list[Problem]:
        """Target problems, then those of command jobs (which have no target)."""
        problems = []
        for sourced in jobs:
            job = sourced.job
            if job.target is None:  # a command job: checked by `commands.check`
                continue
            message = self.verdict(target_key(job))
            if message is not None:
                line, column = sourced.position("target")
                problems.append(Problem(sourced.file, line, column, job.id, "target", message))
        return problems + commands.check(jobs)


def check_targets(jobs: Sequence[SourcedJob], import_targets: bool) -> list[Problem]:
    """Targets must be allowed, and (when importing) callable with the given arguments."""
    return TargetChecks(import_targets).problems(jobs)


def load_valid(paths: Sequence[str], import_targets: bool = True) -> tuple[Loaded, list[Problem]]:
    """Load and check everything that can be checked without a database."""
    loaded = jobfiles.load(paths)
    problems = list(loaded.problems)
    problems.extend(check_targets(loaded.jobs, import_targets))
    return loaded, problems


def run(paths: Sequence[str], import_targets: bool, next_count: int, start: datetime) -> Report:
    loaded, problems = load_valid(paths, import_targets)
    next_times: dict[str, list[datetime]] = {}
    if next_count and not problems:
        for sourced in loaded.jobs:
            trigger = triggers.build(sourced.job, now=start)
            next_times[sourced.job.id] = triggers.next_fire_times(trigger, next_count, start)
    return Report(loaded, problems, next_times, past_one_offs(loaded.jobs, start))


def past_one_offs(jobs: Sequence[SourcedJob], now: datetime) -> list[Problem]:
    """An `at:` past its misfire grace is normal in a repository (the one-off ran), but it
    will never run: say so. Within the grace, applying it now would still run it."""
    warnings = []
    for sourced in jobs:
        at = sourced.job.trigger.at
        if at is None:
            continue
        moment = at if at.tzinfo else at.replace(tzinfo=ZoneInfo(sourced.job.zone))
        ago = int((now - moment).total_seconds())
        grace = sourced.job.misfire_grace_time
        if ago > grace:
            line, column = sourced.position("trigger")
            message = (
                f"warning: {moment.isoformat()} was {roughly(ago)} ago, beyond its misfire "
                f"grace ({format_duration(grace)}); this job will never run"
            )
            warnings.append(
                Problem(sourced.file, line, column, sourced.job.id, "trigger.at", message)
            )
    return warnings
