"""Apply without re-reading job files that are unchanged since the last successful apply.

Why skipping is sound. Reading and validating one job file is a pure function of its bytes
and of what the fingerprint below covers: the runner's version and validating code, the
Python, pydantic and PyYAML versions, the time-zone database, the target allowlist
(`RUNNER_ALLOWED_TARGETS`) and whether targets are imported. `${VAR}` references are kept
as text and resolved only at run time, so the job environment plays no part. A successful
apply records, per file, the result of that function for a valid file: each job's id, spec
hash and line, and the distinct target checks its jobs need (`runner_file_cache`, written in
the apply's own transaction). When the next apply finds the same bytes under the same
fingerprint, the recorded result is the result; the file is not parsed again. A file whose
bytes differ (or that was never recorded, or was deleted and re-added with other bytes) is
read and validated in full, as every file was before.

The record is a memo of that function, not a copy of the store, so it stays true whatever
wrote to the store since (another checkout, an older runner, a job added at run time, an
operator's pause, another `--db`, replicas): the plan is still computed against the rows
actually stored. The shortcut only stands for what the plan can decide from an id, a hash
and a position:

- every unchanged file's jobs still take part in the duplicate-id check across files and in
  the prune decision, so an id reused in a changed file, or a job moved between files, reads
  exactly as with a full read;
- target checks are not recorded as passed: each distinct target of an unchanged file is
  checked again (imports included), once per distinct target; should one fail, the file is
  read in full so every problem is located at its FILE:LINE:COL;
- a recorded job the store lacks, holds with another hash, or that a job added at run time
  holds (`plan.needs_full`) makes its file read in full, so creates and updates are always
  written from a full spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pydantic
import yaml
from sqlalchemy import Connection, Engine, delete, select

from runner import jobfiles, targets
from runner.errors import Problem
from runner.jobfiles import SourcedJob
from runner.plan import Desired, Known, Wanted
from runner.store import tables
from runner.store.engine import READ_ONLY
from runner.validate import TargetChecks, TargetKey, target_key

CACHE_FORMAT = 1
"""Raised whenever what is recorded, or how it is read, changes."""

_VALIDATING = (
    "models",
    "jobfiles",
    "yamlread",
    "cron",
    "durations",
    "interpolate",
    "wording",
    "validate",
    "targets",
    "plan",
    "unchanged",
    "commands",
)
"""The runner's modules that decide what a file means: a build that changes any of them
without a new version number (a checkout in development) still reads every file again."""


def fingerprint(import_targets: bool, environ: Mapping[str, str] = os.environ) -> str:
    """Everything besides a file's bytes that can change what validating it gives."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = []
    for name in _VALIDATING:
        try:
            stat = os.stat(os.path.join(here, f"{name}.py"))
            code.append([name, stat.st_mtime_ns, stat.st_size])
        except OSError:
            code.append([name, None, None])
    parts: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "runner": _version("runner"),
        "code": code,
        "python": sys.version,
        "pydantic": pydantic.VERSION,
        "yaml": [yaml.__version__, yaml.__with_libyaml__],
        "zones": [list(zoneinfo.TZPATH), _version("tzdata")],
        "allowed": list(targets.allowed_prefixes(environ)),
        "import": import_targets,
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """What validating one file gave: (id, spec hash, line) per job, and its target checks."""

    digest: str
    fingerprint: str
    jobs: tuple[tuple[str, str, int], ...]
    checks: tuple[TargetKey, ...]

    def row(self, file: str) -> dict[str, str]:
        return {
            "file": file,
            "digest": self.digest,
            "fingerprint": self.fingerprint,
            "jobs": json.dumps(self.jobs, separators=(",", ":")),
            "checks": json.dumps(self.checks, separators=(",", ":")),
        }

    @classmethod
    def from_row(cls, digest: str, fingerprint: str, jobs: str, checks: str) -> Entry:
        return cls(
            digest,
            fingerprint,
            tuple((str(i), str(h), int(n)) for i, h, n in json.loads(jobs)),
            tuple((str(t), int(n), tuple(str(k) for k in kw)) for t, n, kw in json.loads(checks)),
        )


Memo = dict[str, Entry]


def read(engine: Engine) -> Memo:
    """The recorded entries, or none when there are none to be had (no database file yet, a
    database from before this table, or one that cannot be read now: the apply then reads
    every file, and reports the database problem itself)."""
    from runner.reconcile import missing_sqlite_file

    if missing_sqlite_file(engine):
        return {}
    t = tables.runner_file_cache
    try:
        with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            if not conn.dialect.has_table(conn, t.name):
                return {}
            rows = conn.execute(select(t.c.file, t.c.digest, t.c.fingerprint, t.c.jobs, t.c.checks))
            return {row.file: Entry.from_row(*row[1:]) for row in rows}
    except Exception:  # the memo only saves time; it never decides an outcome
        return {}


def read_soon(engine: Engine, timeout: float = 5.0) -> Memo:
    """`read`, or nothing if the database does not answer within `timeout` seconds: `serve`
    checks its files before it waits for the database, and must not wait here either."""
    found: list[Memo] = []
    reader = threading.Thread(
        target=lambda: found.append(read(engine)), name="runner-memo", daemon=True
    )
    reader.start()
    reader.join(timeout)
    return found[0] if found else {}


