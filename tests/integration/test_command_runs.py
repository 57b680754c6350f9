"""Command jobs run as real processes through the attempt path every executor uses.

Each test runs `run_fire` on a real event loop with real programs (/bin/sh, /usr/bin/env,
this Python) and looks at what the recorder got and what is left on the machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runner import commands
from runner.execute import Fire, Outcome, Status, run_fire

SH = "/bin/sh"
ENV_PROGRAM = "/usr/bin/env"
ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    commands.ENV_ALLOWED: f"{SH},{ENV_PROGRAM},{sys.executable}",
    "RUNNER_JOB_ENV": "VISIBLE,GREETING",
}


@dataclass
class Recorded:
    outcomes: list[tuple[int, Outcome]] = field(default_factory=list)

    def started(self, fire: Fire, attempt: int, at: datetime) -> None:
        return None

    def finished(
        self, fire: Fire, attempt: int, at: datetime, duration: float, outcome: Outcome
    ) -> None:
        self.outcomes.append((attempt, outcome))


async def _no_wait(seconds: float) -> None:
    return None


def run(
    command: list[str], environ: Mapping[str, str] = ENV, **spec: Any
) -> tuple[Outcome, Recorded]:
    recorder = Recorded()
    fire = Fire("cmd", {"command": command, **spec}, datetime.now(UTC))
    outcome = asyncio.run(run_fire(fire, recorder, None, environ, sleep=_no_wait))
    return outcome, recorder


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "STOP_GRACE", 1.0)


def test_a_command_that_prints_and_exits_0_succeeds_with_its_output_recorded() -> None:
    outcome, recorded = run(
        [SH, "-c", 'echo "$1 from sh"; echo "to stderr" >&2', "sh", "${GREETING}"],
        {**ENV, "GREETING": "hi"},  # too short to be redacted as a secret
    )
    assert outcome.status == Status.SUCCEEDED and outcome.error is None
    assert outcome.traceback == "hi from sh\nto stderr\n"
    assert [a for a, _ in recorded.outcomes] == [1]


def test_a_non_zero_exit_fails_and_is_retried_per_policy() -> None:
    outcome, recorded = run(
        ["sh", "-c", "echo working; echo 'disk full' >&2; exit 3"], retries={"max_attempts": 3}
    )
    assert outcome.status == Status.FAILED and not outcome.permanent
    assert outcome.error == "/bin/sh exited with code 3: disk full"
    assert outcome.traceback == "working\ndisk full\n"
    assert [(a, o.status) for a, o in recorded.outcomes] == [(n, Status.FAILED) for n in (1, 2, 3)]


def test_a_program_killed_by_a_signal_names_it() -> None:
    outcome, _ = run([SH, "-c", "kill -SEGV $$$$"])
    assert outcome.status == Status.FAILED
    assert outcome.error == "/bin/sh was killed by SIGSEGV"


def test_past_its_timeout_the_whole_group_is_stopped_even_ignoring_sigterm(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    script = (
        'trap "" TERM; sleep 600 & echo $! > "$1"; echo $$$$ >> "$1"; echo started; '
        "while :; do sleep 1; done"
    )
    outcome, recorded = run([SH, "-c", script, "sh", str(pids)], timeout=1)
    assert outcome.status == Status.TIMED_OUT
    assert outcome.error == "timed out after 1s; stopped with SIGKILL after 1s (it ignored SIGTERM)"
    assert outcome.traceback == "started\n"
    grandchild, child = (int(p) for p in pids.read_text().split())
    wait_until(lambda: gone(child) and gone(grandchild), 10, "the program and its child")
    assert len(recorded.outcomes) == 1


def test_a_program_that_honours_sigterm_is_not_killed(tmp_path: Path) -> None:
    script = 'trap "echo bye; exit 0" TERM; echo up; while :; do sleep 0.1; done'
    outcome, _ = run([SH, "-c", script], timeout=1)
    assert outcome.status == Status.TIMED_OUT
    assert outcome.error == "timed out after 1s; stopped with SIGTERM"
    assert outcome.traceback is not None  # and sh may say its `sleep` was "Terminated"
    assert outcome.traceback.startswith("up\n") and outcome.traceback.endswith("bye\n")


def test_what_a_program_leaves_running_is_killed_when_it_ends(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    outcome, _ = run([SH, "-c", 'sleep 600 & echo $! > "$1"', "sh", str(pid_file)])
    assert outcome.status == Status.SUCCEEDED
    wait_until(lambda: gone(int(pid_file.read_text())), 10, "the background child")


def test_only_the_tail_of_a_flood_of_output_is_kept() -> None:
    flood = "import sys\nfor i in range(200000): print(f'line {i:06d}')\nprint('the end')"
    outcome, _ = run([sys.executable, "-c", flood])
    assert outcome.status == Status.SUCCEEDED and outcome.traceback is not None
    head, _, kept = outcome.traceback.partition("\n")
    assert head.startswith("... (") and head.endswith(" bytes of output cut)")
    assert len(kept.encode()) <= commands.MAX_OUTPUT
    assert kept.endswith("line 199999\nthe end\n")


def test_the_environment_is_minimal_plus_what_runner_job_env_allows() -> None:
    environ = {
        **ENV,
        "HOME": "/home/ops",
        "VISIBLE": "shown",
        "API_SECRET": "s3cr3t-value",
        "RUNNER_DATABASE_URL": "postgresql://u:pw@db/runner",
        "RUNNER_HTTP_TOKEN": "tok-123456",
    }
    outcome, _ = run([ENV_PROGRAM], environ)
    assert outcome.status == Status.SUCCEEDED and outcome.traceback is not None
    seen = dict(line.split("=", 1) for line in outcome.traceback.splitlines())
    assert seen == {"PATH": ENV["PATH"], "HOME": "/home/ops", "VISIBLE": "shown"}


def test_stdin_is_empty_and_the_working_directory_is_private_and_removed() -> None:
    script = 'pwd; stat -c %a .; cat; echo "read $?"'
    outcome, _ = run([SH, "-c", script])
    assert outcome.status == Status.SUCCEEDED and outcome.traceback is not None
    workdir, mode, read = outcome.traceback.splitlines()
    assert os.path.basename(workdir).startswith("runner-command-") and mode == "700"
    assert read == "read 0"
    assert not os.path.exists(workdir)


def test_a_resolved_secret_is_redacted_from_the_output_and_the_error() -> None:
    environ = {**ENV, "GREETING": "very-secret-token"}
    outcome, _ = run([SH, "-c", 'echo "using $1"; exit 1', "sh", "${GREETING}"], environ)
    assert outcome.status == Status.FAILED
    assert outcome.traceback == "using ***\n"
    assert outcome.error == "/bin/sh exited with code 1: using ***"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({k: v for k, v in ENV.items() if k != commands.ENV_ALLOWED}, "command jobs are disabled"),
        ({**ENV, commands.ENV_ALLOWED: ENV_PROGRAM}, "'/bin/sh' is not allowed"),
    ],
)
def test_a_program_this_process_does_not_allow_fails_at_once_without_retries(
    environ: dict[str, str], message: str, tmp_path: Path
) -> None:
    """The process that executes decides: a worker may allow less than where it was applied."""
    marker = tmp_path / "ran"
    outcome, recorded = run(
        [SH, "-c", 'touch "$1"', "sh", str(marker)], environ, retries={"max_attempts": 3}
    )
    assert outcome.status == Status.FAILED and outcome.permanent
    assert outcome.error is not None and message in outcome.error
    assert len(recorded.outcomes) == 1
    assert not marker.exists()


def test_an_unset_variable_fails_at_once() -> None:
    outcome, recorded = run(["sh", "-c", "true", "${VISIBLE}"], retries={"max_attempts": 3})
    assert outcome.status == Status.FAILED and outcome.permanent
    assert outcome.error == "environment variable VISIBLE is not set and has no default"
    assert len(recorded.outcomes) == 1


def test_a_missing_program_fails_at_once(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    outcome, recorded = run([missing], {**ENV, commands.ENV_ALLOWED: missing})
    assert outcome.status == Status.FAILED and outcome.permanent
    assert outcome.error is not None and outcome.error.startswith(f"cannot start {missing}: ")
    assert len(recorded.outcomes) == 1


def test_cancelling_the_run_kills_the_program(tmp_path: Path) -> None:
    """The runner stopping (or a worker past its grace) must not leave the program behind."""
    pid_file = tmp_path / "pid"

    async def scenario() -> None:
        fire = Fire(
            "cmd",
            {"command": [SH, "-c", 'echo $$$$ > "$1"; sleep 600', "sh", str(pid_file)]},
            datetime.now(UTC),
        )
        task = asyncio.ensure_future(run_fire(fire, Recorded(), None, ENV))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 30))
    wait_until(lambda: gone(int(pid_file.read_text())), 10, "the cancelled program")
