"""`runner serve --http HOST:PORT`: the app, served by uvicorn in a daemon thread.

The socket is bound before the thread starts, so a taken port fails `serve` at once with a
clear message instead of leaving a server without its HTTP side. Once the runner is asked to
stop, `/readyz` answers 503 and HTTP keeps serving while runs drain (up to the grace period),
so probes and scrapes see the shutdown; then uvicorn exits.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from importlib import metadata
from typing import TYPE_CHECKING

import uvicorn
from fastapi import APIRouter, FastAPI

from runner.errors import RunnerError
from runner.http import api, page
from runner.http.guard import Guard

if TYPE_CHECKING:
    from runner.http.host import Host

log = logging.getLogger("runner.http")

STARTUP_TIMEOUT = 10.0


class HttpError(RunnerError):
    """The HTTP side cannot start (bad address, port taken)."""


def routes(server: Host) -> APIRouter:
    """Everything the HTTP side serves, as one router: health, metrics, the API and the page."""
    router = APIRouter()
    router.include_router(api.health_router(server))
    router.include_router(api.router(server))
    router.include_router(page.router(server))
    return router


def _version() -> str:
    try:
        return metadata.version("runner")
    except metadata.PackageNotFoundError:
        return "0"


def build_app(server: Host) -> FastAPI:
    app = FastAPI(
        title="runner",
        version=_version(),
        description="Health, metrics and control of a `runner serve` node.",
        # Swagger's page loads its code from a CDN; the schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(routes(server))
    app.add_middleware(Guard)
    return app


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT`, or `:PORT` (all interfaces)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise HttpError(f"--http {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise HttpError(f"--http {host}:{port}: cannot resolve {host!r}: {exc}") from None
    family, kind, proto, _, where = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise HttpError(f"--http {host}:{port}: cannot listen: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """A running uvicorn in a daemon thread; `stop()` ends it."""

    def __init__(self, server: Host, address: str) -> None:
        host, port = parse_address(address)
        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(
            build_app(server),
            log_config=None,  # keep the runner's logging setup
            access_log=False,  # probes and scrapes would drown the run log
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=5,
        )
        self.uvicorn = uvicorn.Server(config)
        self._runner = server
        self._thread = threading.Thread(target=self._serve, name="runner-http", daemon=True)
        self._watch = threading.Thread(
            target=self._stop_with_runner, name="runner-http-stop", daemon=True
        )
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise HttpError(f"HTTP server on {self.url} did not start: {self.error!r}")
            time.sleep(0.01)
        self._watch.start()
        log.info("HTTP on %s (health, metrics, API, status page)", self.url)

    def _serve(self) -> None:
        try:
            self.uvicorn.run(sockets=[self.sock])
        except BaseException as exc:  # SystemExit from uvicorn included: report, never raise
            self.error = exc
            log.error("HTTP server failed: %r", exc)
        finally:
            self.sock.close()

    def _stop_with_runner(self) -> None:
        """Serve on while runs drain after the runner is told to stop, then exit."""
        runner = self._runner
        runner.stopping.wait()
        deadline = time.monotonic() + runner.options.grace
        while runner.runtime.active() and time.monotonic() < deadline:
            if self.uvicorn.should_exit:
                return
            time.sleep(0.1)
        self.uvicorn.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        self.uvicorn.should_exit = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def start_in_thread(server: Host, address: str) -> HttpServer:
    """Serve the app for `server` on `address` ("HOST:PORT") in a daemon thread."""
    http = HttpServer(server, address)
    http.start()
    return http
