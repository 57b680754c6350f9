"""The command line: the only place that turns exceptions into messages and exit codes."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from runner.errors import RunnerError

F = TypeVar("F", bound=Callable[..., Any])
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
RUN_STATUSES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "interrupted",
    "missed",
    "skipped",
)
"""The statuses a run can have (see the contract)."""


class _Group(click.Group):
    """Prints one line for any failure; a traceback only with RUNNER_DEBUG=1.

    A usage error exits 1 like every other failure: exit 2 means "changes pending" to CI
    scripts (`apply --dry-run || [ $? -eq 2 ]`), so a typo in a flag must not read as it.
    """

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, standalone_mode: bool = True, **extra: Any
    ) -> Any:
        if not standalone_mode:
            return super().main(args, standalone_mode=False, **extra)
        global _COMMAND_LINE
        _COMMAND_LINE = args is None
        try:
            return self._main(args, **extra)
        except SystemExit as exc:
            if _COMMAND_LINE and _ONE_SHOT_DONE:
                _exit_now(exc.code)  # returns only when it cannot
            raise

    def _main(self, args: Sequence[str] | None, **extra: Any) -> NoReturn:
        try:
            code = super().main(args, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx is not None else "")
            sys.exit(0)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "runner"
            message = " ".join(exc.format_message().split())
            _fail(f"{where}: {message} (see {where} --help)")
        except click.ClickException as exc:
            _fail(" ".join(exc.format_message().split()))
        except click.Abort:
            _fail("aborted")
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except RunnerError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted")
        except BrokenPipeError:
            # The reader went away (`runner validate | head`): nothing to tell it. Point stdout
            # at /dev/null so the interpreter's last flush cannot fail again, and exit 1, the
            # contract's code for "did not complete", without a line nobody asked for.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:
            if os.environ.get("RUNNER_DEBUG"):
                raise
            _fail(
                f"internal error: {type(exc).__name__}: {exc} (set RUNNER_DEBUG=1 for a traceback)"
            )


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def output_option(func: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format.",
    )(func)


ECHO_BATCH = 2000
"""Characters per `click.echo` in `echo_lines`: at most 8,000 bytes in UTF-8, so that each
piece fits the stream's 8 KiB buffer and goes out in its flush, which raises BrokenPipeError
when the reader has gone (`runner validate | head`). A larger write goes to the pipe
directly, and an error after a partial write of it is lost."""


def echo_lines(lines: Iterable[str]) -> None:
    """`click.echo` of each line, a few dozen lines at a time: the same bytes (echo strips
    ANSI codes when not writing to a terminal, and no code spans a line), but one terminal
    check, write and flush per piece instead of per line (100,000 lines for as many jobs)."""
    piece: list[str] = []
    size = 0
    for line in lines:
        if piece and size + len(line) >= ECHO_BATCH:
            click.echo("\n".join(piece))
            piece, size = [], 0
        piece.append(line)
        size += len(line) + 1
    if piece:
        click.echo("\n".join(piece))


def emit_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runner")
def main() -> None:
    """Declarative, YAML-driven job runner."""


_COMMAND_LINE = False
"""Whether this process is the `runner` command line (not the CLI invoked in-process)."""
_ONE_SHOT_DONE = False
"""Set once validate or apply has run: their process may end without tearing down."""


def _exit_now(code: object) -> None:
    """End the `runner` process of a validate or apply at once, with `code`, its output
    flushed: freeing a hundred thousand jobs' objects one by one only to exit took about a
    tenth of a 100,000-job validate. Only for the real command line (`args is None`), where
    nothing else lives in the process; returns (so the caller exits as usual) when `code`
    is not a plain exit status, when a flush fails, or under coverage, which writes its data
    at exit."""
    if code is None:
        code = 0
    if type(code) is not int or "coverage" in sys.modules:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    if "logging" in sys.modules:
        import logging

        logging.shutdown()
    os._exit(code)


def _one_shot() -> None:
    """validate and apply build many small objects once and exit: the cyclic garbage
    collector would only rescan them (about 25 % of a 10,000-job apply), so pause it for
    the command (and restore it, for callers that invoke the CLI in-process)."""
    global _ONE_SHOT_DONE
    _ONE_SHOT_DONE = True
    if gc.isenabled():
        gc.disable()
        # On the command line the process ends with the command; turning the collector back
        # on there would only make it walk every object once more on the way out.
        if not _COMMAND_LINE:
            click.get_current_context().call_on_close(gc.enable)
    if _COMMAND_LINE:  # nothing else runs in this process: job files may be read in a child
        from runner import jobfiles

        jobfiles.read_ahead = True


def _paths(paths: tuple[str, ...]) -> list[str]:
    from runner.jobfiles import default_paths

    return list(paths) or default_paths()


def _parse_from(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time", param_hint="--from"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--next",
    "next_count",
    type=click.IntRange(0, 1000),
    default=0,
    help="List each job's next N fire times.",
)
@click.option("--from", "from_", metavar="ISO8601", help="Start of --next (default: now).")
@click.option("--no-import", is_flag=True, help="Do not import targets (CI without the app code).")
@output_option
def validate(
    paths: tuple[str, ...], next_count: int, from_: str | None, no_import: bool, output: str
) -> None:
    """Check job files without touching a database."""
    from runner import validate as validating
    from runner.durations import format_duration

    _one_shot()
    report = validating.run(_paths(paths), not no_import, next_count, _parse_from(from_))
    if output == "json":
        emit_json(report.as_json())
    else:
        for problem in [*report.problems, *report.warnings]:
            click.echo(str(problem), err=True)
        if not report.valid:
            files = len({p.file for p in report.problems})
            click.echo(
                f"error: {len(report.problems)} problem(s) in {files} file(s); "
                "nothing is valid until all are fixed",
                err=True,
            )
        else:
            lines = []
            for sourced in report.loaded.jobs:
                trig = sourced.job.trigger
                what = (
                    f"cron {trig.cron!r}"
                    if trig.cron
                    else (
                        f"every {format_duration(trig.interval)}"
                        if trig.interval
                        else f"at {trig.at}"
                    )
                )
                lines.append(
                    f"{sourced.job.id}  {sourced.file}:{sourced.line}  {what} {sourced.job.zone}"
                )
                for moment in report.next_times.get(sourced.job.id, []):
                    lines.append(f"    {moment.isoformat()}")
            files = len(report.loaded.files)
            lines.append(f"{len(report.loaded.jobs)} job(s) in {files} file(s) are valid.")
            echo_lines(lines)
    sys.exit(0 if report.valid else 1)


@main.command()
@output_option
def schema(output: str) -> None:
    """Print the JSON Schema of a job file, for editors (a JSON document in either format)."""
    from runner.schema import job_file_schema

    emit_json(job_file_schema())


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_url",
        envvar="RUNNER_DATABASE_URL",
        default="sqlite:///runner.db",
        show_default=True,
        help="Database URL (env RUNNER_DATABASE_URL).",
    )(func)


def _report_problems(exc: Any, outcome: str = "nothing was applied") -> NoReturn:
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    click.echo(f"error: {len(exc.problems)} problem(s) in job files; {outcome}", err=True)
    sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@db_option
@click.option(
    "--dry-run", is_flag=True, help="Show the plan; write nothing. Exit 2 when changes are pending."
)
@click.option("--no-prune", is_flag=True, help="Keep stored jobs that are no longer in the files.")
@output_option
def apply(paths: tuple[str, ...], db_url: str, dry_run: bool, no_prune: bool, output: str) -> None:
    """Sync the job files into the job store, in one transaction."""
    from runner import reconcile
    from runner.errors import InvalidJobFiles
    from runner.store.engine import connect

    _one_shot()
    from runner import report

    engine = connect(db_url)
    try:
        kept: list[str] | None = None
        if no_prune and output == "json":  # what a pruning apply would delete; only read
            kept = reconcile.apply_files(engine, _paths(paths), dry_run=True, prune=True)[0].delete
        plan, applied = reconcile.apply_files(
            engine, _paths(paths), dry_run=dry_run, prune=not no_prune
        )
    except InvalidJobFiles as exc:
        _report_problems(exc)
    finally:
        engine.dispose()
    if output == "json":
        emit_json(report.plan_json(plan, applied, kept))
    else:
        echo_lines(plan.text_lines())
    sys.exit(2 if dry_run and plan.changed else 0)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@db_option
@click.option("--no-watch", is_flag=True, help="Do not follow changes to the job files.")
@click.option(
    "--http", "http", metavar="HOST:PORT", help="Serve health, metrics and the control API."
)
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish at shutdown.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "procrastinate"]),
    envvar="RUNNER_EXECUTOR",
    default="local",
    show_default=True,
    help="Run fires here, or hand them to `runner worker` processes (PostgreSQL; env "
    "RUNNER_EXECUTOR).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines as text or JSON objects (default: as --output).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
@output_option
def serve(
    paths: tuple[str, ...],
    db_url: str,
    no_watch: bool,
    http: str | None,
    grace: float,
    executor: str,
    log_format: str | None,
    log_level: str,
    output: str,
) -> None:
    """Apply the files, run the jobs, and follow changes until SIGTERM or SIGINT.

    Serve prints nothing but its log, so `--output json` means JSON log lines.
    """
    from runner import logs
    from runner.errors import InvalidJobFiles
    from runner.serve import Options
    from runner.serve import serve as run_server

    if http is not None:
        _check_http(http)
    logs.setup(log_format or output, log_level)
    options = Options(
        _paths(paths), db_url, watch=not no_watch, grace=grace, http=http, executor=executor
    )
    try:
        code = run_server(options)
    except InvalidJobFiles as exc:
        _report_problems(exc, "not serving")
    sys.exit(code)


def _check_http(address: str) -> None:
    """Before anything else: the extra is installed and the address reads as HOST:PORT."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise RunnerError(
            f"--http needs the http extra ({exc.name or 'FastAPI/uvicorn'} is not installed): "
            "pip install 'runner[http]', or '.[http]' from a checkout"
        ) from None
    from runner.http.server import parse_address

    parse_address(address)


