"""Command jobs: `command: [program, arg...]` run in a child process, if the operator allows it.

The job-file author names a program; only the operator decides which programs may run. The
operator lists them in `RUNNER_ALLOWED_COMMANDS` as absolute paths (comma- or
`os.pathsep`-separated). A job's program is either one of those paths, written exactly, or a
bare name that is the last component of exactly one of them: a name is looked up in the
allowlist and nowhere else (never on PATH, never in a working directory), and what runs is
always the operator's path, never the author's spelling of it (a symlink the author placed,
a `..` detour). There is no shell: the arguments reach the program as they are, with
`${VAR}` resolved as in args. A shell runs only if the operator lists one, and then the
author writes `[sh, -c, "..."]` in full.

The child gets its own session (so its whole process group is stopped together), stdin
from /dev/null, a new private working directory that is removed afterwards, and a small
environment: PATH, HOME, LANG, LC_ALL, TZ, TMPDIR from the runner's, plus the variables
`RUNNER_JOB_ENV` allows (never `RUNNER_*`). At its timeout the group gets SIGTERM, then
SIGKILL after `STOP_GRACE` seconds; when the program ends, whatever it left running in its
group is killed. Only the last `MAX_OUTPUT` bytes of stdout and stderr (merged) are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from runner import interpolate
from runner.errors import Problem
from runner.executors.base import Outcome, Status

if TYPE_CHECKING:
    from runner.jobfiles import SourcedJob

ENV_ALLOWED = "RUNNER_ALLOWED_COMMANDS"
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
"""Variables of the runner's environment every command gets (when they are set)."""
STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a command outlives its timeout."""
MAX_OUTPUT = 16 * 1024
"""Bytes of output kept: the tail, where a failing program says why."""
DRAIN_WAIT = 1.0
"""Seconds to wait for the output pipe to close once the program is gone (a process that
left its session could hold it open forever)."""


class CommandError(ValueError):
    """The command may not run here; the message says what the operator must set."""


def allowlist(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The operator's programs; a relative entry is an error, not a PATH lookup."""
    raw = environ.get(ENV_ALLOWED, "")
    entries = [e.strip() for part in raw.split(",") for e in part.split(os.pathsep)]
    entries = [e for e in entries if e]
    for entry in entries:
        if not os.path.isabs(entry):
            raise CommandError(
                f"{ENV_ALLOWED} entry {entry!r} is not an absolute path; list programs "
                "by their full path, e.g. /usr/bin/pg_dump"
            )
    return tuple(entries)


def executable(program: str, allowed: Sequence[str]) -> str:
    """The operator's path that `program` names, or CommandError saying why it may not run."""
    if not allowed:
        raise CommandError(
            f"command jobs are disabled: the operator enables them by listing the programs "
            f"they may run in {ENV_ALLOWED} (absolute paths, comma-separated)"
        )
    if os.path.isabs(program):
        if program in allowed:
            return program
        raise CommandError(f"{program!r} is not allowed ({ENV_ALLOWED}: {', '.join(allowed)})")
    if "/" in program or program in ("", ".", ".."):
        raise CommandError(f"{program!r} is a relative path; give an absolute path or a name")
    matches = [entry for entry in allowed if os.path.basename(entry) == program]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CommandError(
            f"{program!r} is ambiguous ({', '.join(matches)} are allowed); write the full path"
        )
    raise CommandError(f"{program!r} is not allowed ({ENV_ALLOWED}: {', '.join(allowed)})")


def check(jobs: Sequence[SourcedJob], environ: Mapping[str, str] = os.environ) -> list[Problem]:
    """What `validate`, `apply` and a reload refuse: programs the allowlist does not name,
    and arguments that name the runner's own settings."""
    problems = []
    allowed: tuple[str, ...] | CommandError | None = None
    for sourced in jobs:
        argv = sourced.job.command
        if argv is None:
            continue
        if allowed is None:
            try:
                allowed = allowlist(environ)
            except CommandError as exc:
                allowed = exc
        line, column = sourced.position("command")
        for message in _refusals(argv, allowed):
            problems.append(Problem(sourced.file, line, column, sourced.job.id, "command", message))
    return problems


def _refusals(argv: Sequence[str], allowed: tuple[str, ...] | CommandError) -> list[str]:
    found = []
    try:
        if isinstance(allowed, CommandError):
            raise allowed
        executable(argv[0], allowed)
    except CommandError as exc:
        found.append(str(exc))
    if "$" in argv[0]:
        found.append(f"the program {argv[0]!r} is never interpolated; write it out")
    found.extend(
        str(interpolate.ForbiddenVariable(name))
        for name in interpolate.own_settings_named(list(argv[1:]))
    )
    return found


