"""Compare the job files with the store: what to create, update, delete, leave alone."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.errors import StoreError, printable
from runner.jobfiles import SourcedJob

_NESTED = ("trigger", "retries", "kwargs", "labels")
TRIGGER_FIELDS = frozenset({"trigger", "timezone"})
_QUOTE_IF = re.compile(r"[\s,()\"]|->|^$")
RUNTIME_FILE, RUNTIME_LINE = "api", 0
"""Where a job added at run time is "from": no job file gives line 0, so no file job looks
like one, and no new column is needed."""
"""Text that could be read as plan syntax (separators, arrows) is shown JSON-quoted."""


def spec_text(spec: Mapping[str, Any]) -> str:
    """The stored form of a spec, and what its hash is taken of."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec: Mapping[str, Any]) -> str:
    return _hash_of(spec_text(spec))


def _hash_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Desired:
    sourced: SourcedJob
    spec: dict[str, Any]
    hash: str
    text: str | None = None
    """`spec_text(spec)`, when already made (it is what `runner_jobs.spec` stores)."""

    @classmethod
    def of(cls, sourced: SourcedJob) -> Desired:
        spec = sourced.job.canonical()
        text = spec_text(spec)
        return cls(sourced, spec, _hash_of(text), text)

    @property
    def id(self) -> str:
        return self.sourced.job.id

    @property
    def file(self) -> str:
        return self.sourced.file

    @property
    def line(self) -> int:
        return self.sourced.line


@dataclass(frozen=True, slots=True)
class Known:
    """A job of a file that is unchanged since the last apply: its identity and spec hash,
    all a plan needs while the store agrees (see runner.unchanged)."""

    id: str
    hash: str
    file: str
    line: int


Wanted = Desired | Known


class IdTaken(StoreError):
    """A job id that a file and a job added at run time both want; nothing was written."""


def source(file: str, line: int) -> str:
    """`FILE:LINE` for a file job, `api` for a job added at run time."""
    return RUNTIME_FILE if is_runtime(file, line) else f"{file}:{line}"


def is_runtime(file: str, line: int) -> bool:
    return line == RUNTIME_LINE and file == RUNTIME_FILE


@dataclass(frozen=True, slots=True)
class Stored:
    id: str
    hash: str
    file: str
    line: int
    paused_override: bool | None

    @property
    def runtime(self) -> bool:
        """Added at run time: no apply creates, changes or deletes it."""
        return is_runtime(self.file, self.line)


@dataclass(frozen=True, slots=True)
class Update:
    id: str
    changes: dict[str, tuple[Any, Any]]

    @property
    def retrigger(self) -> bool:
        return any(name.split(".")[0] in TRIGGER_FIELDS for name in self.changes)


