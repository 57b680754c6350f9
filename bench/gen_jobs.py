"""Generate a realistic job-file set for the benchmarks: 10,000 jobs across 100 files by default.

The mix: cron strings (plain, with names, macros, 6-field), cron mappings, intervals and
one-off `at` jobs; kwargs and args; per-file defaults (time zone, misfire grace time,
retries, labels); retries, timeouts, jitter, paused jobs, descriptions and labels on some.
Every target ships with runner (`runner.tasks`), so the files validate with or without
importing targets and need no RUNNER_ALLOWED_TARGETS.

    python bench/gen_jobs.py DIR [--files 100] [--jobs-per-file 100] [--changed-percent 0]

`changed` (a set of global job numbers) alters those jobs: even numbers get new kwargs,
odd numbers a new trigger, so a re-apply has both kinds of update.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable
from pathlib import Path

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London"]
CRONS = [
    "0 9 * * mon-fri",
    "*/15 * * * *",
    "30 2 * * *",
    "0 */6 * * *",
    "15 3 1 * *",
    "0 0 * * 0",
    "5 4 * * sun",
    "0 22 * * 1-5",
    "0 12 1,15 * *",
    "@hourly",
    "@daily",
    "@weekly",
    "0 30 8 * * *",
]
INTERVALS = ["30s", "1m", "5m", "15m", "1h", "1h30m", "6h", "1d", 45, 600]


def _job(number: int, rng: random.Random, changed: bool) -> list[str]:
    job_id = f"job-{number:05d}"
    kind = rng.random()
    lines = [f"  - id: {job_id}"]
    target = rng.choice(["heartbeat", "heartbeat", "heartbeat", "sleep", "fail"])
    lines.append(f"    target: runner.tasks:{target}")
    alter_kwargs = changed and number % 2 == 0
    alter_trigger = changed and number % 2 == 1
    if target == "heartbeat":
        message = f"job {number} says hi" + (" (v2)" if alter_kwargs else "")
        lines.append(f'    kwargs: {{message: "{message}", path: "{job_id}.log"}}')
    elif target == "sleep":
        lines.append(f"    kwargs: {{seconds: {rng.randint(1, 30) + (1 if alter_kwargs else 0)}}}")
    else:
        lines.append(f'    args: ["failure {number}{" v2" if alter_kwargs else ""}"]')
    lines.append("    trigger:")
    if kind < 0.45:
        expression = rng.choice(CRONS)
        if alter_trigger:
            expression = "45 1 * * *" if expression != "45 1 * * *" else "50 1 * * *"
        lines.append(f'      cron: "{expression}"')
        if rng.random() < 0.2:
            lines.append(f"      jitter: {rng.choice(['10s', '30s', '1m'])}")
    elif kind < 0.55:
        minute, hour = rng.randint(0, 59), rng.randint(0, 23)
        if alter_trigger:
            hour = (hour + 1) % 24
        lines.append(f"      cron: {{minute: {minute}, hour: {hour}, day: 1-28}}")
    elif kind < 0.9:
        interval = rng.choice(INTERVALS)
        if alter_trigger:
            interval = "7m"
        lines.append(f"      interval: {interval}")
        if rng.random() < 0.3:
            lines.append("      start: 2026-01-01T00:00:00+00:00")
    else:
        day = rng.randint(1, 28)
        hour = 10 if alter_trigger else 9
        lines.append(f"      at: 2031-03-{day:02d}T{hour:02d}:00:00+01:00")
    if rng.random() < 0.15:
        lines.append(f"      timezone: {rng.choice(ZONES)}")
    if rng.random() < 0.3:
        attempts = rng.randint(2, 5)
        lines.append(f"    retries: {{max_attempts: {attempts}, delay: 10s, backoff: 2}}")
    if rng.random() < 0.3:
        lines.append(f"    timeout: {rng.choice(['30s', '5m', '1h'])}")
    if rng.random() < 0.1:
        lines.append("    coalesce: false")
    if rng.random() < 0.05:
        lines.append("    paused: true")
    if rng.random() < 0.5:
        lines.append(f"    description: Job number {number} of the benchmark set")
    if rng.random() < 0.2:
        lines.append(f"    labels: {{owner: team-{number % 7}, tier: t{number % 3}}}")
    return lines


def _defaults(index: int, rng: random.Random) -> list[str]:
    lines = ["defaults:", f"  timezone: {ZONES[index % len(ZONES)]}"]
    if index % 2 == 0:
        lines.append(f"  misfire_grace_time: {rng.choice(['1m', '10m', '1h'])}")
    if index % 3 == 0:
        lines.append("  retries: {max_attempts: 3, delay: 30s, backoff: 2, max_delay: 10m}")
    if index % 4 == 0:
        lines.append(f"  labels: {{team: team-{index % 9}}}")
    return lines


def generate(
    folder: Path,
    files: int = 100,
    jobs_per_file: int = 100,
    changed: Iterable[int] = (),
    seed: int = 20260101,
) -> int:
    """Write the files into `folder` (created if needed); return the number of jobs."""
    folder.mkdir(parents=True, exist_ok=True)
    altered = set(changed)
    rng = random.Random(seed)
    number = 0
    for index in range(files):
        lines = [f"# benchmark job file {index}", *_defaults(index, rng), "jobs:"]
        for _ in range(jobs_per_file):
            lines.extend(_job(number, rng, number in altered))
            number += 1
        (folder / f"jobs-{index:03d}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return number


def spread(total: int, percent: float) -> list[int]:
    """`percent` % of the job numbers, spread evenly across the files."""
    count = max(1, round(total * percent / 100))
    step = total / count
    return [int(i * step) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--jobs-per-file", type=int, default=100)
    parser.add_argument("--changed-percent", type=float, default=0.0)
    args = parser.parse_args()
    total = args.files * args.jobs_per_file
    changed = spread(total, args.changed_percent) if args.changed_percent else []
    count = generate(args.folder, args.files, args.jobs_per_file, changed)
    print(f"wrote {count} jobs in {args.files} files to {args.folder}")


if __name__ == "__main__":
    main()
