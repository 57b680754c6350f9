"""`runner validate DIR | head`: a reader that goes away gets no "internal error"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    lines = ["jobs:"]
    for n in range(3000):  # more output than a pipe buffer holds
        lines += [
            f"  - id: job-{n}",
            "    target: runner.tasks:heartbeat",
            "    trigger: {interval: 1h}",
        ]
    (tmp_path / "many.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "runner", "validate", "--no-import", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"job-0 ")
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1
    assert stderr == ""
