"""`runner serve`: apply the files, run the jobs, follow changes, stop gracefully."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import watchfiles
from sqlalchemy import Engine

from runner import fileproblems, history, hotreload, jobfiles, metrics, reconcile, unchanged
from runner.errors import InvalidJobFiles, StoreError
from runner.execute import Fire, retries_of
from runner.executors.procrastinate import ProcrastinateExecutor, ensure_schema
from runner.fileset import FileSet
from runner.leadership import RENEW_EVERY, Leadership, stale_nodes
from runner.runtime import Runtime
from runner.scheduler import LOOKAHEAD, RunnerScheduler
from runner.store import migrate
from runner.store.engine import (
    READ_ONLY,
    connect,
    describe_failure,
    end_if_frozen,
    is_postgres,
    masked,
)

log = logging.getLogger("runner.serve")


@dataclass(frozen=True, slots=True)
class Options:
    paths: list[str]
    db_url: str
    watch: bool = True
    grace: float = 30.0
    http: str | None = None
    executor: str = "local"
    """`local` runs fires here; `procrastinate` hands them to `runner worker` processes."""


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Server:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.node = node_name()
        self.engine: Engine = connect(options.db_url)
        self.stopping = threading.Event()
        self.aborting = threading.Event()
        self.files = FileSet(list(options.paths), memo=lambda: unchanged.read_soon(self.engine))
        self.writer = history.Writer(self.engine, self.node)
        self.runtime: Runtime | ProcrastinateExecutor
        if options.executor == "procrastinate":
            if not is_postgres(self.engine):
                raise StoreError("--executor procrastinate needs PostgreSQL")
            self.runtime = ProcrastinateExecutor(self.node)
        else:
            self.runtime = Runtime(self.writer)
        self.leadership = Leadership(self.engine, self.node)
        self.scheduler = RunnerScheduler(
            self.engine,
            self.runtime,
            self.node,
            self.leadership.may_start,
            still_leading=self.leadership.still_leading,
            lease_left=self.leadership.valid_for,
            # Handed over when due, so a worker is woken at once rather than at its next poll.
            lookahead=0.0 if isinstance(self.runtime, ProcrastinateExecutor) else LOOKAHEAD,
        )
        self.last_reconcile_error: str | None = None
        self.reconcile_problems: list[str] = []
        """Every problem of the files as last read: broken files and what blocks applying."""
        self.broken_files: dict[str, list[str]] = {}
        self.reconciles = 0
        self._reconcile_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    # --- start-up ----------------------------------------------------------------------
    def wait_for_database(self) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                migrate.ensure(self.engine)
                return
            except StoreError as exc:
                log.error("%s; retrying in %.1fs", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def reconcile(self, changed: set[str] | None = None) -> None:
        """Re-read what changed and apply it under the rule of `runner.hotreload`."""
        with self._reconcile_lock:
            began = time.perf_counter()
            self.files.refresh(changed)
            decision = hotreload.decide(self.files)
            read = time.perf_counter()
            self.reconciles += 1
            self._show_problems(decision)
            if decision.blocking:
                metrics.reconciled(False)
                for problem in decision.blocking:
                    log.error("not applying anything: %s", problem)
                return
            try:
                plan, applied = reconcile.apply(
                    self.engine, decision.desired, prune=decision.prune, expand=self.files.expanded
                )
                self.files.compact()
                wrote = time.perf_counter()
            except StoreError as exc:
                metrics.reconciled(False)
                self.last_reconcile_error = str(exc)
                log.error("apply failed: %s", exc)
                return
            metrics.reconciled(not decision.broken)
            if decision.broken:
                log.warning(
                    "%d broken job file(s) (%s): their last valid jobs stay as they were, "
                    "other files' changes are applied, and no job is deleted until they are fixed",
                    len(decision.broken),
                    ", ".join(decision.broken),
                )
            if applied:
                for line in plan.text_lines():
                    log.info("apply: %s", line)
                touched = [*plan.create, *(u.id for u in plan.update), *plan.delete]
                self.scheduler.refresh(ids=touched)
                log.info(
                    "applied in %.0f ms (read files %.0f ms, apply %.0f ms, reload %.0f ms)",
                    (time.perf_counter() - began) * 1000,
                    (read - began) * 1000,
                    (wrote - read) * 1000,
                    (time.perf_counter() - wrote) * 1000,
                )

    def _show_problems(self, decision: hotreload.Decision) -> None:
        """Every problem present, for /readyz, metrics, the page and `runner status`."""
        problems = [str(p) for p in decision.problems]
        self.broken_files = {f: [str(p) for p in ps] for f, ps in decision.broken.items()}
        self.last_reconcile_error = problems[0] if problems else None
        metrics.set_broken_files(len(decision.broken))
        if problems == self.reconcile_problems:
            return
        known = set(self.reconcile_problems)
        for problem in problems:  # each once, when it appears: FILE:LINE:COL: ...
            if problem not in known:
                log.error("%s", problem)
        self.reconcile_problems = problems
        try:
            fileproblems.publish(self.engine, self.node, problems)
        except Exception as exc:
            log.warning("could not record the broken files: %s", str(exc).splitlines()[0])

    def run(self) -> int:
        """Serve in the foreground until SIGTERM or SIGINT."""
        self._install_signals()
        if not self.start():
            return 0
        # Everything loaded so far lives as long as the process: keep the cyclic garbage
        # collector from walking it again and again (its pauses would delay fires). Only
        # here, in a process of our own: an application embedding the runner keeps its GC.
        gc.collect()
        gc.freeze()
        # Wake up now and then: a signal delivered to another thread runs its handler only
        # when the main thread runs Python code, which an untimed wait never does.
        while not self.stopping.wait(0.5):
            pass
        return self.stop()

    def stop(self) -> int:
        """Stop gracefully (no new runs; running ones get the grace period). Idempotent."""
        self.stopping.set()
        with self._stop_lock:
            if self._stopped:
                return 0
            self._stopped = True
            return self._shutdown()

    def start(self) -> bool:
        """Start every part in background threads; False if asked to stop while waiting.

        What the operator typed is checked before the database is touched: invalid job files
        and an unusable `--http` fail at once, and leave no node row behind to block a
        corrected restart.
        """
        log.info(
            "runner serve starting: node %s, database %s", self.node, masked(self.options.db_url)
        )
        self.check_files()
        http = self._bind_http(self.options.http) if self.options.http else None
        try:
            started = self._start_parts()
        except BaseException:
            if http is not None:
                http.sock.close()
            raise
        if not started:
            if http is not None:
                http.sock.close()
            return False
        if http is not None:
            try:
                http.start()
            except BaseException:
                http.sock.close()
                self.stop()  # resigns, so a corrected restart is not refused
                raise
        log.info(
            "serving %d job(s) from %s",
            self.scheduler.store.count(),
            ", ".join(self.options.paths),
        )
        return True

    def check_files(self) -> None:
        """At start-up an invalid file is an error, as for `apply`: nothing to keep yet."""
        present = self.files.refresh()
        _, blocking = self.files.desired()
        problems = list(dict.fromkeys([*present, *blocking]))
        if problems:
            raise InvalidJobFiles(problems)

    def _start_parts(self) -> bool:
        self.wait_for_database()
        if self.stopping.is_set():
            return False
        self.leadership.prepare()
        try:
            if isinstance(self.runtime, ProcrastinateExecutor):
                ensure_schema(self.engine)
            self.reconcile()
            self.writer.start()
            self.runtime.start()
            self.scheduler.start()
            self._spawn("runner-lease", self._lease_loop)
            self._spawn("runner-beat", self._beat_loop)
            self._spawn("runner-changes", self._change_loop)
            if self.options.watch:
                self._spawn("runner-watch", self._watch_loop)
        except BaseException:
            self.stopping.set()
            self.leadership.resign()
            raise
        return True

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while not self.stopping.is_set():
                try:
                    target()
                    return
                except Exception as exc:
                    log.warning(
                        "%s failed, restarting in 1s: %s",
                        name,
                        str(exc).splitlines()[0] if str(exc) else repr(exc),
                    )
                    self.stopping.wait(1.0)

        return run

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stopping.is_set():
                log.warning("received %s again: interrupting running jobs now", name)
                self.aborting.set()
                return
            log.info("received %s: stopping", name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _bind_http(self, address: str) -> Any:
        """Bind the port now (a taken port fails start-up at once); serve it once running."""
        from runner.http.server import HttpServer

        return HttpServer(self, address)

    # --- background loops ----------------------------------------------------------------
    def _lease_loop(self) -> None:
        """Only the lease: nothing else on this thread may delay a renewal past the margin."""
        while not self.stopping.is_set():
            was_leading = self.leadership.leading
            try:
                leading = self.leadership.renew()
            except Exception as exc:
                self.leadership.lose()
                log.warning(
                    "cannot confirm leadership (%s); not starting runs",
                    describe_failure(exc, self.options.db_url),
                )
                leading = False
            if leading and not was_leading:
                try:
                    self._on_gain()
                except Exception as exc:
                    # Not leading until the store is taken up: the next round, still holding
                    # the lease, counts as a gain again and retries it.
                    self.leadership.lose()
                    leading = False
                    log.warning(
                        "could not take up leadership (%s); retrying",
                        describe_failure(exc, self.options.db_url),
                    )
            metrics.set_leader(leading)
            self.stopping.wait(RENEW_EVERY)

    def _beat_loop(self) -> None:
        """The node's heartbeat every second and, on the leader, the dead-node sweep."""
        while not self.stopping.is_set():
            try:
                self.leadership.heartbeat()
            except Exception as exc:
                log.warning("could not heartbeat: %s", describe_failure(exc, self.options.db_url))
            if self.leadership.leading:
                try:
                    self._close_runs_of_dead_nodes()
                except Exception as exc:
                    log.warning("could not check for dead nodes: %s", str(exc).splitlines()[0])
            self.stopping.wait(1.0)

    def _on_gain(self) -> None:
        self._close_runs_of_dead_nodes()
        # Take up the next run times the previous leader advanced.
        self.scheduler.refresh(full=True)

    def _close_runs_of_dead_nodes(self) -> None:
        """Runs left `running` by a node that stopped heartbeating are closed as interrupted;
        the job's retry policy then decides whether the fire runs again, here."""
        with self.engine.begin() as conn:
            end_if_frozen(conn)
            stale = stale_nodes(conn, self.node)
            closed = (
                history.close_interrupted(conn, stale, "the node running it stopped or died")
                if stale
                else []
            )
        if not closed:
            return
        log.warning("closed %d run(s) left running by dead node(s) as interrupted", len(closed))
        for job_id, scheduled_at, attempt in closed:
            job = self.scheduler.store.lookup_job(job_id)
            if job is None:
                continue
            spec = job.args[1]
            if attempt < retries_of(spec).max_attempts:
                log.info("retrying %s (fire %s) as attempt %d", job_id, scheduled_at, attempt + 1)
                self.runtime.try_submit(
                    Fire(job_id, spec, scheduled_at), job.max_instances, first_attempt=attempt + 1
                )

    def _change_loop(self) -> None:
        """Notice applies made elsewhere: LISTEN on PostgreSQL, a cheap poll everywhere."""
        generation = self._generation()
        listener = self._listen() if is_postgres(self.engine) else None
        try:
            while not self.stopping.is_set():
                if listener is not None:
                    ready, _, _ = select.select([listener], [], [], 1.0)
                    if ready:
                        listener.poll()
                        listener.notifies.clear()
                else:
                    self.stopping.wait(0.2)
                current = self._generation()
                if current != generation:
                    generation = current
                    self.scheduler.refresh()
        finally:
            if listener is not None:
                listener.close()

    def _generation(self) -> int:
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            return reconcile.read_generation(conn)

    def _listen(self) -> Any:
        raw = self.engine.raw_connection()
        dbapi: Any = raw.driver_connection
        raw.detach()
        dbapi.set_isolation_level(0)
        with dbapi.cursor() as cursor:
            cursor.execute(f"LISTEN {reconcile.CHANGE_CHANNEL}")
        return dbapi

    def _watch_loop(self) -> None:
        roots = [p for p in self.options.paths if os.path.exists(p)] or ["."]
        watch_roots = sorted(
            {p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in roots}
        )
        for changes in watchfiles.watch(
            *watch_roots,
            watch_filter=self._is_job_file,
            stop_event=self.stopping,
            debounce=50,
            step=20,
            rust_timeout=1000,
            yield_on_timeout=True,
            recursive=False,
        ):
            if self.files.removal_pending:
                self.reconcile(set())
            if not changes:
                continue
            changed = {path for _, path in changes}
            self.reconcile(changed)

    def _is_job_file(self, _change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        return name.endswith(jobfiles.SUFFIXES) and not jobfiles.is_ignored(name)

    # --- shutdown ---------------------------------------------------------------------
    def _shutdown(self) -> int:
        log.info(
            "stopping: no new runs; waiting up to %gs for %d running",
            self.options.grace,
            self.runtime.active(),
        )
        was_leading = self.leadership.leading
        self.leadership.lose()
        with contextlib.suppress(Exception):  # already stopped
            self.scheduler.shutdown(wait=False)
        # Fires claimed ahead of their time that now will not start: decided again next time.
        unstarted = self.runtime.cancel_pending()
        if unstarted:
            log.info(
                "%d fire(s) claimed ahead of their time will be decided at the next start",
                len(unstarted),
            )
            self.scheduler.rewind(unstarted)
            for fire in unstarted:
                self.writer.release(fire)
        if was_leading:  # a standby's view of next run times is older than the store's
            try:
                self.scheduler.flush()
            except Exception as exc:
                log.warning("could not save next run times: %s", str(exc).splitlines()[0])
        cancelled = self.runtime.stop(self.options.grace, self.aborting)
        if cancelled:
            log.warning("%d run(s) interrupted at shutdown", cancelled)
        if not self.writer.drain(10.0):
            log.error("could not write all run history before exiting: the database is away")
        self.writer.stop(0.0)
        if self.reconcile_problems:
            with contextlib.suppress(Exception):  # the node row says it stopped anyway
                fileproblems.publish(self.engine, self.node, [])
        self.leadership.resign()
        self.engine.dispose()
        log.info("stopped")
        return 0


def serve(options: Options) -> int:
    server = Server(options)
    code = server.run()
    stuck = server.runtime.busy_threads()
    if stuck:
        # Python cannot stop a thread, and would wait for it at exit: leave without it.
        log.warning(
            "%d sync job thread(s) still running after the grace period; exiting without them",
            stuck,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
