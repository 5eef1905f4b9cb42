"""The callback receiver: authenticate, bound, validate, hand over; nothing else.

It faces the internet. The carrier signs nothing (docs/carrier.md, "Callback events"),
so every request must carry ``DIALER_CALLBACK_SECRET``: as the password of Basic
credentials (the documented way: the dialer puts ``dialer:SECRET@`` into each call's
callbackUrl and the platform turns it into an ``Authorization`` header), or as a path
token ``/callbacks/catapult/t/SECRET`` for proxies that drop that header. Both are
compared in constant time.

An event is answered 2xx only once it is safely in the event stream (one ``XADD`` on
``DIALER_REDIS_URL``, dialer.callbacks.eventstream); if Redis cannot take it the answer is 503, so
the carrier tries its fallbackUrl or again, and no acknowledged event is lost. The
workers apply the stream in batches (dialer.worker.applier).

One copy of the rules (:class:`Gate`: path, method, credentials, body bound, event
check, the answer), two thin adapters that do only the I/O:

- :class:`AsgiReceiver`, production (``dialer receiver``, :func:`serve`): uvicorn with
  httptools, N processes under uvicorn's supervisor. Its hand-over is asynchronous:
  the events of concurrent requests go to Redis in one write over one connection
  (dialer.callbacks.asyncstream), each request answered after the reply to its own ``XADD``.
- :class:`Receiver`, a WSGI app with a blocking hand-over (``dialer demo`` serves it
  on a thread pool, the event stream in the process).

No framework: the two adapters are a few lines each.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dialer import clock, logs, metrics, settings
from dialer.callbacks import eventstream
from dialer.callbacks.eventstream import HandoverFailed
from dialer.carrier import events

log = logging.getLogger(__name__)

PATH = "/callbacks/catapult"
METRICS_PATH = "/metrics"
MAX_BODY = 64 * 1024  # the carrier's events are a few hundred bytes

# (the event's JSON text, received at): the event is in the stream, or HandoverFailed.
Handover = Callable[[str, str], None]
AsyncHandover = Callable[[str, str], Awaitable[None]]
StartResponse = Callable[..., Any]
Scrape = Callable[[], tuple[bytes, str]]
# Bounds on a request's head: the common web-server defaults (nginx, gunicorn), far above
# what the carrier's callbacks need, so a client can make a process hold only a few KB.
KEEPALIVE = 5  # seconds an idle connection is kept
MAX_REQUEST_LINE = 4094  # bytes
MAX_HEADER_FIELDS = 50
MAX_HEADER_FIELD = 8190  # bytes of one header line


def callback_urls(s: settings.Settings) -> tuple[str, str]:
    """Each call's callbackUrl and fallbackUrl, with the secret as Basic credentials."""
    if not s.callback_url or not s.callback_secret:
        raise settings.SettingsError(
            "DIALER_CALLBACK_URL and DIALER_CALLBACK_SECRET are needed to build callback URLs"
        )
    parts = urlsplit(s.callback_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"dialer:{quote(s.callback_secret, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    path = parts.path.rstrip("/") + PATH
    callback = urlunsplit((parts.scheme, netloc, path, "", ""))
    return callback, callback + "/fallback"


@dataclass(frozen=True)
class _Answer:
    status: str  # the status line, "200 OK"
    body: dict[str, str]
    # Why a callback was refused, or "accepted": counted (dialer.metrics). None: not an
    # answer on a callback path (health, metrics, elsewhere), not counted.
    reason: str | None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def code(self) -> int:
        return int(self.status[:3])

    @cached_property
    def data(self) -> bytes:
        return json.dumps(self.body).encode()

    @cached_property
    def wsgi_headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(self.data))),
            *self.headers,
        ]

    @cached_property
    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode("latin-1")) for k, v in self.wsgi_headers]

    @cached_property
    def asgi_headers_closing(self) -> list[tuple[bytes, bytes]]:
        """Answered before the request's body was read: the connection is closed after
        it, rather than reading on (and throwing away) what a client still sends."""
        return [*self.asgi_headers, (b"connection", b"close")]


_CREDENTIALS_REQUIRED = (("WWW-Authenticate", 'Basic realm="dialer"'),)
_METRICS_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="dialer-metrics"'),)

