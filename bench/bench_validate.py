"""Wall time of `runner validate --no-import DIR` on 10,000 jobs in 100 files, whole process.

    python bench/bench_validate.py [--files 100] [--jobs-per-file 100] [--repeat 3]

Prints a markdown table (median of --repeat runs). No database is involved. Target: <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_jobs import generate

TARGET_SECONDS = 3.0


def runner_command() -> list[str]:
    """The installed `runner` script beside this interpreter, else `python -m runner`."""
    script = Path(sys.executable).with_name("runner")
    if script.exists():
        return [str(script)]
    found = shutil.which("runner")
    return [found] if found else [sys.executable, "-m", "runner"]


def bench_env() -> dict[str, str]:
    """The environment for timed runs: bytecode is cached, as for an installed program."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(command: list[str], expect: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one whole run of `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=bench_env())
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != expect:
        raise SystemExit(
            f"{' '.join(command)} exited {done.returncode}, expected {expect}:\n"
            f"{done.stderr[-2000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def table(rows: list[tuple[str, list[tuple[float, float]]]], targets: dict[str, float]) -> None:
    """A markdown table: median wall time (the figure the targets are about), min, max, CPU."""
    print("| step | median wall (s) | min (s) | max (s) | median CPU (s) | target |")
    print("|---|---:|---:|---:|---:|---|")
    for step, runs in rows:
        walls = [wall for wall, _ in runs]
        median = statistics.median(walls)
        cpu = statistics.median(c for _, c in runs)
        target = targets.get(step)
        verdict = (
            f"<= {target:g} s: {'met' if median <= target else 'MISSED'}"
            if target is not None
            else "(baseline)"
        )
        print(
            f"| {step} | {median:.2f} | {min(walls):.2f} | {max(walls):.2f} | {cpu:.2f} "
            f"| {verdict} |"
        )


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"host: {os.cpu_count()} CPUs, load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--jobs-per-file", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[str, list[tuple[float, float]]]] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        folder = Path(tmp) / "jobs.d"
        count = generate(folder, args.files, args.jobs_per_file)
        for label, extra in (("text output", []), ("--output json", ["--output", "json"])):
            command = [*runner_command(), "validate", "--no-import", *extra, str(folder)]
            timed(command, 0)  # warm-up: compiles and caches bytecode, not counted
            rows.append((label, [timed(command, 0) for _ in range(args.repeat)]))
    print(f"`runner validate --no-import DIR`: {count} jobs in {args.files} files")
    print(f"median of {args.repeat} whole-process runs after one warm-up; {load_note()}\n")
    table(rows, {label: TARGET_SECONDS for label, _ in rows})


if __name__ == "__main__":
    main()
