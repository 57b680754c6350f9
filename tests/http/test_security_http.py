"""A client that can only reach the HTTP port: a real `runner serve --http`, raw sockets.

The network is not trusted: a request must name this server in `Host` (DNS rebinding), a
body is bounded before anything reads it, and the page can neither be framed nor pull
code from elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int = 0
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        if self.reader is not None:
            self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def request(
        self,
        method: str,
        path: str,
        host: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 15,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; the status, headers and body of the answer."""
        head = [f"{method} {path} HTTP/1.1"]
        head.append(f"Host: {host if host is not None else f'127.0.0.1:{self.port}'}")
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        if body and "Content-Length" not in (headers or {}):
            head.append(f"Content-Length: {len(body)}")
        head.append("Connection: close")
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            return _response(sock)


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest


JOBS = """
    jobs:
      - id: nightly
        target: sampleapp.jobs:tick
        trigger: {cron: "0 3 * * *"}
    """


def _start(tmp_path: Path, **extra: str) -> Served:
    (tmp_path / "jobs.yaml").write_text(textwrap.dedent(JOBS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p),
        RUNNER_ALLOWED_TARGETS="sampleapp",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "runner", "serve", "jobs.yaml", "--no-watch"),
            *("--db", f"sqlite:///{tmp_path / 'runner.db'}", "--http", "127.0.0.1:0"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Served(proc)
    assert proc.stdout is not None
    for line in proc.stdout:  # ends when serve exits; the test timeout bounds the wait
        served.lines.append(line)
        found = re.search(r"HTTP on http://127\.0\.0\.1:(\d+)", line)
        if found:
            served.port = int(found.group(1))
            break
    if not served.port:
        served.stop()
        raise AssertionError("".join(served.lines))
    served.reader = threading.Thread(target=served.lines.extend, args=(proc.stdout,), daemon=True)
    served.reader.start()
    return served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = _start(tmp_path, RUNNER_HTTP_INSECURE="1")
    try:
        yield server
    finally:
        server.stop()


def _paused(served: Served) -> bool:
    status, _, body = served.request("GET", "/api/jobs/nightly")
    assert status == 200, body
    return bool(json.loads(body)["paused"])


# --- 10. DNS rebinding: only this server's names ---------------------------------------------


def test_a_foreign_host_can_neither_act_nor_read(served: Served) -> None:
    rebound = f"attacker.example:{served.port}"
    same_origin = {"Origin": f"http://{rebound}", "Sec-Fetch-Site": "same-origin"}
    status, _, body = served.request("POST", "/api/jobs/nightly/pause", rebound, same_origin)
    assert status == 400
    assert "RUNNER_HTTP_HOSTS" in json.loads(body)["detail"]
    form = {**same_origin, "Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = served.request("POST", "/ui/jobs/nightly/pause", rebound, form, b"token=")
    assert status == 400
    assert not _paused(served), "a rebound page paused a job"
    for path in ("/api/jobs", "/api/runs", "/", "/metrics"):
        status, _, body = served.request("GET", path, rebound)
        assert status == 400, path
        assert b"nightly" not in body


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
def test_loopback_and_addresses_are_served(served: Served, host: str) -> None:
    status, _, _ = served.request("GET", "/api/jobs", host.format(port=served.port))
    assert status == 200


def test_a_request_without_host_is_refused(served: Served) -> None:
    status, _, _ = served.request("GET", "/api/jobs", host="")
    assert status == 400


def test_configured_host_names_are_served(tmp_path: Path) -> None:
    server = _start(tmp_path, RUNNER_HTTP_HOSTS="runner.internal, ops.example.com")
    try:
        for host in ("runner.internal", f"OPS.example.com:{server.port}"):
            status, _, _ = server.request("GET", "/api/jobs", host)
            assert status == 200, host
        status, _, _ = server.request("GET", "/api/jobs", "runner.internal.attacker.example")
        assert status == 400
    finally:
        server.stop()


# --- 9. bodies are bounded before anything reads them ----------------------------------------


def test_a_huge_content_length_is_refused_at_once(served: Served) -> None:
    headers = {"Content-Length": str(4 * 1024 * MIB)}
    status, _, body = served.request("POST", "/ui/jobs/nightly/run", None, headers, timeout=10)
    assert status == 413
    assert b"request body over" in body


def test_a_streamed_body_over_the_bound_is_cut_off(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=15) as sock:
        sock.sendall(
            (
                "POST /api/jobs HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{served.port}\r\n"
                "Transfer-Encoding: chunked\r\n"
                "Content-Type: application/json\r\n\r\n"
            ).encode()
        )
        chunk = b"x" * 65536
        try:
            for _ in range(64):  # 4 MiB; the server stops reading after 1 MiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed while we were still sending
        status, _, _ = _response(sock)
    assert status == 413


def test_a_small_body_still_reaches_the_route(served: Served) -> None:
    status, _, body = served.request(
        "POST", "/api/jobs", None, {"Content-Type": "application/json"}, b"{}"
    )
    assert status not in (400, 413), body


# --- 11. no framing, no third-party code -----------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/jobs", "/healthz"])
def test_responses_forbid_framing_and_sniffing(served: Served, path: str) -> None:
    status, headers, _ = served.request("GET", path)
    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_no_docs_page_loads_code_from_a_cdn(served: Served) -> None:
    for path in ("/docs", "/redoc"):
        status, _, _ = served.request("GET", path)
        assert status == 404, path
    status, _, body = served.request("GET", "/openapi.json")
    assert status == 200
    assert "/api/jobs" in json.loads(body)["paths"]
    _, _, page = served.request("GET", "/")
    assert not re.search(rb"<script[^>]+src=[\"']?https?:", page)