@dataclass(slots=True)
class Plan:
    create: list[str] = field(default_factory=list)
    update: list[Update] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    """Jobs whose spec is unchanged but whose file or line moved: metadata only."""
    overridden: dict[str, bool] = field(default_factory=dict)
    runtime: list[str] = field(default_factory=list)
    """Jobs added at run time (owner `api`): listed, never created, updated or deleted."""

    @property
    def changed(self) -> bool:
        return bool(self.create or self.update or self.delete)

    def summary(self) -> str:
        return (
            f"Plan: {len(self.create)} to create, {len(self.update)} to update, "
            f"{len(self.delete)} to delete, {len(self.unchanged)} unchanged."
        )

    def text_lines(self) -> list[str]:
        """One line per change; nothing from a job file can start a line (reviewers read
        these in pull requests), so every key and value is shown on one line."""
        lines = [f"+ create {printable(job_id)}" for job_id in self.create]
        for upd in self.update:
            parts = ", ".join(
                f"{_key(k)}: {_show(o)} -> {_show(n)}" for k, (o, n) in upd.changes.items()
            )
            lines.append(f"~ update {printable(upd.id)} ({parts})")
        lines.extend(f"- delete {printable(job_id)}" for job_id in self.delete)
        for job_id, paused in sorted(self.overridden.items()):
            state = "paused" if paused else "resumed"
            lines.append(
                f"! override {job_id}: {state} by an operator (runner resume/pause to change)"
            )
        if self.runtime:
            lines.append(f"= {len(self.runtime)} job(s) added at run time (api), left as they are")
        lines.append(self.summary())
        return lines

    def as_json(self, applied: bool) -> dict[str, Any]:
        return {
            "create": self.create,
            "update": [
                {"id": u.id, "changes": {k: list(v) for k, v in u.changes.items()}}
                for u in self.update
            ],
            "delete": self.delete,
            "unchanged": self.unchanged,
            "runtime": self.runtime,
            "applied": applied,
        }


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str) and value and value.isprintable() and not _QUOTE_IF.search(value):
        return value
    return printable(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _key(name: str) -> str:
    """A field name; a kwargs or labels key that could pass for plan syntax is quoted."""
    if name.isprintable() and not _QUOTE_IF.search(name):
        return name
    return printable(json.dumps(name, ensure_ascii=False))


def flatten(spec: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if key in _NESTED and isinstance(value, dict):
            for inner, inner_value in value.items():
                flat[f"{key}.{inner}"] = inner_value
        else:
            flat[key] = value
    return flat


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    before, after = flatten(old), flatten(new)
    keys = sorted(set(before) | set(after))
    return {k: (before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)}


def compute(
    desired: Iterable[Wanted],
    stored: Mapping[str, Stored],
    prune: bool,
    stored_specs: Callable[[list[str]], Mapping[str, dict[str, Any]]],
) -> Plan:
    """`stored_specs` fetches old specs only for the jobs that changed, to show what changed.

    A `Known` job must be unchanged in the store (same hash, not taken at run time): a caller
    replaces the Known jobs of a file by its full Desired ones first (`needs_full`).
    """
    plan = Plan()
    changed: list[Desired] = []
    seen: set[str] = set()
    taken: list[str] = []
    for want in desired:
        job_id = want.id
        seen.add(job_id)
        have = stored.get(job_id)
        if have is not None and have.runtime:
            taken.append(
                f"{want.file}:{want.line}:1: job {printable(job_id)}: id: "
                "a job added at run time (api) already holds this id; rename this job, or "
                f"delete that one first (DELETE /api/jobs/{printable(job_id)})"
            )
        elif have is None:
            plan.create.append(job_id)
        elif have.hash != want.hash:
            if not isinstance(want, Desired):
                raise TypeError(f"job {job_id} changed but only its hash is known")
            changed.append(want)
        else:
            plan.unchanged.append(job_id)
            if (have.file, have.line) != (want.file, want.line):
                plan.moved.append(job_id)
        if have is not None and have.paused_override is not None:
            plan.overridden[job_id] = have.paused_override
    if taken:
        raise IdTaken("; ".join(taken))
    plan.runtime = sorted(job_id for job_id, have in stored.items() if have.runtime)
    if changed:
        old = stored_specs([w.id for w in changed])
        plan.update = [Update(w.id, diff(old[w.id], w.spec)) for w in changed]
    if prune:
        plan.delete = sorted(
            job_id for job_id, have in stored.items() if job_id not in seen and not have.runtime
        )
    plan.create.sort()
    plan.update.sort(key=lambda u: u.id)
    plan.unchanged.sort()
    return plan


def needs_full(known: Iterable[Known], stored: Mapping[str, Stored]) -> set[str]:
    """Files whose Known jobs a plan cannot use as they are: a job the store lacks or holds
    differently (to create or update it, its full spec is needed), or one whose id a job
    added at run time holds (the refusal names its position either way; read it in full)."""
    files = set()
    for want in known:
        have = stored.get(want.id)
        if have is None or have.hash != want.hash or have.runtime:
            files.add(want.file)
    return files
