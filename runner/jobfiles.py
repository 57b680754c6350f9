"""Find job files, read them, and turn them into validated jobs or located problems."""

from __future__ import annotations

import difflib
import gc
import os
import pickle
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from runner import interpolate, models, wording
from runner.errors import Problem
from runner.yamlread import (
    MAX_FILE_BYTES,
    Positions,
    YamlProblem,
    YamlProblems,
    read_plain,
    read_yaml_all,
)
from runner.yamlread import Path as YamlPath

ENV_JOBS = "RUNNER_JOBS"
DEFAULT_FOLDER = "jobs.d"
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class SourcedJob:
    """A valid job and where it was written."""

    job: models.Job
    file: str
    line: int
    fields: dict[str, tuple[int, int]]

    def position(self, field: str) -> tuple[int, int]:
        return self.fields.get(field, (self.line, 1))


@dataclass(slots=True)
class Loaded:
    """Every job that validated and every problem found; the set is usable only without problems."""

    jobs: list[SourcedJob]
    problems: list[Problem]
    files: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def default_paths(environ: os._Environ[str] | dict[str, str] = os.environ) -> list[str]:
    value = environ.get(ENV_JOBS)
    if value:
        return [p for p in value.split(os.pathsep) if p]
    return [DEFAULT_FOLDER]


def is_ignored(name: str) -> bool:
    """Hidden files and editor leftovers (`.#x`, `x~`, `.x.swp`)."""
    return name.startswith(".") or name.endswith("~") or name.startswith("#")