def child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Not the runner's environment, which holds its database URL and tokens."""
    env = {name: environ[name] for name in PASSED_THROUGH if name in environ}
    for name, value in environ.items():
        if interpolate.variable_allowed(name, environ):
            env[name] = value
    env.setdefault("PATH", os.defpath)
    return env


class _Tail:
    """The last `limit` bytes written, in bounded memory whatever the program prints."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.cut = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            extra = len(self.data) - self.limit
            del self.data[:extra]
            self.cut += extra

    def text(self) -> str | None:
        if not self.data and not self.cut:
            return None
        text = self.data.decode("utf-8", errors="replace")
        return f"... ({self.cut} bytes of output cut)\n{text}" if self.cut else text

    def last_line(self) -> str:
        lines = self.data.decode("utf-8", errors="replace").strip().splitlines()
        return lines[-1].strip()[:300] if lines else ""


class _Running:
    """One started program: its exit and its output, seen from the event loop."""

    def __init__(self, process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.process = process
        self.loop = loop
        self.tail = _Tail(MAX_OUTPUT)
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        assert process.stdout is not None
        self.out = process.stdout.fileno()
        os.set_blocking(self.out, False)
        loop.add_reader(self.out, self._readable)
        self._watch_exit()

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.process.pid)
        except (AttributeError, OSError):  # no pidfd (not Linux, or an old kernel): a thread
            threading.Thread(target=self._wait_blocking, daemon=True).start()
            return

        def readable() -> None:
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
            self._exit_seen()

        self.loop.add_reader(pidfd, readable)

    def _wait_blocking(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            self.loop.call_soon_threadsafe(self._exit_seen)

    def _exit_seen(self) -> None:
        # The program is a zombie until reaped, so its group id cannot be reused yet: kill
        # what it left running in its group first, then reap it.
        self.signal_group(signal.SIGKILL)
        self.process.wait()
        if not self.exited.done():
            self.exited.set_result(None)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.out, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.tail.add(chunk)
            return
        self._close_output()

    def _close_output(self) -> None:
        if not self.drained.done():
            self.loop.remove_reader(self.out)
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.drained.set_result(None)

    def signal_group(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    async def stop(self) -> bool:
        """SIGTERM, then SIGKILL after the grace; True when it took SIGKILL."""
        self.signal_group(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE):
                await asyncio.shield(self.exited)
            return False
        except TimeoutError:
            self.signal_group(signal.SIGKILL)
            await asyncio.shield(self.exited)
            return True

    async def finish(self) -> None:
        """After the exit: the rest of the output, bounded in time."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_WAIT):
                await asyncio.shield(self.drained)
        self._close_output()

    def abandon(self) -> None:
        """Cancelled (the runner stops): kill now, reap in the background."""
        self.signal_group(signal.SIGKILL)
        self._close_output()
        if not self.exited.done():
            threading.Thread(target=self.process.wait, daemon=True).start()


def _start(path: str, args: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [path, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,  # its own process group, stopped as one
        close_fds=True,
    )


def _ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def run(
    argv: Sequence[str], timeout: float | None, environ: Mapping[str, str], secrets: set[str]
) -> Outcome:
    """One attempt of a command job; `environ` is the executing process's environment, whose
    allowlist decides (a worker may allow less than the machine that validated the file)."""
    try:
        path = executable(argv[0], allowlist(environ))
        args = interpolate.resolve(list(argv[1:]), environ, secrets)
    except (CommandError, interpolate.MissingVariable) as exc:
        return Outcome(Status.FAILED, str(exc), permanent=True)
    workdir = tempfile.mkdtemp(prefix="runner-command-")
    try:
        try:
            process = _start(path, args, child_environ(environ), workdir)
        except OSError as exc:
            return Outcome(Status.FAILED, f"cannot start {path}: {exc}", permanent=True)
        running = _Running(process, asyncio.get_running_loop())
        try:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(running.exited)
                killed = None
            except TimeoutError:
                killed = await running.stop()
            await running.finish()
        except asyncio.CancelledError:
            running.abandon()
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    output = interpolate.redact(running.tail.text(), secrets)
    if killed is not None:
        how = f"SIGKILL after {STOP_GRACE:g}s (it ignored SIGTERM)" if killed else "SIGTERM"
        return Outcome(Status.TIMED_OUT, f"timed out after {timeout}s; stopped with {how}", output)
    code = process.returncode
    if code == 0:
        return Outcome(Status.SUCCEEDED, None, output)
    last = running.tail.last_line()
    error = f"{path} {_ended(code)}" + (f": {last}" if last else "")
    return Outcome(Status.FAILED, interpolate.redact(error, secrets), output)
