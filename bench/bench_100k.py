"""The file side of issue 12: `validate` and `apply` on 100,000 jobs in 1,000 files.

    python bench/bench_100k.py [--repeat 1] [--files 1000] [--jobs-per-file 100] [--no-sqlite]

The set is made by `gen_100k.py` (daily crons in four zones and hourly intervals, target
`runner.tasks:heartbeat`). Each round applies to a fresh PostgreSQL database (and a fresh
SQLite file), dropped afterwards. "1 % changed" rewrites 1 % of the files (their jobs get new
kwargs), as a commit touching a few files does. Whole processes, after one untimed warm-up
that compiles and caches bytecode; the table shows medians of --repeat rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common100k import (
    Run,
    generate,
    load_note,
    postgres_database,
    runner_command,
    sqlite_database,
    table,
    timed,
)

TARGETS = {
    "validate --no-import": "<= 4 s (was 5.6)",
    "first apply": "<= 10 s (was 18.7)",
    "re-apply, unchanged": "<= 3 s (was 6.9)",
    "--dry-run, unchanged": "<= 3 s (was 6.4)",
}

Steps = dict[str, list[Run]]


def change_files(folder: Path, share: float) -> int:
    """Give every job in the first `share` of the files new kwargs; return the files changed."""
    files = sorted(folder.glob("*.yaml"))
    count = max(1, round(len(files) * share))
    for path in files[:count]:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace('"}', ' changed"}'), encoding="utf-8")
    return count


def apply_steps(folder: Path, url: str, label: str, record: Callable[[str, Run], None]) -> None:
    """First apply, unchanged re-apply and dry-run, then 1 % changed, on one database."""
    runner = runner_command()

    def apply(*extra: str, expect: int = 0) -> Run:
        return timed([*runner, "apply", str(folder), "--db", url, *extra], expect)

    record(f"{label}first apply", apply())
    record(f"{label}re-apply, unchanged", apply())
    record(f"{label}--dry-run, unchanged", apply("--dry-run"))
    change_files(folder, 0.01)
    record(f"{label}--dry-run, 1 % changed", apply("--dry-run", expect=2))
    record(f"{label}apply, 1 % changed", apply())


def validate_steps(folder: Path, record: Callable[[str, Run], None]) -> None:
    runner = runner_command()
    record("validate --no-import", timed([*runner, "validate", "--no-import", str(folder)]))
    record("validate (imports targets)", timed([*runner, "validate", str(folder)]))


def one_round(folder: Path, files: int, per_file: int, sqlite: bool, steps: Steps) -> None:
    def record(step: str, run: Run) -> None:
        steps.setdefault(step, []).append(run)

    generate(folder, files, per_file)
    validate_steps(folder, record)
    with postgres_database("100k") as url:
        apply_steps(folder, url, "", record)
    if sqlite:
        generate(folder, files, per_file)
        with sqlite_database() as url:
            apply_steps(folder, url, "SQLite: ", record)


def warm_up(folder: Path) -> None:
    """Compile and cache every module once, as an installed program has them (not timed)."""
    generate(folder, 2, 10)
    runner = runner_command()
    timed([*runner, "validate", str(folder)])
    with sqlite_database() as url:
        timed([*runner, "apply", str(folder), "--db", url])
    with postgres_database("warmup") as url:
        timed([*runner, "apply", str(folder), "--db", url])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--jobs-per-file", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-sqlite", action="store_true", help="Skip the SQLite rows.")
    args = parser.parse_args()
    steps: Steps = {}
    with tempfile.TemporaryDirectory(prefix="runner-bench-100k-") as tmp:
        warm_up(Path(tmp) / "warm-up")
        for _ in range(args.repeat):
            one_round(
                Path(tmp) / "jobs.d", args.files, args.jobs_per_file, not args.no_sqlite, steps
            )
    total = args.files * args.jobs_per_file
    print(f"`runner validate` and `runner apply`: {total} jobs in {args.files} files")
    print(f"median of {args.repeat} round(s), whole process, after one warm-up; {load_note()}\n")
    table(list(steps.items()), TARGETS)


if __name__ == "__main__":
    main()
