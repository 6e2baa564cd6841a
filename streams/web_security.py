"""Optional protection of every web page the worker serves (/metrics, /healthz, /wallboard, ...).

* web_tls_cert + web_tls_key: serve HTTPS (a Faust web_ssl_context).
* web_basic_auth = "user:password": HTTP basic auth, as an aiohttp middleware on the whole web app, so it
  covers every route, including pages added later by any module.
Prometheus scrapes such a target with `scheme: https`, `basic_auth` and `tls_config` (see docs/reliability.md).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ssl

from aiohttp import web

from streams.config import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.web_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.web_tls_cert, settings.web_tls_key)
    return context


def basic_auth_middleware(credentials: str):
    """A middleware answering 401 unless the request carries exactly these "user:password" credentials."""
    expected = credentials.encode()

    @web.middleware
    async def require_basic_auth(request: web.Request, handler):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            supplied = base64.b64decode(token.strip(), validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            supplied = b""
        if not hmac.compare_digest(supplied, expected):  # constant time: no timing hints
            return web.Response(status=401, text="authentication required\n",
                                headers={"WWW-Authenticate": 'Basic realm="contactpulse", charset="UTF-8"'})
        return await handler(request)

    return require_basic_auth


def protect(faust_app, settings: Settings) -> None:
    """Put basic auth in front of every route of the worker's web server (no-op when not configured)."""
    if settings.web_basic_auth:
        faust_app.web.web_app.middlewares.append(basic_auth_middleware(settings.web_basic_auth))
