"""What every request meets before any route: a known Host, a bounded body, safe headers.

The HTTP port is reachable by the network, which is not trusted. So:

- A request must name this server in `Host`: loopback names, an IP address, or a name in
  `RUNNER_HTTP_HOSTS`. A page on another site that re-points its own DNS name at this
  server (DNS rebinding) still sends its own name, and is refused before it can read or act.
- A body is read only up to MAX_BODY bytes, before any route or token check sees it: a
  `Content-Length` over the bound is answered at once, and a longer stream is cut off.
- Every response forbids framing (clickjacking) and content sniffing.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

HOSTS_ENV = "RUNNER_HTTP_HOSTS"
LOOPBACK_NAMES = frozenset({"localhost"})
MAX_BODY = 1024 * 1024
"""A job posted to the API is a few hundred bytes; a megabyte leaves room and bounds memory."""

SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def allowed_hosts(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    extra = {h.strip().lower() for h in environ.get(HOSTS_ENV, "").split(",") if h.strip()}
    return LOOPBACK_NAMES | extra


def host_name(header: str) -> str:
    """The name in a Host header, without its port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def host_allowed(header: str | None, environ: Mapping[str, str] = os.environ) -> bool:
    if not header:
        return False
    name = host_name(header).rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True  # an address cannot be re-pointed by someone else's DNS
    except ValueError:
        pass
    return name in allowed_hosts(environ)


class Guard:
    """ASGI middleware around the whole app."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host):
            shown = host if host.isprintable() else repr(host)
            await _refuse(
                send,
                400,
                f"Host {shown!r} is not allowed: use an address or localhost, "
                f"or add the name to {HOSTS_ENV} on the server",
            )
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > MAX_BODY):
            await _refuse(send, 413, f"request body over {MAX_BODY} bytes")
            return
        body = await _read_body(receive)
        if body is None:
            await _refuse(send, 413, f"request body over {MAX_BODY} bytes")
            return
        await self.app(scope, _replay(body, receive), _with_headers(send))


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None once it passes MAX_BODY (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client left; the app sees an empty body
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return sending


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
