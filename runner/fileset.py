"""The job files as `serve` sees them: the last good version of each, so a typo never deletes.

A file that turns invalid keeps contributing the jobs of its last valid version. A file that
disappears removes its jobs, but only once it has stayed gone for a moment, so editors that
save by renaming never cause a deletion.

With 100,000 jobs, holding every job as a full spec costs hundreds of MB, and validating them
all at start-up most of the start. So a file whose bytes the last successful `runner apply`
recorded (runner.unchanged, which says why that is sound) is taken as its recorded jobs
(`Known`: id, spec hash, line) once its targets pass their checks, and once the store holds
what was read (`compact`), full jobs are dropped for the same. The bytes of each good file's
version are kept, so its full jobs can be read again whenever a plan needs them (`expanded`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from runner import jobfiles, unchanged, validate
from runner.errors import Problem, StoreError
from runner.plan import Desired, Known, Wanted

log = logging.getLogger("runner.files")


class NotReadAgain(StoreError):
    """A held version no longer reads as it did; the apply fails and is tried again later."""


@dataclass(slots=True)
class FileSet:
    paths: list[str]
    good: dict[str, list[Wanted]] = field(default_factory=dict)
    bad: dict[str, list[Problem]] = field(default_factory=dict)
    gone_grace: float = 0.5
    memo: Callable[[], unchanged.Memo] | None = None
    """What the last successful apply recorded, asked for once, at the first refresh."""
    _kept: dict[str, bytes] = field(default_factory=dict)
    """The bytes of each good file's version, to read its full jobs again."""
    _recorded: unchanged.Memo | None = None
    _checks: validate.TargetChecks | None = None
    _fingerprint: str | None = None
    _stamps: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _digests: dict[str, bytes] = field(default_factory=dict)
    _missing_since: dict[str, float] = field(default_factory=dict)
    _unsafe: list[Problem] = field(default_factory=list)
    """A named path that does not exist, or no job file ever seen: applying would prune all."""
    _seen_files: bool = False

    @property
    def removal_pending(self) -> bool:
        """A file vanished recently; call refresh again after `gone_grace` to settle it."""
        return bool(self._missing_since)

    def refresh(self, changed: Iterable[str] | None = None) -> list[Problem]:
        """Re-read all files, or those in `changed` and new ones; return the problems present."""
        files, missing = jobfiles.discover(self.paths)
        recorded = self._recorded
        if recorded is None:
            recorded = self.memo() if self.memo is not None else {}
        self._recorded = {}  # only the first read of a file can match (a restart's)
        self._checks = validate.TargetChecks(import_targets=True)
        self._fingerprint = unchanged.fingerprint(import_targets=True) if recorded else None
        self._seen_files = self._seen_files or bool(files)
        self._unsafe = list(missing)
        if not files and not self._seen_files and not missing:
            where = ", ".join(self.paths)
            self._unsafe.append(
                Problem(where, 1, 1, None, None, "no job files (*.yaml, *.yml) here")
            )
        present = set(files)
        now = time.monotonic()
        for file in list(self._missing_since):
            if file in present:
                del self._missing_since[file]
        for gone in [f for f in self.good if f not in present]:
            since = self._missing_since.setdefault(gone, now)
            if now - since >= self.gone_grace:
                log.info("%s is gone: its %d job(s) will be removed", gone, len(self.good[gone]))
                del self.good[gone]
                del self._missing_since[gone]
                self._stamps.pop(gone, None)
                self._digests.pop(gone, None)
                self._kept.pop(gone, None)
        for gone in [f for f in self.bad if f not in present]:
            del self.bad[gone]
        wanted = set(os.path.realpath(c) for c in changed) if changed is not None else None
        for file in files:
            named = wanted is None or os.path.realpath(file) in wanted
            if not named and file in self._stamps:
                continue
            # A file a change was reported for is compared by content: two saves within one
            # tick of the file system's clock can leave size and modification time unchanged.
            self._read(file, by_content=wanted is not None and named, recorded=recorded)
        return [*missing, *(p for problems in self.bad.values() for p in problems)]

    def _read(
        self, file: str, by_content: bool = False, recorded: unchanged.Memo | None = None
    ) -> None:
        try:
            stat = os.stat(file)
        except OSError as exc:
            self.bad[file] = [Problem(file, 1, 1, None, None, f"cannot read: {exc.strerror}")]
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        known = file in self.good or file in self.bad
        if not by_content and self._stamps.get(file) == stamp and known:
            return
        try:
            data = jobfiles.read_bounded(file)
        except jobfiles.Unreadable as exc:
            self.bad[file] = [Problem(file, 1, 1, None, None, str(exc))]
            return
        digest = hashlib.blake2b(data, digest_size=16).digest()
        self._stamps[file] = stamp
        if self._digests.get(file) == digest and known:
            return
        self._digests[file] = digest
        recorded_jobs = self._recorded_jobs(file, data, recorded or {})
        if recorded_jobs is not None:
            self.bad.pop(file, None)
            self.good[file] = list(recorded_jobs)
            self._kept[file] = data
            return
        jobs, problems = self._parse(file, data)
        if problems:
            self.bad[file] = problems
            kept = len(self.good.get(file, []))
            for problem in problems:
                log.error("%s (keeping the %d job(s) of its last valid version)", problem, kept)
            return
        self.bad.pop(file, None)
        self.good[file] = [Desired.of(s) for s in jobs]
        self._kept[file] = data

    def _parse(self, file: str, data: bytes) -> tuple[list[jobfiles.SourcedJob], list[Problem]]:
        jobs, problems = jobfiles.parse_file(file, data)
        return jobs, [*problems, *validate.check_targets(jobs, import_targets=True)]

    def _recorded_jobs(
        self, file: str, data: bytes, recorded: unchanged.Memo
    ) -> list[Known] | None:
        """The jobs the last apply recorded for exactly these bytes, if their targets still
        pass; None means read the file in full (which also locates any problem)."""
        entry = recorded.get(file)
        if entry is None or entry.digest != unchanged.digest(data):
            return None
        if entry.fingerprint != self._fingerprint:
            return None
        checks = self._checks or validate.TargetChecks(import_targets=True)
        if any(checks.verdict(key) is not None for key in entry.checks):
            return None
        return [Known(job_id, spec_hash, file, line) for job_id, spec_hash, line in entry.jobs]

    def expanded(self, files: set[str]) -> list[Wanted]:
        """Every job to keep scheduled, as `desired` gives them, with the jobs of `files`
        full: read again from the bytes of the version held (valid when it was read)."""
        for file in sorted(files):
            held = self.good.get(file)
            if held is None or all(isinstance(w, Desired) for w in held):
                continue
            jobs, problems = self._parse(file, self._kept[file])
            if problems:  # a target that passed then fails now: nothing full to give
                raise NotReadAgain(f"cannot read the jobs of {file} again: {problems[0]}")
            self.good[file] = [Desired.of(s) for s in jobs]
        return [w for file in sorted(self.good) for w in self.good[file]]

    def compact(self) -> None:
        """The store now holds every good file's jobs as read: keep only what a plan needs
        of them (id, spec hash, position); `expanded` reads the rest again if asked."""
        for file, held in self.good.items():
            if any(isinstance(w, Desired) for w in held):
                self.good[file] = [Known(w.id, w.hash, w.file, w.line) for w in held]

    def desired(self) -> tuple[list[Wanted], list[Problem]]:
        """Every job to keep scheduled, or the reasons it is not safe to apply now."""
        unknown = [
            *self._unsafe,
            *(p for f, ps in self.bad.items() if f not in self.good for p in ps),
        ]
        if unknown:
            return [], unknown
        jobs = [d for file in sorted(self.good) for d in self.good[file]]
        problems = duplicate_ids(jobs)
        return (jobs, []) if not problems else ([], problems)


def duplicate_ids(jobs: Sequence[Wanted]) -> list[Problem]:
    """An id defined twice, located at its second definition."""
    seen: dict[str, Wanted] = {}
    problems = []
    for want in jobs:
        first = seen.setdefault(want.id, want)
        if first is not want:
            where = f"{first.file}:{first.line}"
            problems.append(
                Problem(
                    want.file,
                    want.line,
                    1,
                    want.id,
                    "id",
                    f"duplicate id, first defined at {where}",
                )
            )
    return problems
