"""`runner serve`: apply the files, run the jobs, follow changes, stop gracefully."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import watchfiles
from sqlalchemy import Engine

from runner import history, jobfiles, reconcile
from runner.errors import StoreError
from runner.fileset import FileSet
from runner.leadership import RENEW_EVERY, Leadership, stale_nodes
from runner.runtime import Runtime
from runner.scheduler import RunnerScheduler
from runner.store import schema
from runner.store.engine import READ_ONLY, connect, describe_failure, is_postgres, masked

log = logging.getLogger("runner.serve")


@dataclass(frozen=True, slots=True)
class Options:
    paths: list[str]
    db_url: str
    watch: bool = True
    grace: float = 30.0
    http: str | None = None


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Server:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.node = node_name()
        self.engine: Engine = connect(options.db_url)
        self.stopping = threading.Event()
        self.files = FileSet(list(options.paths))
        self.writer = history.Writer(self.engine, self.node)
        self.runtime = Runtime(self.writer)
        self.leadership = Leadership(self.engine, self.node)
        self.scheduler = RunnerScheduler(
            self.engine, self.runtime, self.node, self.leadership.may_start
        )
        self.last_reconcile_error: str | None = None
        self.reconciles = 0
        self._reconcile_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- start-up ----------------------------------------------------------------------
    def wait_for_database(self) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                schema.ensure(self.engine)
                return
            except StoreError as exc:
                log.error("%s; retrying in %.1fs", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def reconcile(self, changed: set[str] | None = None) -> None:
        """Re-read what changed and apply it; a broken file keeps its last good jobs."""
        with self._reconcile_lock:
            self.files.refresh(changed)
            desired, problems = self.files.desired()
            self.reconciles += 1
            if problems:
                self.last_reconcile_error = str(problems[0])
                for problem in problems:
                    log.error("not applying: %s", problem)
                return
            try:
                plan, applied = reconcile.apply(self.engine, desired)
            except StoreError as exc:
                self.last_reconcile_error = str(exc)
                log.error("apply failed: %s", exc)
                return
            self.last_reconcile_error = None
            if applied:
                for line in plan.text_lines():
                    log.info("apply: %s", line)
                self.scheduler.refresh()

    def run(self) -> int:
        """Serve in the foreground until SIGTERM or SIGINT."""
        self._install_signals()
        if not self.start():
            return 0
        self.stopping.wait()
        return self._shutdown()

    def stop(self) -> int:
        """Stop a server started with `start` (embedding) gracefully."""
        self.stopping.set()
        return self._shutdown()

    def start(self) -> bool:
        """Start every part in background threads; False if asked to stop while waiting."""
        log.info(
            "runner serve starting: node %s, database %s", self.node, masked(self.options.db_url)
        )
        self.wait_for_database()
        if self.stopping.is_set():
            return False
        self.leadership.prepare()
        self.reconcile()
        self.writer.start()
        self.runtime.start()
        self.scheduler.start()
        self._spawn("runner-lease", self._lease_loop)
        self._spawn("runner-changes", self._change_loop)
        if self.options.watch:
            self._spawn("runner-watch", self._watch_loop)
        if self.options.http:
            self._start_http(self.options.http)
        log.info(
            "serving %d job(s) from %s",
            len(self.scheduler.store.get_all_jobs()),
            ", ".join(self.options.paths),
        )
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
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _start_http(self, address: str) -> None:
        from runner.http.server import start_in_thread

        start_in_thread(self, address)

    # --- background loops ----------------------------------------------------------------
    def _lease_loop(self) -> None:
        beat_due = 0.0
        while not self.stopping.is_set():
            was_leading = self.leadership.leading
            try:
                if time.monotonic() >= beat_due:
                    self.leadership.heartbeat()
                    beat_due = time.monotonic() + 1.0
                leading = self.leadership.renew()
            except Exception as exc:
                self.leadership.lose()
                log.warning(
                    "cannot confirm leadership (%s); not starting runs",
                    describe_failure(exc, self.options.db_url),
                )
                leading = False
            if leading and not was_leading:
                self._on_gain()
            self.stopping.wait(RENEW_EVERY)

    def _on_gain(self) -> None:
        with self.engine.begin() as conn:
            stale = stale_nodes(conn, self.node)
            if stale:
                closed = history.close_interrupted(
                    conn, stale, "the node running it stopped or died"
                )
                if closed:
                    log.warning(
                        "closed %d run(s) left running by stopped node(s) as interrupted", closed
                    )
        self.scheduler.refresh()

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
            "stopping: no new runs; waiting up to %.0fs for %d running",
            self.options.grace,
            self.runtime.active(),
        )
        self.leadership.lose()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # already stopped
            pass
        try:
            self.scheduler.store.flush()
        except Exception as exc:
            log.warning("could not save next run times: %s", str(exc).splitlines()[0])
        cancelled = self.runtime.stop(self.options.grace)
        if cancelled:
            log.warning("%d run(s) interrupted at shutdown", cancelled)
        self.writer.stop()
        self.leadership.resign()
        self.engine.dispose()
        log.info("stopped")
        return 0


def serve(options: Options) -> int:
    return Server(options).run()
