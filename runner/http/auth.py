"""Who may press the buttons: read-only requests are open, control actions need the token.

The token comes from `RUNNER_HTTP_TOKEN`, read at each request. Without it, control actions
are refused unless `RUNNER_HTTP_INSECURE=1` says auth is off on purpose (local use only); a
configured token is always required, whatever `RUNNER_HTTP_INSECURE` says.
API clients send `Authorization: Bearer <token>`; the status page's forms send the token in a
form field, never in a cookie, so another site cannot make a browser act on its behalf.
Browser requests whose `Origin` is not this server are refused in every mode, which keeps
a page elsewhere from driving a server that runs with auth off.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.security import HTTPBearer

TOKEN_ENV = "RUNNER_HTTP_TOKEN"
INSECURE_ENV = "RUNNER_HTTP_INSECURE"

NOT_CONFIGURED = (
    f"control actions are disabled: set {TOKEN_ENV} to a secret token and send it as "
    f"'Authorization: Bearer <token>', or set {INSECURE_ENV}=1 to turn auth off for local use"
)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description=f"The value of {TOKEN_ENV} on the server.",
)
"""Declares the scheme in the OpenAPI document; the check itself is `check` below."""


@dataclass(frozen=True, slots=True)
class Denied(Exception):
    status: int
    message: str


def configured_token(environ: Mapping[str, str] = os.environ) -> str | None:
    return environ.get(TOKEN_ENV) or None


def insecure(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(INSECURE_ENV, "") == "1"


def control_mode(environ: Mapping[str, str] = os.environ) -> str:
    """`token`, `insecure` (auth off) or `disabled`; a configured token always wins."""
    if configured_token(environ):
        return "token"
    return "insecure" if insecure(environ) else "disabled"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def same_origin(request: Request) -> bool:
    """False when a browser says the request comes from a page on another site.

    Browsers send `Sec-Fetch-Site` (trusted when present, and unaffected by proxies that
    rewrite `Host`); older ones only `Origin`. Clients that are not browsers send neither.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc
    hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
    return bool(netloc) and netloc in hosts


def check(request: Request, presented: str | None) -> None:
    """Raise `Denied` unless the request may perform a control action."""
    if not same_origin(request):
        raise Denied(403, "cross-origin control requests are refused")
    expected = configured_token()
    if expected is None:
        if insecure():
            return
        raise Denied(403, NOT_CONFIGURED)
    if presented is None:
        raise Denied(401, "missing token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Denied(401, "invalid token")
