"""`runner validate` prints every line, and exits with its code, however it ends its process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from runner import cli


def _write_jobs(folder: Path, count: int, broken: int | None = None) -> None:
    lines = ["jobs:"]
    for n in range(count):
        trigger = "{cron: '61 * * * *'}" if n == broken else "{interval: 1h}"
        lines += [
            f"  - id: job-{n}",
            "    target: runner.tasks:heartbeat",
            f"    trigger: {trigger}",
        ]
    (folder / "many.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _command_line(folder: Path) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "runner", "validate", "--no-import", str(folder)]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def test_the_command_line_prints_what_the_cli_prints_in_process(tmp_path: Path) -> None:
    _write_jobs(tmp_path, 3000)
    ran = _command_line(tmp_path)
    in_process = CliRunner().invoke(cli.main, ["validate", "--no-import", str(tmp_path)])
    assert ran.returncode == in_process.exit_code == 0
    out = ran.stdout.decode()
    assert out == in_process.stdout
    assert out.count("\n") == 3001
    assert out.endswith("3000 job(s) in 1 file(s) are valid.\n")
    assert ran.stderr == b""


def test_the_command_line_reports_problems_and_exits_1(tmp_path: Path) -> None:
    _write_jobs(tmp_path, 3000, broken=2345)
    ran = _command_line(tmp_path)
    in_process = CliRunner().invoke(cli.main, ["validate", "--no-import", str(tmp_path)])
    assert ran.returncode == in_process.exit_code == 1
    err = ran.stderr.decode()
    assert err == in_process.stderr
    assert err.startswith(f"{tmp_path / 'many.yaml'}:{2 + 3 * 2345 + 2}:")
    assert err.endswith("nothing is valid until all are fixed\n")
    assert ran.stdout == b""


def test_echo_lines_writes_what_one_echo_per_line_writes() -> None:
    lines = [f"job-{n}  \x1b[31mred\x1b[0m {'é' * (n % 50)}" for n in range(700)]
    lines += ["", "x" * 5000, "last"]

    @click.command()
    def per_line() -> None:
        for line in lines:
            click.echo(line)

    @click.command()
    def batched() -> None:
        cli.echo_lines(lines)

    expected = CliRunner().invoke(per_line).stdout_bytes
    assert "\x1b" not in expected.decode()  # not a terminal: codes are stripped
    assert CliRunner().invoke(batched).stdout_bytes == expected


def test_a_large_set_read_in_two_processes_reports_as_one_process_does(tmp_path: Path) -> None:
    """Over READ_AHEAD_BYTES the command line reads in a child; in process it does not."""
    import os as _os

    from runner import jobfiles

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_100k import generate

    generate(tmp_path, files=130, jobs_per_file=100)
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert size > jobfiles.READ_AHEAD_BYTES
    for index, old, new in [
        (7, '"}', '"}, extra: 1'),  # a YAML key inside a flow mapping's value: a problem
        (64, "      timezone: UTC", "      timezone: no"),
        (129, "  - id: tenant-0129", "  - id: tenant-0000"),
    ]:
        path = tmp_path / f"tenants-{index:04d}.yaml"
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    (tmp_path / "tenants-0100.yaml").unlink()
    _os.symlink(tmp_path / "missing", tmp_path / "tenants-0100.yaml")
    ran = _command_line(tmp_path)
    in_process = CliRunner().invoke(cli.main, ["validate", "--no-import", str(tmp_path)])
    assert ran.returncode == in_process.exit_code == 1
    assert ran.stderr.decode() == in_process.stderr
    assert ran.stderr.decode().count("\n") >= 5
