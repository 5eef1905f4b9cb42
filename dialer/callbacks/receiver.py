"""The callback receiver: authenticate, bound, validate, hand over; nothing else.

It faces the internet: every request is authenticated with ``DIALER_CALLBACK_SECRET``
(dialer.callbacks.gate says how).

An event is answered 2xx only once it is safely in the event stream (one ``XADD`` on
``DIALER_REDIS_URL``, dialer.callbacks.eventstream); if Redis cannot take it the answer is 503, so
the carrier tries its fallbackUrl or again, and no acknowledged event is lost. The
workers apply the stream in batches (dialer.worker.applier).

One copy of the rules (dialer.callbacks.gate: path, method, credentials, body bound,
event check, the answer), two thin adapters that do only the I/O:

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
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from dialer import clock, logs, metrics, settings
from dialer.callbacks import eventstream
from dialer.callbacks.eventstream import HandoverFailed
from dialer.callbacks.gate import (
    ACCEPTED,
    INCOMPLETE,
    MAX_BODY,
    NO_SCRIPT,
    READ_BODY,
    READ_QUERY,
    SCRAPE,
    TOO_LARGE,
    Answer,
    Gate,
)

log = logging.getLogger(__name__)

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
# Seconds a scripted call's answer may wait for the database before it is a 503.
SCRIPT_PATIENCE = 3.0


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
        elif step is READ_QUERY:
            answer, event_type = self._query(environ.get("QUERY_STRING", ""))
        else:
            assert isinstance(step, Answer)
            answer = step
        self._gate.count(answer, event_type)
        start_response(answer.status, answer.wsgi_headers)
        return [answer.data]

    def _callback(self, environ: dict[str, Any]) -> tuple[Answer, str | None]:
        length = self._gate.length(environ.get("CONTENT_LENGTH"))
        if isinstance(length, Answer):
            return length, None
        stream = environ["wsgi.input"]
        # Chunked: read no more than the bound allows.
        body = stream.read(MAX_BODY + 1 if length is None else length)
        got = self._gate.event(body)
        if isinstance(got, Answer):
            return got, None
        event_type, payload = got
        try:
            self._handover(payload, _received_at())
        except HandoverFailed as exc:
            return self._gate.handed(event_type, exc), event_type
        return ACCEPTED, event_type

    def _query(self, raw_query: str) -> tuple[Answer, str | None]:
        got = self._gate.query_event(raw_query)
        if isinstance(got, Answer):
            return got, None
        event_type, payload, text = got
        try:
            self._handover(text, _received_at())
        except HandoverFailed as exc:
            return self._gate.handed(event_type, exc), event_type
        return self._gate.scripted(payload), event_type


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
        elif step is READ_QUERY:
            answer, event_type = await self._query(scope.get("query_string", b""))
        elif step is SCRAPE:
            body, content_type = await asyncio.to_thread(self._scrape)
            headers = [
                (k.lower().encode(), v.encode()) for k, v in _metrics_headers(body, content_type)
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
            return
        else:
            assert isinstance(step, Answer)
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
    ) -> tuple[Answer, str | None, bool]:
        """(answer, event type, whether the body was left unread)."""
        length = self._gate.length(raw_length)
        if isinstance(length, Answer):
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
        if message["type"] == "http.disconnect":
            # The client left, or was cut off (httplimits: too slow), mid-body: what came
            # is a part, even if it parses, and nobody waits for the answer.
            return INCOMPLETE, None, True
        got = self._gate.event(body)
        if isinstance(got, Answer):
            return got, None, False
        event_type, payload = got
        try:
            await self._handover(payload, _received_at())
        except HandoverFailed as exc:
            return self._gate.handed(event_type, exc), event_type, False
        return ACCEPTED, event_type, False

    async def _query(self, raw_query: bytes) -> tuple[Answer, str | None]:
        got = self._gate.query_event(raw_query.decode("latin-1"))
        if isinstance(got, Answer):
            return got, None
        event_type, payload, text = got
        try:
            await self._handover(text, _received_at())
        except HandoverFailed as exc:
            return self._gate.handed(event_type, exc), event_type
        if payload.get("eventType") not in ("answer", "gather"):
            return ACCEPTED, event_type
        try:
            answer = await asyncio.wait_for(
                asyncio.to_thread(self._gate.scripted, payload), SCRIPT_PATIENCE
            )
        except TimeoutError:
            # The database is slow or away (a restart; a pooler holding the query until
            # its server returns): 503 now, so the carrier asks again, rather than a
            # callback left hanging. The read finishes, or fails, in its thread.
            log.error(
                "no script for a %s callback within %g s: answering 503",
                event_type,
                SCRIPT_PATIENCE,
            )
            answer = NO_SCRIPT
        return answer, event_type

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Ready to answer a scripted call's first answer as fast as its hundredth.
                await asyncio.to_thread(self._gate.warm)
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
    _raise_open_files_limit()
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


# Open files (connections) a process may hold: ~400 MiB of idle connections at most.
MAX_OPEN_FILES = 65_536


def _raise_open_files_limit() -> None:
    """Each connection is a file descriptor, and the common default soft limit is 1,024:
    past it a process accepts no connection, the carrier's included, until idle ones
    time out (httplimits closes them within DIALER_RECEIVER_REQUEST_TIMEOUT). The soft
    limit is raised to ``MAX_OPEN_FILES`` (or the hard limit, if lower), and the server
    processes inherit it: the count of connections a process holds is bounded by it, and
    their memory with it (an idle one costs ~6 KiB: tests/callbacks/test_receiver_hostile)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d: %s", soft, exc)
