"""Wall time of `runner apply` on 10,000 jobs against a local PostgreSQL, whole process.

    python bench/bench_apply.py [--files 100] [--jobs-per-file 100] [--repeat 3] [--no-plain]

Each round creates its own databases and drops them afterwards; the table shows the median
per step (wall time, which the targets are about, and CPU time, which a busy host inflates
less). Side by side, the plain approach: a script that reads the same files with PyYAML and
calls APScheduler's `scheduler.add_job(..., replace_existing=True)` per job on a
`SQLAlchemyJobStore` (first run, then an unchanged re-run; first round only, as it is slow).
Timed runs cache bytecode (PYTHONDONTWRITEBYTECODE is dropped), as an installed program does.

The server: $RUNNER_BENCH_PG, else $RUNNER_TEST_PG, else postgresql://postgres@127.0.0.1:5432/postgres
(an admin URL that may create databases).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_validate import load_note, runner_command, table, timed
from common100k import postgres_database as database
from gen_jobs import generate, spread

TARGETS = {
    "first apply": 5.0,
    "re-apply, unchanged": 2.0,
    "--dry-run, unchanged": 2.0,
    "--dry-run, 1 % changed": 2.0,
    "apply, 1 % changed": 2.5,
}

PLAIN = r'''
"""The plain approach: PyYAML, then APScheduler add_job(replace_existing=True) per job."""
import glob
import os
import re
import sys

import yaml
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0"}
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def seconds(value):
    if isinstance(value, int):
        return value
    return sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)([dhms])", value))


def trigger_of(spec, zone):
    zone = spec.get("timezone", zone)
    jitter = seconds(spec["jitter"]) if "jitter" in spec else None
    if "cron" in spec:
        cron = spec["cron"]
        if isinstance(cron, dict):
            return CronTrigger(timezone=zone, jitter=jitter, **cron)
        fields = MACROS.get(cron, cron).split()
        if len(fields) == 6:
            second, *fields = fields
            return CronTrigger(
                second=second, minute=fields[0], hour=fields[1], day=fields[2],
                month=fields[3], day_of_week=fields[4], timezone=zone, jitter=jitter,
            )
        return CronTrigger.from_crontab(" ".join(fields), timezone=zone)
    if "interval" in spec:
        return IntervalTrigger(
            seconds=seconds(spec["interval"]), start_date=spec.get("start"), timezone=zone,
            jitter=jitter,
        )
    return DateTrigger(run_date=spec["at"], timezone=zone)


folder, url = sys.argv[1], sys.argv[2]
scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url)}, timezone="UTC")
scheduler.start(paused=True)
count = 0
for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
    with open(path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=Loader)
    defaults = document.get("defaults") or {}
    for entry in document["jobs"]:
        job = {**defaults, **entry}
        zone = job.get("timezone", "UTC")
        options = {}
        if job.get("paused"):
            options["next_run_time"] = None
        scheduler.add_job(
            job["target"],
            trigger_of(job["trigger"], zone),
            id=job["id"],
            args=job.get("args", []),
            kwargs=job.get("kwargs", {}),
            misfire_grace_time=seconds(job.get("misfire_grace_time", 600)),
            coalesce=job.get("coalesce", True),
            max_instances=job.get("max_instances", 1),
            replace_existing=True,
            **options,
        )
        count += 1
scheduler.shutdown(wait=False)
print(f"{count} jobs added")
'''


def one_round(
    folder: Path, files: int, per_file: int, plain: Path | None
) -> dict[str, tuple[float, float]]:
    """One pass over every step, on fresh databases; the 1 % change edits the files in place."""
    total = files * per_file
    runner = runner_command()
    results: dict[str, tuple[float, float]] = {}
    generate(folder, files, per_file)
    with database("runner") as url:

        def apply(*extra: str, expect: int = 0) -> tuple[float, float]:
            return timed([*runner, "apply", str(folder), "--db", url, *extra], expect)

        results["first apply"] = apply()
        results["re-apply, unchanged"] = apply()
        results["--dry-run, unchanged"] = apply("--dry-run")
        generate(folder, files, per_file, spread(total, 1.0))
        results["--dry-run, 1 % changed"] = apply("--dry-run", expect=2)
        results["apply, 1 % changed"] = apply()
    if plain is not None:
        generate(folder, files, per_file)
        with database("plain") as url:
            command = [sys.executable, str(plain), str(folder), url]
            results["plain: first run"] = timed(command, 0)
            results["plain: unchanged re-run"] = timed(command, 0)
    return results


def warm_up(folder: Path, plain: Path | None) -> None:
    """Compile and cache every module once, as an installed program has them (not timed)."""
    generate(folder, 1, 10)
    with database("warmup") as url:
        timed([*runner_command(), "apply", str(folder), "--db", url, "--dry-run"], 2)
        if plain is not None:
            timed([sys.executable, str(plain), str(folder), url], 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--jobs-per-file", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-plain", action="store_true", help="Skip the plain APScheduler run.")
    args = parser.parse_args()
    total = args.files * args.jobs_per_file
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        folder = Path(tmp) / "jobs.d"
        plain = None
        if not args.no_plain:
            plain = Path(tmp) / "plain_apply.py"
            plain.write_text(PLAIN, encoding="utf-8")
        warm_up(Path(tmp) / "warm-up", plain)
        # The plain approach takes a minute a round: it runs in the first round only.
        rounds = [
            one_round(folder, args.files, args.jobs_per_file, plain if i == 0 else None)
            for i in range(args.repeat)
        ]
    print(f"`runner apply DIR --db postgresql://...`: {total} jobs in {args.files} files")
    print(
        f"median of {args.repeat} rounds, each on fresh databases, whole process, after one "
        f"warm-up; {load_note()}\n"
    )
    table([(step, [r[step] for r in rounds if step in r]) for step in rounds[0]], TARGETS)
    if plain is not None:
        print("\nThe plain rows are one run each: PyYAML + add_job(replace_existing=True) per job.")


if __name__ == "__main__":
    main()
