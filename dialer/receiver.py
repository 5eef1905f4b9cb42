"""The callback receiver: authenticate, bound, validate, hand over; nothing else.

It faces the internet. The carrier signs nothing (catapult-v1.md, "Callback events"),
so every request must carry ``DIALER_CALLBACK_SECRET``: as the password of Basic
credentials (the documented way: the dialer puts ``dialer:SECRET@`` into each call's
callbackUrl and the platform turns it into an ``Authorization`` header), or as a path
token ``/callbacks/catapult/t/SECRET`` for proxies that drop that header. Both are
compared in constant time.

An event is answered 2xx only once it is safely in the event stream (one ``XADD`` on
``DIALER_REDIS_URL``, dialer.eventstream); if Redis cannot take it the answer is 503, so
the carrier tries its fallbackUrl or again, and no acknowledged event is lost. The
workers apply the stream in batches (dialer.applier).

Served by gunicorn (``dialer receiver``): a plain WSGI app, no framework needed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dialer import clock, eventstream, logs, metrics, settings
from dialer.carrier import events
from dialer.eventstream import HandoverFailed

log = logging.getLogger(__name__)

PATH = "/callbacks/catapult"
METRICS_PATH = "/metrics"
MAX_BODY = 64 * 1024  # the carrier's events are a few hundred bytes

Handover = Callable[[dict[str, Any], str], None]
StartResponse = Callable[..., Any]


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
    reason: str  # for the metrics: why a callback was refused, or "accepted"
    headers: list[tuple[str, str]] = field(default_factory=list)
    event_type: str | None = None

    @property
    def code(self) -> int:
        return int(self.status[:3])


_CREDENTIALS_REQUIRED = [("WWW-Authenticate", 'Basic realm="dialer"')]
_METRICS_CHALLENGE = [("WWW-Authenticate", 'Bearer realm="dialer-metrics"')]


class Receiver:
    """The WSGI application.

    ``/metrics`` serves the fleet's Prometheus metrics (dialer.metrics) to whoever holds
    ``metrics_token`` (Bearer, or the password of Basic credentials), a credential of
    its own: the callback secret does not open it, and without a token configured the
    path does not exist (404), so nothing about the fleet is exposed by default.
    """

    def __init__(
        self,
        secret: str,
        handover: Handover | None = None,
        metrics_token: str | None = None,
        scrape: Callable[[], tuple[bytes, str]] | None = None,
    ) -> None:
        if not secret:
            raise settings.SettingsError("DIALER_CALLBACK_SECRET is required by the receiver")
        if metrics_token is not None and metrics_token == secret:
            raise settings.SettingsError(
                "DIALER_METRICS_TOKEN must differ from DIALER_CALLBACK_SECRET"
            )
        self._secret = secret.encode()
        # Built now, when the app loads, not on the first callback: its connection pool
        # serves every thread of the process for its whole life.
        self._handover = handover or eventstream.Handover()
        self._metrics_token = metrics_token.encode() if metrics_token else None
        self._scrape = scrape or metrics.exposition

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _reply(start_response, "200 OK", {"status": "ok"})
        if path == METRICS_PATH and self._metrics_token is not None:
            return self._metrics(environ, start_response)
        if not path.startswith(PATH):
            return _reply(start_response, "404 Not Found", {"error": "no such path"})
        answer = self._callback(environ, path)
        metrics.callback(answer.code, answer.reason, answer.event_type)
        return _reply(start_response, answer.status, answer.body, answer.headers)

    def _callback(self, environ: dict[str, Any], path: str) -> _Answer:
        token: str | None = None
        if path.startswith(PATH + "/t/"):
            token = path[len(PATH) + 3 :]
        elif path not in (PATH, PATH + "/fallback"):
            return _Answer("404 Not Found", {"error": "no such path"}, "no-such-path")
        if environ.get("REQUEST_METHOD") != "POST":
            return _Answer(
                "405 Method Not Allowed",
                {"error": "callbacks must be POSTed"},
                "method",
                [("Allow", "POST")],
            )
        denied = self._authenticate(environ, token)
        if denied is not None:
            return denied
        body, error = _read_body(environ)
        if error is not None:
            return error
        try:
            event = events.parse(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, events.BadEvent):
                return _Answer("400 Bad Request", {"error": str(exc)}, "malformed-event")
            return _Answer("400 Bad Request", {"error": "body is not valid JSON"}, "not-json")
        try:
            self._handover(event.payload, clock.now().isoformat())
        except HandoverFailed as exc:
            log.error("could not hand over a %s event (%s): answering 503", event.event_type, exc)
            return _Answer(
                "503 Service Unavailable",
                {"error": "cannot accept events right now"},
                "stream-unavailable",
                [("Retry-After", "1")],
            )
        return _Answer("200 OK", {"status": "accepted"}, "accepted", event_type=event.event_type)

    def _authenticate(self, environ: dict[str, Any], token: str | None) -> _Answer | None:
        if token is not None:
            given = token.encode()
        else:
            header = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic" or not value:
                return _Answer(
                    "401 Unauthorized",
                    {"error": "credentials required"},
                    "no-credentials",
                    _CREDENTIALS_REQUIRED,
                )
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return _Answer(
                    "401 Unauthorized",
                    {"error": "malformed Basic credentials"},
                    "malformed-credentials",
                    _CREDENTIALS_REQUIRED,
                )
            given = decoded.partition(":")[2].encode()
        if not hmac.compare_digest(given, self._secret):
            return _Answer("403 Forbidden", {"error": "wrong credentials"}, "wrong-credentials")
        return None

    def _metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(
                start_response,
                "405 Method Not Allowed",
                {"error": "metrics are read with GET"},
                [("Allow", "GET, HEAD")],
            )
        if not _bearer_or_basic_matches(environ.get("HTTP_AUTHORIZATION", ""), self._metrics_token):
            # 401 for missing and wrong alike: a scraper told to authenticate retries
            # with credentials, and nothing tells a prober which it got wrong.
            return _reply(
                start_response,
                "401 Unauthorized",
                {"error": "metrics credentials required"},
                _METRICS_CHALLENGE,
            )
        body, content_type = self._scrape()
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


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


def _read_body(environ: dict[str, Any]) -> tuple[bytes, _Answer | None]:
    raw_length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    too_large = _Answer(
        "413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"}, "too-large"
    )
    if raw_length:
        try:
            length = int(raw_length)
        except ValueError:
            return b"", _Answer("400 Bad Request", {"error": "bad Content-Length"}, "bad-length")
        if length > MAX_BODY:
            return b"", too_large
        body = stream.read(length)
    else:  # chunked: read no more than the bound allows
        body = stream.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return b"", too_large
    if not body:
        return b"", _Answer("400 Bad Request", {"error": "empty body"}, "empty")
    return body, None


def _reply(
    start_response: StartResponse,
    status: str,
    body: dict[str, str],
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *(headers or []),
        ],
    )
    return [data]


def serve(host: str, port: int, workers: int = 2, threads: int = 16) -> None:
    """Run the receiver under gunicorn (threads per process: handing over is I/O)."""
    from gunicorn.app.base import BaseApplication

    settings.get().require("DIALER_CALLBACK_SECRET")
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "limit_request_line": 4094,
        "limit_request_fields": 50,
        "proc_name": "dialer-receiver",
        # gunicorn's own lines in DIALER_LOG_FORMAT, secrets redacted (dialer.logs).
        "logger_class": logs.gunicorn_logger_class(),
    }

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Receiver:
            s = settings.get()
            app = Receiver(s.callback_secret or "", metrics_token=s.metrics_token)
            metrics.recorder().client()  # built (redis imported) before the first callback
            return app

    _App().run()