def _engine(db_url: str) -> Any:
    """The database as it is: commands other than apply and serve never create one."""
    from click.core import ParameterSource

    from runner.queries import open_existing

    source = click.get_current_context().get_parameter_source("db_url")
    hint = (
        " (the default URL: pass --db or set RUNNER_DATABASE_URL)"
        if source is ParameterSource.DEFAULT
        else ""
    )
    return open_existing(db_url, hint)


@main.command()
@db_option
@output_option
def jobs(db_url: str, output: str) -> None:
    """The stored jobs the runner owns."""
    from runner import queries, report

    engine = _engine(db_url)
    try:
        rows = queries.jobs(engine)
    finally:
        engine.dispose()
    if output == "json":
        emit_json(rows)
        return
    for row in rows:
        click.echo(report.job_line(row))


@main.command()
@db_option
@click.option("--job", "job_id", help="Only this job's runs.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="Only runs with this status (repeat for several).",
)
@click.option(
    "--since",
    metavar="ISO8601|DURATION",
    help="Only fires scheduled at or after this time, or this long ago (1h, 2d).",
)
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@output_option
def runs(
    db_url: str,
    job_id: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    limit: int,
    output: str,
) -> None:
    """Run history, newest first."""
    from runner import queries, report

    start = _parse_since(since) if since is not None else None
    engine = _engine(db_url)
    try:
        with engine.connect() as conn:
            rows = queries.runs(conn, job_id, statuses, start, limit)
    finally:
        engine.dispose()
    if output == "json":
        from runner import history

        emit_json([history.run_as_json(r) for r in rows])
        return
    for line in report.runs([queries.run_json(r) for r in rows]):
        click.echo(line)