def discover(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Expand folders to their job files (sorted, not recursive); name missing paths."""
    files: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            names = sorted(
                entry.name
                for entry in os.scandir(path)
                if entry.name.endswith(SUFFIXES) and not is_ignored(entry.name) and _not_dir(entry)
            )
            files.extend(str(path / name) for name in names)
        elif os.path.lexists(path):  # a file, or something reading will say is not one
            files.append(str(path))
        else:
            problems.append(Problem(str(path), 1, 1, None, None, "no such file or directory"))
    unique: list[str] = []
    seen: set[str] = set()
    for file in files:
        real = os.path.realpath(file)
        if real not in seen:
            seen.add(real)
            unique.append(file)
    return unique, problems


def _not_dir(entry: os.DirEntry[str]) -> bool:
    """A symlink loop or a dangling link named `x.yaml` is listed, so reading it reports it."""
    try:
        return not entry.is_dir()
    except OSError:
        return True


class Unreadable(Exception):
    """A job file that cannot be read, and why, in words for a Problem."""


def read_bounded(file: str) -> bytes:
    """The bytes of a job file, read the one way `validate`, `apply` and `serve` all use.

    Refuses what is not a regular file (a FIFO would block the reader forever) and never
    reads more than one byte past MAX_FILE_BYTES, however large the file claims to be.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(file, flags)
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("cannot read: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            # Ask for what the file holds, not the limit: a buffer of the limit's size per
            # file cost a tenth of reading 1,000 files. A file growing meanwhile is read on,
            # up to the same bound.
            data = handle.read(min(info.st_size, MAX_FILE_BYTES) + 1)
            if len(data) > info.st_size:
                data += handle.read(MAX_FILE_BYTES + 1 - len(data))
            return data
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while reading job files.

    Reading builds a few hundred thousand small objects that stay alive, and the collector
    would walk all of them again and again (a third of the time of reading 10,000 jobs).
    They hold no reference cycles; collection resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(paths: Sequence[str]) -> Loaded:
    with gc_paused():
        return _load(paths)


def _load(paths: Sequence[str]) -> Loaded:
    files, problems = discover_some(paths)
    jobs: list[SourcedJob] = []
    contents = read_all(files)
    with PlainReads([data for data in contents if isinstance(data, bytes)]):
        for file, data in zip(files, contents, strict=True):
            if isinstance(data, Unreadable):
                problems.append(Problem(file, 1, 1, None, None, str(data)))
                continue
            file_jobs, file_problems = parse_file(file, data)
            jobs.extend(file_jobs)
            problems.extend(file_problems)
    problems.extend(_duplicate_ids(jobs))
    return Loaded(jobs=jobs, problems=problems, files=files)


def read_all(files: Sequence[str]) -> list[bytes | Unreadable]:
    """`read_bounded` of each file, or why it cannot be read."""
    contents: list[bytes | Unreadable] = []
    for file in files:
        try:
            contents.append(read_bounded(file))
        except Unreadable as exc:
            contents.append(exc)
    return contents


read_ahead = False
"""Whether `PlainReads` may read in a child process: set by the `validate` and `apply`
commands, whose process does nothing else meanwhile (never in serve, which has threads)."""
READ_AHEAD_BYTES = 1024 * 1024
"""Below this much YAML, forking costs more than it saves."""

_NOT_READ = object()


class PlainReads:
    """`read_plain(data)` of each of `contents`, made ahead for `parse_file`.

    With `read_ahead` (and enough YAML), a forked child reads them while this process
    validates the earlier ones (two cores instead of one), and sends each back pickled as it
    is done: the value `read_plain` gives for the same bytes. While the context is entered,
    `parse_file` takes the read of the very `contents` object it is given when that one is
    the next in line, and reads anything else itself; so does it for the rest should the
    child fail. Leaving the context (or taking the last) ends and reaps the child."""

    def __init__(self, contents: Sequence[bytes]) -> None:
        self._contents = contents
        self._next = 0
        self._child: tuple[int, Any] | None = None
        self._outer: PlainReads | None = None
        big = sum(map(len, contents)) >= READ_AHEAD_BYTES
        if read_ahead and big and hasattr(os, "fork"):
            self._child = _fork_reader(contents)

    def take(self, data: bytes) -> object:
        """The read of `data` if it is the next of `contents` (the same object), else
        _NOT_READ."""
        index = self._next
        if self._child is None or index >= len(self._contents):
            return _NOT_READ
        if self._contents[index] is not data:
            return _NOT_READ
        self._next += 1
        received = self._child[1]
        size = int.from_bytes(received.read(8), "little")
        blob = received.read(size) if size else b""
        if not size or len(blob) != size:
            self.close()  # the child failed: the rest are read here
            return _NOT_READ
        if self._next == len(self._contents):
            self.close()
        return pickle.loads(blob)

    def close(self) -> None:
        if self._child is not None:
            pid, received = self._child
            self._child = None
            received.close()  # a child still writing gets EPIPE and ends
            os.waitpid(pid, 0)

    def __enter__(self) -> PlainReads:
        global _reading
        self._outer, _reading = _reading, self
        return self

    def __exit__(self, *exc: object) -> None:
        global _reading
        self.close()
        _reading = self._outer


_reading: PlainReads | None = None
"""The reads made ahead for the load under way, if any."""


def _fork_reader(contents: Sequence[bytes]) -> tuple[int, Any]:
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read, send, and end without running anything of the parent's
        code = 1
        try:
            os.close(readable)
            with os.fdopen(writable, "wb", buffering=1 << 16) as out:
                for data in contents:
                    blob = pickle.dumps(read_plain(data), pickle.HIGHEST_PROTOCOL)
                    out.write(len(blob).to_bytes(8, "little"))
                    out.write(blob)
            code = 0
        finally:
            os._exit(code)
    os.close(writable)
    return pid, os.fdopen(readable, "rb")


def discover_some(paths: Sequence[str]) -> tuple[list[str], list[Problem]]:
    """`discover`, and a problem when nothing at all is found."""
    files, problems = discover(paths)
    if not files and not problems:
        # An empty or mistyped folder must not read as "delete every job".
        where = ", ".join(paths)
        message = (
            "no job files (*.yaml, *.yml) here; "
            "to remove every job on purpose, apply a file holding `jobs: []`"
        )
        problems.append(Problem(where, 1, 1, None, None, message))
    return files, problems


def _duplicate_ids(jobs: list[SourcedJob]) -> list[Problem]:
    return duplicate_ids((s.job.id, s.file, s.line) for s in jobs)


def duplicate_ids(jobs: Iterable[tuple[str, str, int]]) -> list[Problem]:
    """An id defined in two files, located at its second definition; `jobs` are
    (id, file, line) in file order (one file's own duplicates are parse_file's)."""
    first: dict[str, tuple[str, int]] = {}
    problems = []
    for job_id, file, line in jobs:
        earlier = first.setdefault(job_id, (file, line))
        if earlier[0] != file:
            problems.append(
                Problem(
                    file,
                    line,
                    1,
                    job_id,
                    "id",
                    f"duplicate id, first defined at {earlier[0]}:{earlier[1]}",
                )
            )
    return problems


def parse_file(
    file: str, data: bytes, quick: bool = True
) -> tuple[list[SourcedJob], list[Problem]]:
    """The jobs of one file that are valid, and every problem found in it.

    A file with problems must not be applied, but its valid jobs are still returned so that
    their targets are checked too: one run of `validate` reports everything.

    A plain file is read first without a position for every value (`read_plain`): a valid
    file needs only its jobs' and their keys' positions. Should it not be plain, or hold any
    problem, it is read again with every position, so each problem is located exactly as by
    the full read alone (`quick=False`), which is then the whole answer.
    """
    if quick:
        plain = _reading.take(data) if _reading is not None else _NOT_READ
        if plain is _NOT_READ:
            plain = read_plain(data)  # else PlainReads made it of these very bytes
        if plain is not None:
            document, positions = cast(tuple[object, Positions], plain)
            jobs, problems = _parse_document(file, document, positions, [])
            if not problems:
                return jobs, problems

    def located(found: YamlProblem) -> Problem:
        return Problem(file, found.line, found.column, None, None, found.message)

    try:
        document, positions, yaml_problems = read_yaml_all(data)
    except YamlProblems as exc:
        return [], [*(located(p) for p in exc.earlier), located(exc)]
    except YamlProblem as exc:
        return [], [located(exc)]
    jobs, problems = _parse_document(file, document, positions, yaml_problems)
    return jobs, [*(located(p) for p in yaml_problems), *problems]


def _parse_document(
    file: str, document: object, positions: Positions, yaml_problems: list[YamlProblem]
) -> tuple[list[SourcedJob], list[Problem]]:
    if document is None:
        msg = "file holds no jobs (empty or only comments); delete the file to remove its jobs"
        return [], [Problem(file, 1, 1, None, None, msg)]
    if not isinstance(document, dict):
        return [], [Problem(file, 1, 1, None, None, "expected a mapping with a jobs: list")]
    locate = _Locator(file, positions, {p.path for p in yaml_problems if p.path})
    problems: list[Problem] = []
    for key in document:
        if key not in ("jobs", "defaults"):
            problems.append(locate((key,), None, key, _unknown(key, ("jobs", "defaults"))))
    jobs_value = document.get("jobs")
    if not isinstance(jobs_value, list):
        what = "missing" if jobs_value is None else f"a {type(jobs_value).__name__}"
        problems.append(locate(("jobs",), None, "jobs", f"jobs must be a list, found {what}"))
        return [], problems
    defaults = _defaults(document.get("defaults"), locate, problems)
    jobs: list[SourcedJob] = []
    problems.extend(_duplicates_in_file(jobs_value, locate))
    for index, item in enumerate(jobs_value):
        job = _job(index, item, defaults, locate, problems)
        if job is not None:
            assert isinstance(item, dict)  # a job is only made of a mapping
            line = locate.line(("jobs", index))
            jobs.append(SourcedJob(job, file, line, _fields_of(positions, index, item)))
    problems = [p for p in problems if p is not _SUPPRESSED]
    return jobs, problems


def _fields_of(
    positions: Positions, index: int, item: dict[str, Any]
) -> dict[str, tuple[int, int]]:
    """Where each key of job `index` is written (keys merged in with `<<` included)."""
    fields = {}
    for name in item:
        where = positions.get(("jobs", index, name))
        if where is not None:
            fields[name] = where
    return fields


def _defaults(raw: object, locate: _Locator, problems: list[Problem]) -> models.JobFields | None:
    if raw is None:
        return None
    try:
        return models.JobFields.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_from_pydantic(exc, ("defaults",), None, locate, models.JobFields))
        return None


def _duplicates_in_file(items: list[object], locate: _Locator) -> list[Problem]:
    """Ids written twice in one file, valid jobs or not, so one run reports them too."""
    first: dict[str, int] = {}
    problems = []
    for index, item in enumerate(items):
        job_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(job_id, str):
            continue
        earlier = first.setdefault(job_id, index)
        if earlier != index:
            where = f"{locate.file}:{locate.line(('jobs', earlier))}"
            problems.append(
                locate(("jobs", index), job_id, "id", f"duplicate id, first defined at {where}")
            )
    return problems


def _job(
    index: int,
    item: object,
    defaults: models.JobFields | None,
    locate: _Locator,
    problems: list[Problem],
) -> models.Job | None:
    base: YamlPath = ("jobs", index)
    job_id = item.get("id") if isinstance(item, dict) else None
    job_name = job_id if isinstance(job_id, str) else f"#{index + 1}"
    if not isinstance(item, dict):
        problems.append(locate(base, job_name, None, "each job must be a mapping"))
        return None
    try:
        entry = models.JobEntry.model_validate(_with_known_parts(item))
    except ValidationError as exc:
        problems.extend(_from_pydantic(exc, base, job_name, locate, models.JobEntry))
        return None
    try:
        job = models.resolve(entry, defaults)
    except (ValueError, ValidationError) as exc:
        problems.append(locate(base, job_name, None, _message(exc)))
        return None
    forbidden = [
        locate((*base, field), job_name, field, str(interpolate.ForbiddenVariable(name)))
        for field, value in (("args", job.args), ("kwargs", job.kwargs))
        if value and _OWN_REFERENCE in repr(value)  # every string in it shows in its repr
        for name in interpolate.own_settings_named(value)
    ]
    problems.extend(forbidden)
    return None if forbidden else job


_OWN_REFERENCE = "${" + interpolate.OWN_PREFIX

_PARTS: dict[str, type[BaseModel]] = {"trigger": models.Trigger, "retries": models.Retries}
_known_parts: dict[tuple[str, str], BaseModel] = {}
"""Valid triggers and retry policies already read, by field and `repr` of the mapping as
written. Many jobs share one (every job `@daily`), so each is validated once; the frozen model
is shared by those jobs. A mapping from YAML holds only str, int, float, bool, None, lists
and mappings, whose repr tells every such value from every other."""
MAX_KNOWN_PARTS = 20_000


def _with_known_parts(item: dict[str, Any]) -> dict[str, Any]:
    """`item` with its trigger and retries replaced by their validated models when they are
    valid. An invalid one is left as written, so validating the job reports it in place."""
    replaced: dict[str, Any] | None = None
    for name, model in _PARTS.items():
        raw = item.get(name)
        if type(raw) is not dict:
            continue
        key = (name, repr(raw))
        part = _known_parts.get(key)
        if part is None:
            try:
                part = model.model_validate(raw)
            except ValidationError:
                continue
            if len(_known_parts) >= MAX_KNOWN_PARTS:
                _known_parts.clear()
            _known_parts[key] = part
        if replaced is None:
            replaced = dict(item)
        replaced[name] = part
    return item if replaced is None else replaced


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(_clean(e["msg"]) for e in exc.errors())
    return str(exc)


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


_NESTED: dict[str, type[BaseModel]] = {"trigger": models.Trigger, "retries": models.Retries}


def _unknown(key: object, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {key!r}{hint}"


def _from_pydantic(
    exc: ValidationError,
    base: YamlPath,
    job: str | None,
    locate: _Locator,
    model: type[BaseModel],
) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        field = ".".join(str(p) for p in loc) or None
        if error["type"] == "extra_forbidden":
            owner = _NESTED.get(str(loc[0]), model) if len(loc) > 1 else model
            message = _unknown(
                loc[-1], (f for f in owner.model_fields if f != "id" or owner is model)
            )
        elif error["type"] == "missing":
            message = "required"
        else:
            message = wording.plain(error)
            if error["type"] in (
                "int_type",
                "bool_type",
                "string_type",
                "float_type",
                "list_type",
                "dict_type",
                "model_type",
            ):
                message += f", got {_describe(error.get('input'))}"
        problems.append(locate((*base, *loc), job, field, message))
    return problems


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_SUPPRESSED = Problem("", 0, 0, None, None, "")
"""Stands for a schema problem at a value the YAML reader already reported."""


class _Locator:
    """Finds the closest recorded position for a path into the document."""

    def __init__(self, file: str, positions: Positions, reported: set[YamlPath]) -> None:
        self.file = file
        self.positions = positions
        self.reported = reported
        """Paths with a YAML-level problem: a schema error there would say it twice."""

    def position(self, path: YamlPath) -> tuple[int, int]:
        for cut in range(len(path), -1, -1):
            found = self.positions.get(path[:cut])
            if found is not None:
                return found
        return (1, 1)

    def line(self, path: YamlPath) -> int:
        return self.position(path)[0]

    def __call__(self, path: YamlPath, job: str | None, field: str | None, message: str) -> Problem:
        if self.reported and any(path[: len(r)] == r for r in self.reported):
            return _SUPPRESSED
        line, column = self.position(path)
        return Problem(self.file, line, column, job, field, message)