HEALTHY = _Answer("200 OK", {"status": "ok"}, None)
ELSEWHERE = _Answer("404 Not Found", {"error": "no such path"}, None)
NO_SUCH_PATH = _Answer("404 Not Found", {"error": "no such path"}, "no-such-path")
NOT_POSTED = _Answer(
    "405 Method Not Allowed", {"error": "callbacks must be POSTed"}, "method", (("Allow", "POST"),)
)
NO_CREDENTIALS = _Answer(
    "401 Unauthorized", {"error": "credentials required"}, "no-credentials", _CREDENTIALS_REQUIRED
)
MALFORMED_CREDENTIALS = _Answer(
    "401 Unauthorized",
    {"error": "malformed Basic credentials"},
    "malformed-credentials",
    _CREDENTIALS_REQUIRED,
)
WRONG_CREDENTIALS = _Answer("403 Forbidden", {"error": "wrong credentials"}, "wrong-credentials")
TOO_LARGE = _Answer("413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"}, "too-large")
BAD_LENGTH = _Answer("400 Bad Request", {"error": "bad Content-Length"}, "bad-length")
EMPTY = _Answer("400 Bad Request", {"error": "empty body"}, "empty")
NOT_JSON = _Answer("400 Bad Request", {"error": "body is not valid JSON"}, "not-json")
UNSTORABLE = _Answer(
    "400 Bad Request",
    {"error": "text with a NUL character or a lone UTF-16 surrogate cannot be stored"},
    "unstorable-text",
)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _unstorable(value: Any) -> bool:
    """Whether any key or string holds what jsonb cannot: NUL, or a lone surrogate (only
    a \\u escape can put either in UTF-8 JSON, so only such bodies are walked)."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


UNAVAILABLE = _Answer(
    "503 Service Unavailable",
    {"error": "cannot accept events right now"},
    "stream-unavailable",
    (("Retry-After", "1"),),
)
ACCEPTED = _Answer("200 OK", {"status": "accepted"}, "accepted")
METRICS_NOT_GET = _Answer(
    "405 Method Not Allowed",
    {"error": "metrics are read with GET"},
    None,
    (("Allow", "GET, HEAD"),),
)
# 401 for missing and wrong alike: a scraper told to authenticate retries with
# credentials, and nothing tells a prober which it got wrong.
METRICS_REFUSED = _Answer(
    "401 Unauthorized", {"error": "metrics credentials required"}, None, _METRICS_CHALLENGE
)


class _Step:
    """What :meth:`Gate.route` asks the adapter to do next, when it is not an answer."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


READ_BODY = _Step("read the body")  # an authenticated callback: read, check, hand over
SCRAPE = _Step("scrape")  # an authorized /metrics request