def _parse_since(value: str) -> datetime:
    from datetime import timedelta

    from runner.durations import parse_duration

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time nor a duration such as 1h or 2d",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.argument("job_id")
@db_option
@click.option("--runs", "runs_count", type=click.IntRange(0, 1000), default=10, show_default=True)
@output_option
def show(job_id: str, db_url: str, runs_count: int, output: str) -> None:
    """One job as stored: source, trigger, state, next fires, last runs, last failure."""
    from runner import queries, report

    engine = _engine(db_url)
    try:
        job = queries.show(engine, job_id, runs_count)
    finally:
        engine.dispose()
    if output == "json":
        emit_json(job)
        return
    for line in report.show(job):
        click.echo(line)


@main.command(name="run")
@click.argument("job_id")
@db_option
@output_option
def run_now(job_id: str, db_url: str, output: str) -> None:
    """Run one stored job once, now, in this process, recorded in the history."""
    from runner import logs, queries

    logs.setup("text", "INFO")
    engine = _engine(db_url)
    try:
        outcome = queries.run_once(engine, job_id)
    finally:
        engine.dispose()
    if output == "json":
        emit_json({"job_id": job_id, "status": outcome.status, "error": outcome.error})
    else:
        click.echo(f"{job_id}: {outcome.status}" + (f": {outcome.error}" if outcome.error else ""))
    sys.exit(0 if outcome.status == "succeeded" else 1)


