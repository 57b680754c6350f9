"""What `serve` applies while some job files are broken.

The rule: a broken file keeps the jobs of its last valid version (none if it never was
valid), and every other file's creates and updates go ahead. No job is deleted while any file
is broken, because a job that left a valid file may have moved into the broken one. Two
things still stop the whole reconcile: a duplicate id across files, and a named path that
is gone (applying then would prune everything it held).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.errors import Problem
from runner.fileset import FileSet, duplicate_ids
from runner.plan import Wanted


@dataclass(frozen=True, slots=True)
class Decision:
    desired: list[Wanted]
    prune: bool
    broken: dict[str, list[Problem]]
    """Every broken file and all of its problems, in file order."""
    blocking: list[Problem]
    """Problems that stop the whole reconcile; `desired` is empty when there are any."""

    @property
    def problems(self) -> list[Problem]:
        return [*self.blocking, *(p for ps in self.broken.values() for p in ps)]


def decide(files: FileSet) -> Decision:
    """Apply the rule to the files as last read (call `files.refresh` first)."""
    broken = {f: list(files.bad[f]) for f in sorted(files.bad)}
    _, reported = files.desired()
    blocking = [p for p in reported if p.file not in files.bad and p.file not in files.good]
    jobs = [d for file in sorted(files.good) for d in files.good[file]]
    blocking.extend(duplicate_ids(jobs))
    if blocking:
        return Decision([], False, broken, blocking)
    return Decision(jobs, not broken, broken, [])
