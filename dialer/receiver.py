"""The callback receiver: authenticate, bound, validate, hand over; nothing else.

It faces the internet. The carrier signs nothing (catapult-v1.md, "Callback events"),
so every request must carry ``DIALER_CALLBACK_SECRET``: as the password of Basic
credentials (the documented way: the dialer puts ``dialer:SECRET@`` into each call's
callbackUrl and the platform turns it into an ``Authorization`` header), or as a path
token ``/callbacks/catapult/t/SECRET`` for proxies that drop that header. Both are
compared in constant time.

An event is answered 2xx only once it is safely in the broker; if the broker cannot
take it the answer is 503, so the carrier tries its fallbackUrl or again, and no
acknowledged event is lost. The event is applied by the ``apply_event`` task.

Served by gunicorn (``dialer receiver``): a plain WSGI app, no framework needed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dialer import clock, settings
from dialer.carrier import events

log = logging.getLogger(__name__)

PATH = "/callbacks/catapult"
MAX_BODY = 64 * 1024  # the carrier's events are a few hundred bytes

Handover = Callable[[dict[str, Any], str], None]
StartResponse = Callable[..., Any]


class HandoverFailed(Exception):
    """The event could not be put in the broker."""


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


def celery_handover(payload: dict[str, Any], received_at: str) -> None:
    from dialer.tasks import apply_event

    try:
        apply_event.apply_async(
            (payload, received_at),
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
        )
    except Exception as exc:  # kombu raises a variety of connection errors
        # The message names the broker's host and port, never its password.
        raise HandoverFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from None


class Receiver:
    """The WSGI application."""

    def __init__(self, secret: str, handover: Handover = celery_handover) -> None:
        if not secret:
            raise settings.SettingsError("DIALER_CALLBACK_SECRET is required by the receiver")
        self._secret = secret.encode()
        self._handover = handover

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _reply(start_response, "200 OK", {"status": "ok"})
        token: str | None = None
        if path.startswith(PATH + "/t/"):
            token = path[len(PATH) + 3 :]
        elif path not in (PATH, PATH + "/fallback"):
            return _reply(start_response, "404 Not Found", {"error": "no such path"})
        if environ.get("REQUEST_METHOD") != "POST":
            return _reply(
                start_response,
                "405 Method Not Allowed",
                {"error": "callbacks must be POSTed"},
                [("Allow", "POST")],
            )
        denied = self._authenticate(environ, token)
        if denied is not None:
            return denied(start_response)
        body, error = _read_body(environ)
        if error is not None:
            return _reply(start_response, *error)
        try:
            event = events.parse(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            reason = str(exc) if isinstance(exc, events.BadEvent) else "body is not valid JSON"
            return _reply(start_response, "400 Bad Request", {"error": reason})
        try:
            self._handover(event.payload, clock.now().isoformat())
        except HandoverFailed as exc:
            log.error("could not hand over a %s event (%s): answering 503", event.event_type, exc)
            return _reply(
                start_response,
                "503 Service Unavailable",
                {"error": "cannot accept events right now"},
                [("Retry-After", "1")],
            )
        return _reply(start_response, "200 OK", {"status": "accepted"})

    def _authenticate(
        self, environ: dict[str, Any], token: str | None
    ) -> Callable[[StartResponse], Iterable[bytes]] | None:
        if token is not None:
            given = token.encode()
        else:
            header = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic" or not value:
                return lambda sr: _reply(
                    sr,
                    "401 Unauthorized",
                    {"error": "credentials required"},
                    [("WWW-Authenticate", 'Basic realm="dialer"')],
                )
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return lambda sr: _reply(
                    sr,
                    "401 Unauthorized",
                    {"error": "malformed Basic credentials"},
                    [("WWW-Authenticate", 'Basic realm="dialer"')],
                )
            given = decoded.partition(":")[2].encode()
        if not hmac.compare_digest(given, self._secret):
            return lambda sr: _reply(sr, "403 Forbidden", {"error": "wrong credentials"})
        return None


def _read_body(environ: dict[str, Any]) -> tuple[bytes, tuple[str, dict[str, str]] | None]:
    raw_length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if raw_length:
        try:
            length = int(raw_length)
        except ValueError:
            return b"", ("400 Bad Request", {"error": "bad Content-Length"})
        if length > MAX_BODY:
            return b"", ("413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"})
        body = stream.read(length)
    else:  # chunked: read no more than the bound allows
        body = stream.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return b"", ("413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"})
    if not body:
        return b"", ("400 Bad Request", {"error": "empty body"})
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
    }

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Receiver:
            return Receiver(settings.get().callback_secret or "")

    _App().run()
