"""``dialer web``: the operator's console, a Starlette app served by uvicorn.

    create_app()            the ASGI app (settings from the environment)
    serve(host, port)       what ``dialer web --host H --port P`` runs

The app is the pages (``dialer.web.pages``) behind ``Gate``, a plain ASGI middleware in
front of everything: it authenticates (session cookie or HTTP Basic; ``dialer.web.auth``),
bounds request bodies (``DIALER_WEB_MAX_UPLOAD_MB``; 413 past it), checks a CSRF token
sent as a header, and adds the security headers (a strict Content-Security-Policy: only
the console's own script and style). Form fields' CSRF tokens are checked by
``forms.form_action``, which every state-changing route must use; ``create_app`` refuses
to build an app with one that does not.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from http import cookies
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dialer import settings as settings_module
from dialer.web import auth, pages
from dialer.web.activity import Activity
from dialer.web.jobs import Jobs

log = logging.getLogger(__name__)

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC = ("/login", "/healthz", "/favicon.ico", "/static/")
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
DRAIN_FACTOR = 4  # an over-long body is read (and dropped) up to this many times the limit


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the upload is larger than {limit // (1024 * 1024)} MB")


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            jar: cookies.SimpleCookie = cookies.SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except cookies.CookieError:
                continue
            if name in jar:
                return jar[name].value
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Gate:
    """Authentication, body limits, the CSRF header and security headers, for every
    request the console answers."""

    def __init__(self, app: ASGIApp, authenticator: auth.Authenticator, max_body: int) -> None:
        self.app = app
        self.auth = authenticator
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        client = (scope.get("client") or ("?", 0))[0]
        state = scope.setdefault("state", {})
        send = self._with_headers(send, static=path.startswith("/static/"), t0=time.perf_counter())

        identity = self.auth.session(_cookie(scope, auth.SESSION_COOKIE))
        if identity is None:
            basic = self.auth.basic(_header(scope, b"authorization"))
            if basic is False:
                if self.auth.refused(client):
                    await _plain(send, 429, "too many failed logins; try again later")
                    return
                self.auth.failed(client)
                await _plain(send, 401, "wrong user or password", basic_challenge=True)
                return
            identity = basic if isinstance(basic, auth.Identity) else None
        state["identity"] = identity

        if identity is None and not path.startswith(PUBLIC):
            await self._ask_for_credentials(scope, send)
            return
        if identity is not None and scope["method"] in UNSAFE:
            token = _header(scope, auth.CSRF_HEADER.encode())
            # A header token is checked here; a form's is checked by forms.form_action.
            state["csrf_header"] = token is not None and auth.csrf_ok(identity, token)
            if token is not None and not state["csrf_header"]:
                await _plain(send, 403, "the CSRF token is missing or wrong")
                return

        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._drain(receive, int(length))
            await _plain(send, 413, BodyTooLarge(self.max_body).detail)
            return
        await self.app(scope, self._bounded(receive, send), send)

    def _bounded(self, receive: Receive, send: Send) -> Receive:
        seen = 0
        limit = self.max_body

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if message.get("more_body"):
                        await self._drain(receive, seen)
                    raise BodyTooLarge(limit)
            return message

        return bounded

    async def _drain(self, receive: Receive, already: int) -> None:
        """Read what the client still sends, up to a bound, so that it sees the answer
        rather than a connection reset in the middle of its upload."""
        read = already
        while read <= self.max_body * DRAIN_FACTOR:
            message = await receive()
            if message["type"] != "http.request":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def _ask_for_credentials(self, scope: Scope, send: Send) -> None:
        accept = _header(scope, b"accept") or ""
        live = _header(scope, b"x-live") is not None
        if scope["method"] == "GET" and "text/html" in accept and not live:
            target = scope["path"] + (
                "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
            )
            location = "/login" + ("" if target == "/" else "?next=" + quote(target, safe=""))
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", location.encode("latin-1"))],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        # No challenge for the pages' own refreshes: a browser would pop up its dialog.
        await _plain(send, 401, "log in first", basic_challenge=not live)

    @staticmethod
    def _with_headers(send: Send, static: bool, t0: float) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                # What the page cost the server, to the start of the answer (a page is
                # rendered whole before it starts): benchmarks/web_pages.py reads it.
                took = (time.perf_counter() - t0) * 1000
                headers.append((b"server-timing", f"app;dur={took:.1f}".encode()))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


async def _plain(send: Send, status: int, text: str, basic_challenge: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if basic_challenge:
        headers.append((b"www-authenticate", b'Basic realm="dialer", charset="UTF-8"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": (text + "\n").encode("utf-8")})


def create_app(
    config: settings_module.Settings | None = None,
    *,
    sample: bool = True,
    activity: Activity | None = None,
) -> ASGIApp:
    """The console. ``sample``: run the activity sampler (the chart, the rates)."""
    s = config or settings_module.get()
    s.require("DIALER_WEB_PASSWORD")
    authenticator = auth.Authenticator(s.web_user, s.web_password or "")
    console = pages.Console(
        authenticator=authenticator,
        activity=activity or Activity(),
        jobs=Jobs(),
        max_upload=s.web_max_upload_mb * 1024 * 1024,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if sample:
            console.activity.start(console.sample_read)
        try:
            yield
        finally:
            console.activity.stop()
            console.jobs.shutdown()
            console.readers.close()

    routes = pages.routes(console) + [
        Mount("/static", app=StaticFiles(packages=[("dialer.web", "static")]), name="static"),
    ]
    for route in routes:
        if not isinstance(route, Route) or not (route.methods or set()) & UNSAFE:
            continue
        if not getattr(route.endpoint, "csrf_protected", False):
            raise AssertionError(f"{route.path}: a state-changing route without a CSRF check")

    async def database_away(request: Request, exc: Exception) -> Response:
        # A restart or a failover: the page says so and the browser may ask again; the
        # next request opens a new connection (pools drop the broken ones).
        log.warning("console: the database is out of reach (%s)", type(exc).__name__)
        response = await console.http_error(
            request,
            HTTPException(503, "The database cannot be reached right now. Try again shortly."),
        )
        response.headers["Retry-After"] = "5"
        return response

    handlers: dict[Any, Any] = {HTTPException: console.http_error}
    handlers.update(dict.fromkeys(_database_errors(), database_away))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.console = console
    return Gate(app, authenticator, max_body=console.max_upload)


def _database_errors() -> tuple[type[Exception], ...]:
    """What a database out of reach raises: through SQLAlchemy (the pages' queries), or
    from the status readers' own connections (dialer.store.campaign_status)."""
    import psycopg
    import sqlalchemy.exc

    return (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.TimeoutError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    )


def serve(host: str, port: int) -> None:
    """One uvicorn process: the console's state (the activity samples, import jobs) is
    its own, and an operator console needs no more."""
    import uvicorn

    from dialer import logs

    s = settings_module.get()
    s.require("DIALER_WEB_PASSWORD")
    uvicorn.run(
        create_app(s),
        host=host,
        port=port,
        loop="auto",
        http="httptools",
        ws="none",
        lifespan="on",
        # Behind a TLS proxy on this machine: the scheme it forwards decides the cookie's
        # Secure flag (X-Forwarded-Proto, trusted from loopback only, uvicorn's default).
        proxy_headers=True,
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=5,
        log_config=logs.uvicorn_log_config(),
        log_level=None,
    )