def _set_paused(job_id: str, db_url: str, output: str, paused: bool) -> None:
    from runner.overrides import set_paused

    engine = _engine(db_url)
    try:
        changed = set_paused(engine, job_id, paused)
    finally:
        engine.dispose()
    if output == "json":
        emit_json({"id": job_id, "paused": paused, "changed": changed})
    elif changed:
        click.echo(f"{job_id} paused" if paused else f"{job_id} resumed: scheduled again from now")
    else:
        click.echo(
            f"{job_id} is already paused"
            if paused
            else f"{job_id} is not paused; nothing to resume"
        )


@main.command()
@click.argument("job_id")
@db_option
@output_option
def pause(job_id: str, db_url: str, output: str) -> None:
    """Stop scheduling a job until `runner resume` (kept across applies)."""
    _set_paused(job_id, db_url, output, True)


@main.command()
@click.argument("job_id")
@db_option
@output_option
def resume(job_id: str, db_url: str, output: str) -> None:
    """Lift an operator's pause; the job is scheduled again from now."""
    _set_paused(job_id, db_url, output, False)


@main.command()
@db_option
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Take fires of this queue only (repeat for several; default: all queues).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Attempts run at once.",
)
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds running attempts get to finish at SIGTERM/SIGINT.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker(
    db_url: str,
    queues: tuple[str, ...],
    concurrency: int,
    grace: float,
    log_format: str,
    log_level: str,
) -> None:
    """Run the fires `serve --executor procrastinate` hands over (PostgreSQL), until SIGTERM."""
    from runner import logs
    from runner.executors.worker import Worker

    logs.setup(log_format, log_level)
    sys.exit(Worker(db_url, queues, concurrency, grace).run())


@main.command()
@db_option
@click.option("--all", "show_all", is_flag=True, help="Include stopped and long-dead nodes.")
@output_option
def status(db_url: str, show_all: bool, output: str) -> None:
    """Which node leads and since when, every node's liveness and last heartbeat."""
    from runner import queries

    engine = _engine(db_url)
    try:
        report = queries.status(engine)
    finally:
        engine.dispose()
    if not show_all:
        report["nodes"] = queries.current_nodes(report)
    if output == "json":
        emit_json(report)
        return
    leader = report["leader"]
    if leader:
        term = f" (term {leader['term']})" if leader["term"] is not None else ""
        click.echo(f"leader: {leader['node']} since {leader['since']}{term}")
    else:
        click.echo("leader: none")
    if not report["nodes"]:
        click.echo("no runner serve is running")
    for node in report["nodes"]:
        age = _age(node["heartbeat_age_seconds"])
        if node["role"] == "stopped":
            note = f"stopped at {node['stopped_at']}"
        elif node["role"] == "dead":
            note = f"dead: no heartbeat for {age} (last {node['heartbeat_at']})"
        else:
            note = f"heartbeat {age} ago"
        click.echo(f"  {node['role']:8} {node['node']}  {note}")
        for problem in node["file_problems"]:
            click.echo(f"           broken: {problem}")


def _age(seconds: float) -> str:
    from runner.durations import roughly

    return roughly(seconds)