class Gate:
    """The receiver's rules, whatever serves it: each request's answer from its method,
    path, ``Authorization`` header, ``Content-Length`` and body, in that order.

    ``/metrics`` serves the fleet's Prometheus metrics (dialer.metrics) to whoever holds
    ``metrics_token`` (Bearer, or the password of Basic credentials), a credential of
    its own: the callback secret does not open it, and without a token configured the
    path does not exist (404), so nothing about the fleet is exposed by default.
    """

    def __init__(self, secret: str, metrics_token: str | None = None) -> None:
        if not secret:
            raise settings.SettingsError("DIALER_CALLBACK_SECRET is required by the receiver")
        if metrics_token is not None and metrics_token == secret:
            raise settings.SettingsError(
                "DIALER_METRICS_TOKEN must differ from DIALER_CALLBACK_SECRET"
            )
        self._secret = secret.encode()
        self._metrics_token = metrics_token.encode() if metrics_token else None

    def route(self, method: str, path: str, authorization: str) -> _Answer | _Step:
        """The answer, or the next step: READ_BODY (then :meth:`length`, :meth:`event`,
        the hand-over, :meth:`handed`) or SCRAPE."""
        if path == "/healthz":
            return HEALTHY
        if path == METRICS_PATH and self._metrics_token is not None:
            if method not in ("GET", "HEAD"):
                return METRICS_NOT_GET
            if not _bearer_or_basic_matches(authorization, self._metrics_token):
                return METRICS_REFUSED
            return SCRAPE
        if not path.startswith(PATH):
            return ELSEWHERE
        token: str | None = None
        if path.startswith(PATH + "/t/"):
            token = path[len(PATH) + 3 :]
        elif path != PATH and path != PATH + "/fallback":
            return NO_SUCH_PATH
        if method != "POST":
            return NOT_POSTED
        return self._authenticate(authorization, token) or READ_BODY

    def _authenticate(self, header: str, token: str | None) -> _Answer | None:
        if token is not None:
            given = token.encode()
        else:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic" or not value:
                return NO_CREDENTIALS
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return MALFORMED_CREDENTIALS
            given = decoded.partition(":")[2].encode()
        if not hmac.compare_digest(given, self._secret):
            return WRONG_CREDENTIALS
        return None

    @staticmethod
    def length(raw: str | None) -> int | None | _Answer:
        """The declared body length (None: not declared, chunked), or the refusal; read
        at most this many bytes, or ``MAX_BODY + 1`` when it is None."""
        if not raw:
            return None
        try:
            length = int(raw)
        except ValueError:
            return BAD_LENGTH
        if length < 0:
            return BAD_LENGTH
        if length > MAX_BODY:
            return TOO_LARGE
        return length

    @staticmethod
    def event(body: bytes) -> tuple[str, str] | _Answer:
        """(event type, the JSON text to store) for a valid event; else the refusal.

        The text stored is the body as it came, when it is UTF-8 (as JSON on the wire
        is): the workers decode it again (dialer.worker.applier), so encoding it anew here
        would only cost time. Any other encoding json accepts is stored re-encoded.
        """
        if len(body) > MAX_BODY:
            return TOO_LARGE
        if not body:
            return EMPTY
        text: str | None
        try:
            text = body.decode()
        except UnicodeDecodeError:
            text = None
        if text is not None and text.startswith("\ufeff"):
            text = None  # a BOM: json takes it from bytes, not from text
        try:
            payload = json.loads(body if text is None else text)
            # Only what would refuse it: the workers parse it whole (dialer.worker.applier).
            event_type = events.check(payload)[0]
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, events.BadEvent):
                return _Answer("400 Bad Request", {"error": str(exc)}, "malformed-event")
            return NOT_JSON
        if (text is None or "\\u" in text) and _unstorable(payload):
            # Valid JSON that PostgreSQL's jsonb refuses: accepted, it would fail in the
            # worker and be dropped there, so it is refused here instead.
            return UNSTORABLE
        if text is None:
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return event_type, text

    @staticmethod
    def handed(event_type: str, failure: HandoverFailed | None) -> _Answer:
        if failure is None:
            return ACCEPTED
        log.error("could not hand over a %s event (%s): answering 503", event_type, failure)
        return UNAVAILABLE

    @staticmethod
    def count(answer: _Answer, event_type: str | None) -> None:
        """The metrics hook, for every answer on a callback path."""
        if answer.reason is not None:
            metrics.callback(answer.code, answer.reason, event_type)


def _bearer_or_basic_matches(header: str, token: bytes | None) -> bool:
    """Bearer TOKEN, or Basic with TOKEN as the password (any user), in constant time."""
    if token is None:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        given = value.encode()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value, validate=True).partition(b":")[2]
        except binascii.Error:
            return False
    else:
        return False
    return hmac.compare_digest(given, token)


def _received_at() -> str:
    return clock.now().isoformat()


# ------------------------------------------------------------------------- WSGI


class Receiver:
    """The WSGI adapter, with a blocking hand-over (``dialer demo``)."""

    def __init__(
        self,
        secret: str,
        handover: Handover | None = None,
        metrics_token: str | None = None,
        scrape: Scrape | None = None,
    ) -> None:
        self._gate = Gate(secret, metrics_token)
        # Built now, when the app loads, not on the first callback: its connection pool
        # serves every thread of the process for its whole life.
        self._handover = handover or eventstream.Handover()
        self._scrape = scrape or metrics.exposition

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        step = self._gate.route(
            method, environ.get("PATH_INFO", ""), environ.get("HTTP_AUTHORIZATION", "")
        )
        event_type: str | None = None
        if step is SCRAPE:
            body, content_type = self._scrape()
            start_response("200 OK", _metrics_headers(body, content_type))
            return [b""] if method == "HEAD" else [body]
        if step is READ_BODY:
            answer, event_type = self._callback(environ)
        else:
            assert isinstance(step, _Answer)
            answer = step
        self._gate.count(answer, event_type)
        start_response(answer.status, answer.wsgi_headers)
        return [answer.data]

    def _callback(self, environ: dict[str, Any]) -> tuple[_Answer, str | None]:
        length = self._gate.length(environ.get("CONTENT_LENGTH"))
        if isinstance(length, _Answer):
            return length, None
        stream = environ["wsgi.input"]
        # Chunked: read no more than the bound allows.
        body = stream.read(MAX_BODY + 1 if length is None else length)
        got = self._gate.event(body)
        if isinstance(got, _Answer):
            return got, None
        event_type, payload = got
        try:
            self._handover(payload, _received_at())
        except HandoverFailed as exc:
            return self._gate.handed(event_type, exc), event_type
        return ACCEPTED, event_type