def write(conn: Connection, entries: Mapping[str, Entry], before: Mapping[str, Entry]) -> None:
    """Record what this apply read, in its transaction: rows of files no longer applied are
    dropped, rows that differ rewritten, equal ones left alone (an unchanged re-apply writes
    nothing)."""
    t = tables.runner_file_cache
    stale = [f for f in before if f not in entries]
    fresh = [f for f, entry in entries.items() if before.get(f) != entry]
    from runner.store.batches import chunks

    for chunk in chunks([*stale, *fresh]):
        conn.execute(delete(t).where(t.c.file.in_(chunk)))
    if fresh:
        conn.execute(t.insert(), [entries[f].row(f) for f in fresh])


@dataclass(slots=True)
class Prepared:
    """The jobs of every file in file order, Known for unchanged files, Desired otherwise."""

    wanted: list[Wanted]
    problems: list[Problem]
    entries: Memo
    """Per valid file, what to record if the apply succeeds."""
    full: set[str] = field(default_factory=set)
    """Files read in full although their memo matched."""


class Reader:
    """Loads the job files for one apply, reading in full only what it must."""

    def __init__(self, memo: Memo, import_targets: bool = True) -> None:
        self.memo = memo
        self.fingerprint = fingerprint(import_targets)
        self.checks = TargetChecks(import_targets)
        self._parsed: dict[tuple[str, str], tuple[list[SourcedJob], list[Problem]]] = {}

    def load(self, paths: Sequence[str], full: set[str] | None = None) -> Prepared:
        """Every problem a full read would report, in the same order; files in `full` (and
        changed ones) are read in full."""
        with jobfiles.gc_paused():
            return self._load(paths, set(full or ()))

    def _load(self, paths: Sequence[str], full: set[str]) -> Prepared:
        files, found = jobfiles.discover_some(paths)
        contents = jobfiles.read_all(files)
        stamps = [digest(d) if isinstance(d, bytes) else "" for d in contents]
        while True:
            recorded = [
                isinstance(data, bytes) and self._recorded(file, stamp, full)
                for file, data, stamp in zip(files, contents, stamps, strict=True)
            ]
            to_parse = [
                data
                for file, data, stamp, known in zip(files, contents, stamps, recorded, strict=True)
                if isinstance(data, bytes) and not known and (file, stamp) not in self._parsed
            ]
            problems = list(found)
            with jobfiles.PlainReads(to_parse):
                prepared, failing = self._gather(files, contents, stamps, recorded, problems, full)
            if not failing:
                return prepared
            full = full | failing  # locate each problem: read those files in full

    def _gather(
        self,
        files: list[str],
        contents: list[bytes | jobfiles.Unreadable],
        stamps: list[str],
        recorded: list[bool],
        problems: list[Problem],
        full: set[str],
    ) -> tuple[Prepared, set[str]]:
        """What the files give, and the recorded files whose target checks now fail."""
        wanted: list[Wanted] = []
        parsed_jobs: list[SourcedJob] = []
        entries: Memo = {}
        known_checks: dict[TargetKey, list[str]] = {}
        for file, data, stamp, known in zip(files, contents, stamps, recorded, strict=True):
            if isinstance(data, jobfiles.Unreadable):
                problems.append(Problem(file, 1, 1, None, None, str(data)))
                continue
            entry = self.memo.get(file)
            if known:
                assert entry is not None
                wanted.extend(Known(i, h, file, n) for i, h, n in entry.jobs)
                entries[file] = entry
                for key in entry.checks:
                    known_checks.setdefault(key, []).append(file)
                continue
            jobs, file_problems = self._parse(file, stamp, data)
            problems.extend(file_problems)
            parsed_jobs.extend(jobs)
            desired = [Desired.of(s) for s in jobs]
            wanted.extend(desired)
            # A command job's check depends on the command allowlist and on the files it
            # names, which no fingerprint covers: a file with one is always read in full.
            if not file_problems and all(s.job.target is not None for s in jobs):
                checks = tuple(dict.fromkeys(target_key(s.job) for s in jobs))
                jobs_seen = tuple((d.id, d.hash, d.line) for d in desired)
                entries[file] = Entry(stamp, self.fingerprint, jobs_seen, checks)
        failing = {f for key, fs in known_checks.items() if self.checks.verdict(key) for f in fs}
        if not failing:
            problems.extend(jobfiles.duplicate_ids((w.id, w.file, w.line) for w in wanted))
            problems.extend(self.checks.problems(parsed_jobs))
        return Prepared(wanted, problems, entries, full), failing

    def _parse(self, file: str, stamp: str, data: bytes) -> tuple[list[SourcedJob], list[Problem]]:
        key = (file, stamp)
        if key not in self._parsed:
            self._parsed[key] = jobfiles.parse_file(file, data)
        return self._parsed[key]

    def _recorded(self, file: str, stamp: str, full: set[str]) -> bool:
        """Whether the memo stands for this file as it is (see the module's docstring)."""
        entry = self.memo.get(file)
        return (
            file not in full
            and entry is not None
            and entry.digest == stamp
            and entry.fingerprint == self.fingerprint
        )
