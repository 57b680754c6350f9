"""Generate the 100,000-job set of issue #12: 1,000 files of 100 jobs, `runner.tasks:heartbeat`.

Half the jobs are daily crons spread over the day (minute and hour from the job number) in
four zones, half hourly intervals with their start spread over the hour: one job per
customer. The crons bring about 0.6 fires a second, the intervals about 14, evenly spread,
whatever the time of day.

    python bench/gen_100k.py DIR [--files 1000] [--jobs-per-file 100]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]
SECONDS_PER_DAY = 86_400


def _daily(position: int, count: int) -> list[str]:
    """The `position`-th of `count` daily crons spread evenly over the day, zones in turn."""
    second_of_day = position * SECONDS_PER_DAY // max(1, count)
    hour, minute = divmod(second_of_day // 60, 60)
    zone = ZONES[position % len(ZONES)]
    return [f'      cron: "{minute} {hour} * * *"', f"      timezone: {zone}"]


def _job(number: int, total: int, daily: bool) -> list[str]:
    lines = [
        f"  - id: tenant-{number:06d}",
        "    target: runner.tasks:heartbeat",
        f'    kwargs: {{message: "tenant {number}"}}',
        "    trigger:",
    ]
    if daily:
        lines += _daily(number, total)
    elif number % 2 == 0:
        # Daily crons: the half of the set at even numbers, spread evenly over the day.
        lines += _daily(number // 2, total // 2)
    else:
        second_of_hour = (number // 2) % 3600
        lines.append("      interval: 1h")
        minute, second = divmod(second_of_hour, 60)
        lines.append(f"      start: 2026-01-01T00:{minute:02d}:{second:02d}+00:00")
    return lines


def generate(folder: Path, files: int = 1000, jobs_per_file: int = 100, daily: bool = False) -> int:
    """Write the files into `folder` (created if needed); return the number of jobs.

    `daily` makes every job a daily cron (about 1.2 fires a second, in bursts at minute
    boundaries) instead of the half-and-half set."""
    folder.mkdir(parents=True, exist_ok=True)
    total = files * jobs_per_file
    number = 0
    for index in range(files):
        lines = [f"# tenant job file {index}", "jobs:"]
        for _ in range(jobs_per_file):
            lines.extend(_job(number, total, daily))
            number += 1
        (folder / f"tenants-{index:04d}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--jobs-per-file", type=int, default=100)
    args = parser.parse_args()
    count = generate(args.folder, args.files, args.jobs_per_file)
    print(f"wrote {count} jobs in {args.files} files to {args.folder}")


if __name__ == "__main__":
    main()