def _metrics_headers(body: bytes, content_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]


# ------------------------------------------------------------------------- ASGI


class AsgiReceiver:
    """The ASGI adapter (production): the same rules, an asynchronous hand-over, and
    ``/metrics`` (blocking: it reads PostgreSQL and Redis) on a thread, off the loop."""

    def __init__(
        self,
        secret: str,
        handover: AsyncHandover | None = None,
        metrics_token: str | None = None,
        scrape: Scrape | None = None,
    ) -> None:
        self._gate = Gate(secret, metrics_token)
        self._handover = handover or _async_handover()
        self._scrape = scrape or metrics.exposition

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        authorization = ""
        length: str | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
        method = scope["method"]
        step = self._gate.route(method, scope["path"], authorization)
        event_type: str | None = None
        body_left = chunked or (length is not None and length != "0")
        if step is READ_BODY:
            answer, event_type, body_left = await self._callback(receive, length)
        elif step is SCRAPE:
            body, content_type = await asyncio.to_thread(self._scrape)
            headers = [
                (k.lower().encode(), v.encode()) for k, v in _metrics_headers(body, content_type)
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
            return
        else:
            assert isinstance(step, _Answer)
            answer = step
        self._gate.count(answer, event_type)
        await send(
            {
                "type": "http.response.start",
                "status": answer.code,
                "headers": answer.asgi_headers_closing if body_left else answer.asgi_headers,
            }
        )
        await send({"type": "http.response.body", "body": answer.data})

    async def _callback(
        self, receive: Any, raw_length: str | None
    ) -> tuple[_Answer, str | None, bool]:
        """(answer, event type, whether the body was left unread)."""
        length = self._gate.length(raw_length)
        if isinstance(length, _Answer):
            return length, None, True
        limit = MAX_BODY if length is None else length
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body"):
            # Chunked, or the body came in pieces: read on, never past the bound.
            chunks = [body]
            size = len(body)
            while message.get("more_body") and size <= limit:
                message = await receive()
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_BODY:
                return TOO_LARGE, None, True
            body = b"".join(chunks)
        got = self._gate.event(body)
        if isinstance(got, _Answer):
            return got, None, False
        event_type, payload = got
        try:
            await self._handover(payload, _received_at())
        except HandoverFailed as exc:
            return self._gate.handed(event_type, exc), event_type, False
        return ACCEPTED, event_type, False

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Requests in flight have had their answers (uvicorn waits for them).
                close = getattr(self._handover, "close", None)
                if close is not None:
                    await close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _async_handover() -> AsyncHandover:
    url = settings.get().redis_url
    if url.startswith("memory://"):
        # One process's queue (no worker can read it): only for trying the server out.
        blocking = eventstream.Handover()

        async def local(payload: str, received_at: str) -> None:
            blocking(payload, received_at)

        return local
    from dialer.callbacks.asyncstream import AsyncHandover

    return AsyncHandover(url)


def app() -> AsgiReceiver:
    """The receiver app of one server process (uvicorn's factory, called in each)."""
    s = settings.get()
    receiver = AsgiReceiver(s.callback_secret or "", metrics_token=s.metrics_token)
    metrics.recorder().client()  # built (redis imported) before the first callback
    return receiver


def serve(host: str, port: int, workers: int = 2) -> None:
    """Run the receiver: uvicorn (httptools), ``workers`` processes under uvicorn's
    supervisor, which replaces one that dies and, on SIGTERM, stops each gracefully
    (in-flight requests are answered, for up to 10 s). Each process serves its requests
    concurrently on one event loop."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    settings.get().require("DIALER_CALLBACK_SECRET")
    config = uvicorn.Config(
        "dialer.callbacks.receiver:app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # httptools, with limits on the request line and headers (httplimits).
        http="dialer.callbacks.httplimits:BoundedHttpToolsProtocol",
        # uvloop where installed (a dependency on Linux): ~20% less CPU per event than
        # asyncio's own loop in benchmarks/receiver.py; asyncio's loop otherwise.
        loop="auto",
        ws="none",
        lifespan="on",
        interface="asgi3",
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=KEEPALIVE,
        timeout_graceful_shutdown=10,
        access_log=False,
        # uvicorn's own lines in DIALER_LOG_FORMAT, secrets redacted, in every process.
        log_config=logs.uvicorn_log_config(),
        log_level=None,
    )
    # The supervisor even for one process: a process that dies is replaced.
    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()
