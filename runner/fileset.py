"""The job files as `serve` sees them: the last good version of each, so a typo never deletes.

A file that turns invalid keeps contributing the jobs of its last valid version. A file that
disappears removes its jobs, but only once it has stayed gone for a moment, so editors that
save by renaming never cause a deletion.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from runner import jobfiles, validate
from runner.errors import Problem
from runner.plan import Desired

log = logging.getLogger("runner.files")


@dataclass(slots=True)
class FileSet:
    paths: list[str]
    good: dict[str, list[Desired]] = field(default_factory=dict)
    bad: dict[str, list[Problem]] = field(default_factory=dict)
    gone_grace: float = 0.5
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
        for gone in [f for f in self.bad if f not in present]:
            del self.bad[gone]
        wanted = set(os.path.realpath(c) for c in changed) if changed is not None else None
        for file in files:
            named = wanted is None or os.path.realpath(file) in wanted
            if not named and file in self._stamps:
                continue
            # A file a change was reported for is compared by content: two saves within one
            # tick of the file system's clock can leave size and modification time unchanged.
            self._read(file, by_content=wanted is not None and named)
        return [*missing, *(p for problems in self.bad.values() for p in problems)]

    def _read(self, file: str, by_content: bool = False) -> None:
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
        jobs, problems = jobfiles.parse_file(file, data)
        problems = [*problems, *validate.check_targets(jobs, import_targets=True)]
        if problems:
            self.bad[file] = problems
            kept = len(self.good.get(file, []))
            for problem in problems:
                log.error("%s (keeping the %d job(s) of its last valid version)", problem, kept)
            return
        self.bad.pop(file, None)
        self.good[file] = [Desired.of(s) for s in jobs]

    def desired(self) -> tuple[list[Desired], list[Problem]]:
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


def duplicate_ids(jobs: list[Desired]) -> list[Problem]:
    """An id defined twice, located at its second definition."""
    seen: dict[str, Desired] = {}
    problems = []
    for want in jobs:
        first = seen.setdefault(want.sourced.job.id, want)
        if first is not want:
            s = want.sourced
            where = f"{first.sourced.file}:{first.sourced.line}"
            problems.append(
                Problem(
                    s.file, s.line, 1, s.job.id, "id", f"duplicate id, first defined at {where}"
                )
            )
    return problems
