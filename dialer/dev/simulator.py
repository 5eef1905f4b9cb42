"""A local stand-in for the parts of the Catapult v1 Voice API the dialer uses.

It serves ``/v1/users/{userId}/calls`` (create, read, list, events, hang up) with the
validation, errors and callbacks that ``docs/catapult-v1.md`` describes, and injects the
carrier's failures on demand, so the dialer can be tried and tested without the carrier.

What it does that the real platform may do differently, on purpose:

- Destinations starting with ``+1555000`` are refused with 403
  ``forbidden``/``invalid-call-to-number`` (a destination that cannot be called), so tests
  can exercise a permanent per-contact failure without configuration.
- Outcome ``silent`` models lost callbacks: the call is created and never sends a callback,
  not even when it is hung up through the API (its state stays ``started`` until then).
- A ``null`` in the create body is a validation error: the docs say to send only the fields
  that are set, and a dialer that sends nulls should find out here, not in production.
- Fields with no value (``activeTime`` before an answer, ``tag`` when none was given, ...)
  are left out of ``GET …/calls/{id}`` rather than sent as ``null``.
- Every event that happens is listed by ``GET …/calls/{id}/events`` whether or not its
  callback was delivered; the admin record's ``events`` lists only the callbacks a
  receiver accepted (2xx), in the order they were accepted, duplicates included.
- Callbacks to one call are delivered one at a time, in order (unless reordering is
  configured), while different calls are delivered in parallel. A callback that fails goes
  to the ``fallbackUrl``; if that fails too it is retried after 0.5 s, 1 s, 2 s, ... up to
  ``callback_retries`` times, holding back the call's later events meanwhile.

Admin endpoints for tests, without auth: ``GET /_sim/calls``, ``GET /_sim/stats`` (created,
and refused requests by status and code), ``POST /_sim/config`` (a JSON
object of SimConfig fields), ``POST /_sim/reset``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import heapq
import hmac
import http.client
import itertools
import json
import logging
import math
import queue
import random
import re
import select
import signal
import socket
import ssl
import string
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

logger = logging.getLogger(__name__)

OUTCOMES = ("answered", "busy", "no-answer", "rejected", "congestion", "unallocated", "silent")

# The hangup cause each unanswered outcome ends with (docs/carrier.md, "Callback events").
_HANGUP_CAUSE = {
    "busy": "USER_BUSY",
    "rejected": "CALL_REJECTED",
    "congestion": "NORMAL_CIRCUIT_CONGESTION",
    "unallocated": "UNALLOCATED_NUMBER",
}

REFUSED_PREFIX = "+1555000"

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SIP_URI = re.compile(r"^sip:[^@\s]+@[^@\s]+$")
_ID_CHARS = string.ascii_lowercase + string.digits

_CREATE_FIELDS = frozenset(
    {
        "from",
        "to",
        "callTimeout",
        "callbackUrl",
        "callbackTimeout",
        "callbackHttpMethod",
        "fallbackUrl",
        "bridgeId",
        "conferenceId",
        "recordingEnabled",
        "recordingMaxDuration",
        "recordingFileFormat",
        "transcriptionEnabled",
        "tag",
        "sipHeaders",
    }
)

_CALLBACK_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


@dataclass
class SimConfig:
    """How the simulated carrier behaves; change it at run time with Simulator.configure."""

    user_id: str = "u-sim"
    token: str = field(default="sim-token", repr=False)
    secret: str = field(default="sim-secret", repr=False)
    numbers: list[str] | None = None
    rate: float | None = None
    number_rate: float | None = None
    rate_window: float = 10.0
    outcomes: dict[str, float] = field(default_factory=lambda: {"answered": 1.0})
    outcome_by_number: dict[str, list[str]] = field(default_factory=dict)
    answer_delay: float = 0.05
    talk_time: float = 0.05
    no_answer_delay: float | None = None
    fault_500: float = 0.0
    fault_503: float = 0.0
    fault_429: float = 0.0
    fault_rate_limit: float = 0.0
    fault_ambiguous: float = 0.0
    ambiguous_hold: float = 30.0
    duplicate_callbacks: float = 0.0
    reorder_callbacks: float = 0.0
    tag_on_all_events: bool = True
    callback_retries: int = 5
    credit: int | None = None
    location_style: str = "mixed"
    seed: int = 0
    # Destinations the carrier refuses (403 forbidden/invalid-call-to-number), as prefixes.
    refused_prefixes: tuple[str, ...] = (REFUSED_PREFIX,)


def _check_config(config: SimConfig) -> None:
    for name in (
        "fault_500",
        "fault_503",
        "fault_429",
        "fault_rate_limit",
        "fault_ambiguous",
        "duplicate_callbacks",
        "reorder_callbacks",
    ):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
    for name in ("rate", "number_rate"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be greater than 0 (or None for no limit)")
    if not config.rate_window > 0:
        raise ValueError("rate_window must be greater than 0")
    unknown = set(config.outcomes) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"unknown outcomes {sorted(unknown)}; known: {', '.join(OUTCOMES)}")
    if any(w < 0 for w in config.outcomes.values()) or not sum(config.outcomes.values()) > 0:
        raise ValueError("outcome weights must be >= 0 and not all 0")
    for to, sequence in config.outcome_by_number.items():
        if not sequence or set(sequence) - set(OUTCOMES):
            raise ValueError(f"outcome_by_number[{to!r}] must be a non-empty list of outcomes")
    if config.location_style not in ("relative", "absolute", "mixed"):
        raise ValueError("location_style must be relative, absolute or mixed")
    if config.callback_retries < 0:
        raise ValueError("callback_retries must be >= 0")


def _iso(ts: float) -> str:
    # ISO 8601 UTC with milliseconds and Z, like the platform's event times. Computing from
    # whole milliseconds keeps the seconds and the fraction from rounding apart.
    ms = int(ts * 1000)
    return f"{datetime.fromtimestamp(ms // 1000, UTC):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _error(category: str, code: str, message: str, details: list[dict] | None = None) -> dict:
    return {"category": category, "code": code, "message": message, "details": details or []}


class _ApiError(Exception):
    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = headers or {}


def _invalid(name: str, value: Any, message: str, code: str = "validation-error") -> _ApiError:
    shown = value if isinstance(value, str) else json.dumps(value)
    return _ApiError(
        400,
        _error("bad-request", code, f"{name}: {message}", [{"name": name, "value": shown}]),
    )


def _validate_create(body: Any) -> dict:
    """Check a create-call body like the platform does (docs/carrier.md, "Create a call")."""
    if not isinstance(body, dict):
        raise _invalid("body", "", "the request body must be a JSON object")
    for name in sorted(body):
        if name not in _CREATE_FIELDS:
            raise _invalid(name, body[name], "unknown field")
        if body[name] is None:
            raise _invalid(name, None, "must not be null; leave the field out instead")
    for name in ("from", "to"):
        if name not in body:
            raise _invalid(name, "", "is required")
    src, dst = body["from"], body["to"]
    if not isinstance(src, str) or not _E164.match(src):
        raise _invalid("from", src, "must be an E.164 number like +19195551212")
    if not isinstance(dst, str) or not (_E164.match(dst) or _SIP_URI.match(dst)):
        raise _invalid("to", dst, "must be an E.164 number or a SIP URI like sip:user@host")

    def integer(name: str, low: int, high: int | None) -> None:
        if name not in body:
            return
        value = body[name]
        if type(value) is not int or value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise _invalid(name, value, f"must be a whole number {bound}")

    integer("callTimeout", 1, 300)
    integer("callbackTimeout", 1, 10000)
    integer("recordingMaxDuration", 1, None)
    for name in ("recordingEnabled", "transcriptionEnabled"):
        if name in body and type(body[name]) is not bool:
            raise _invalid(name, body[name], "must be a JSON boolean (true or false)")
    for name in ("tag", "bridgeId", "conferenceId"):
        if name in body and not isinstance(body[name], str):
            raise _invalid(name, body[name], "must be a string")
    method = body.get("callbackHttpMethod", "POST")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise _invalid("callbackHttpMethod", method, "must be GET or POST")
    fmt = body.get("recordingFileFormat", "wav")
    if fmt not in ("wav", "mp3"):
        raise _invalid("recordingFileFormat", fmt, "must be wav or mp3")
    headers = body.get("sipHeaders", {})
    if not isinstance(headers, dict):
        raise _invalid("sipHeaders", headers, "must be an object of header names to values")
    if len(headers) > 5:
        raise _invalid("sipHeaders", headers, "at most 5 headers")
    for name, value in headers.items():
        if not name.upper().startswith("X-") or len(name) > 256:
            raise _invalid("sipHeaders", name, "header names start with X- (at most 256 chars)")
        if not isinstance(value, str) or len(value) > 256:
            raise _invalid("sipHeaders", value, f"{name} must be a string of at most 256 chars")
    for name in ("callbackUrl", "fallbackUrl"):
        if name in body:
            url = body[name]
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                shown = _without_userinfo(url) if isinstance(url, str) else url
                raise _invalid(name, shown, "must be an http(s) URL", "callback-invalid-url")
    return body


class _CallbackClient:
    """Keep-alive HTTP/1.1 connections to callback hosts, for one sender thread.

    The simulator's callbacks are its heaviest work (two per call); ``requests`` spent
    about 250 us of CPU on each, four times what ``http.client`` needs, and on the
    2-core machines the benchmarks run on that CPU is taken from the dialer being
    measured. What it keeps of ``requests``' behaviour: userinfo in the URL becomes
    Basic credentials (unquoted, latin-1, as requests does), a connect timeout and a
    read timeout, no redirects followed, no retries, GET parameters appended to the query,
    and no proxies or netrc (the platform knows nothing of this host's).
    """

    def __init__(self) -> None:
        self._conns: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self._tls = ssl.create_default_context()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        params: dict[str, str] | None,
        headers: dict[str, str],
        timeout: tuple[float, float],
    ) -> int:
        """Send one request and return the response's status; raise OSError or
        http.client.HTTPException when there is no response."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        query = parts.query
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        if query:
            target += "?" + query
        headers = dict(headers)
        if parts.username is not None or parts.password is not None:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("latin-1")).decode(
                "ascii"
            )
        key = (scheme, host, port)
        conn = self._conns.get(key)
        if conn is not None and conn.sock is not None and _dropped(conn.sock):
            # The server closed it while idle (the receiver's keep-alive is 5 s): reconnect,
            # as urllib3 checks a pooled connection before reusing it.
            conn.close()
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, context=self._tls)
            else:
                conn = http.client.HTTPConnection(host, port)
            self._conns[key] = conn
        try:
            return self._send(conn, method, target, body, headers, timeout)
        except BaseException:
            # Never sent again here, as requests (no retries) never did: a failure goes
            # to the fallback URL and the retry schedule like any other.
            conn.close()
            raise

    @staticmethod
    def _send(
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: tuple[float, float],
    ) -> int:
        if conn.sock is None:
            conn.timeout = timeout[0]
            conn.connect()
        conn.sock.settimeout(timeout[1])
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        response.read()  # drained, so the connection can carry the next request
        return response.status


def _dropped(sock: socket.socket) -> bool:
    """Whether the peer closed an idle kept-alive connection (it reads as ready)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


@dataclass
class _Outgoing:
    name: str
    payload: dict
    attempts: int = 0


@dataclass
class _Call:
    id: str
    src: str
    dst: str
    tag: str | None
    outcome: str
    created_at: float
    uri: str
    call_timeout: int
    callback_url: str | None
    callback_method: str
    callback_timeout: int
    fallback_url: str | None
    request: dict
    rng: random.Random
    generation: int
    ambiguous: bool = False
    state: str = "started"
    active_at: float | None = None
    ended_at: float | None = None
    ended: bool = False
    cancelled: bool = False
    log: list[dict] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    refused: int = 0  # callback requests the receiver answered with a 4xx
    outbox: deque[_Outgoing] = field(default_factory=deque)
    sending: bool = False
    held: list[_Outgoing] | None = None

    def record(self) -> dict:
        return {
            "id": self.id,
            "from": self.src,
            "to": self.dst,
            "tag": self.tag,
            "outcome": self.outcome,
            "created_at": self.created_at,
            "state": self.state,
            "callback_url": _without_userinfo(self.callback_url) if self.callback_url else None,
            "events": list(self.delivered),
            "undelivered": list(self.undelivered),
            "refused": self.refused,
            "ambiguous": self.ambiguous,
        }

    def resource(self) -> dict:
        """The call as ``GET …/calls/{id}`` shows it (docs/carrier.md, "Read calls")."""
        out: dict[str, Any] = {
            "id": self.id,
            "direction": "out",
            "from": self.src,
            "to": self.dst,
            "state": self.state,
            "startTime": _iso(self.created_at),
        }
        if self.active_at is not None:
            out["activeTime"] = _iso(self.active_at)
        if self.ended_at is not None:
            out["endTime"] = _iso(self.ended_at)
        talked = (self.ended_at - self.active_at) if self.active_at and self.ended_at else 0.0
        # Billed by the started minute, as carriers do.
        out["chargeableDuration"] = 60 * math.ceil(talked / 60) if talked > 0 else 0
        out["callTimeout"] = self.call_timeout
        if self.callback_url:
            out["callbackUrl"] = _without_userinfo(self.callback_url)
        out["callbackHttpMethod"] = self.callback_method
        out["callbackTimeout"] = self.callback_timeout
        if self.fallback_url:
            out["fallbackUrl"] = _without_userinfo(self.fallback_url)
        for name in ("bridgeId", "conferenceId", "sipHeaders", "tag"):
            if name in self.request:
                out[name] = self.request[name]
        out["recordingEnabled"] = self.request.get("recordingEnabled", False)
        out["transcriptionEnabled"] = self.request.get("transcriptionEnabled", False)
        out["events"] = f"{self.uri}/events"
        return out


class _Scheduler:
    """Runs short functions at monotonic due times on one thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False

    def at(self, due: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), fn))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            # Run outside the condition: the functions take the simulator's lock, which
            # in turn schedules; holding both here could deadlock.
            for fn in due:
                try:
                    fn()
                except Exception:
                    logger.exception("simulator scheduler task failed")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the handler threads itself, with a deadline
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], sim: Simulator):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sim = sim
        self.connections: dict[threading.Thread, socket.socket] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("simulator connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CatapultSimulator/1"
    # Buffer each response and send it in one write (flushed after each request), and
    # disable Nagle, so keep-alive clients never wait on a delayed ACK.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections[threading.current_thread()] = self.connection

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.connections_lock:
            self.server.connections.pop(threading.current_thread(), None)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ---------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _base(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.sim.url

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise _invalid("body", "", "the request body is not valid JSON") from None

    def _authenticate(self, user_id: str) -> None:
        config = self.server.sim.config
        header = self.headers.get("Authorization", "")
        ok = False
        if header[:6].lower() == "basic ":
            try:
                given = base64.b64decode(header[6:].strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
            expected = f"{config.token}:{config.secret}".encode()
            ok = hmac.compare_digest(given, expected)
        if not ok or user_id != config.user_id:
            raise _ApiError(
                401,
                _error("authentication", "user-access-denied", "invalid credentials or user id"),
            )

    def _dispatch(self, method: str) -> None:
        raw = self._read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        parts = urlsplit(self.path)
        segments = [s for s in parts.path.split("/") if s]
        query = parse_qs(parts.query)
        sim = self.server.sim
        try:
            if segments[:1] == ["_sim"]:
                self._admin(method, segments[1:], raw)
                return
            if len(segments) < 4 or segments[:2] != ["v1", "users"] or segments[3] != "calls":
                raise _ApiError(404, _error("not-found", "not-found", "no such resource"))
            self._authenticate(segments[2])
            rest = segments[4:]
            if not rest and method == "POST":
                result = sim._create(self._json(raw), self._base())
                if result.get("ambiguous"):
                    # The call exists and proceeds, but the answer is lost: hold the
                    # connection, then drop it without a status line (docs/carrier.md,
                    # "Errors": a request that times out is ambiguous).
                    sim._stopping.wait(sim.config.ambiguous_hold)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(201, None, {"Location": result["location"]})
            elif not rest and method == "GET":
                body, headers = sim._list(query, self._base(), parts.path)
                self._send(200, body, headers)
            elif len(rest) == 1 and method == "GET":
                self._send(200, sim._resource(rest[0]))
            elif len(rest) == 1 and method == "POST":
                sim._update(rest[0], self._json(raw))
                self._send(200)
            elif len(rest) == 2 and rest[1] == "events" and method == "GET":
                self._send(200, sim._events(rest[0]))
            elif len(rest) <= 1 or rest[1:] == ["events"]:
                raise _ApiError(405, _error("bad-request", "method-not-allowed", method))
            else:
                raise _ApiError(404, _error("not-found", "not-found", "no such resource"))
        except _ApiError as exc:
            self.server.sim._count_refusal(exc)
            self._send(exc.status, exc.body, exc.headers)

    def _admin(self, method: str, rest: list[str], raw: bytes) -> None:
        sim = self.server.sim
        if rest == ["calls"] and method == "GET":
            self._send(200, sim.calls())
        elif rest == ["stats"] and method == "GET":
            self._send(200, sim.stats())
        elif rest == ["config"] and method == "POST":
            changes = self._json(raw)
            if not isinstance(changes, dict):
                raise _invalid("body", "", "the request body must be a JSON object")
            try:
                sim.configure(**changes)
            except (TypeError, ValueError) as exc:
                raise _ApiError(400, _error("bad-request", "validation-error", str(exc))) from exc
            self._send(200, {"ok": True})
        elif rest == ["reset"] and method == "POST":
            sim.reset()
            self._send(200, {"ok": True})
        else:
            raise _ApiError(404, _error("not-found", "not-found", "no such admin resource"))

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


class Simulator:
    """The simulated carrier: an HTTP server, an event scheduler and callback senders."""

    SENDERS = 8

    def __init__(self, config: SimConfig | None = None):
        self._config = config or SimConfig()
        _check_config(self._config)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scheduler = _Scheduler()
        self._send_queue: queue.Queue[_Call | None] = queue.Queue()
        self._id_rng = random.Random()  # ids must differ between runs, whatever the seed
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self.url = ""
        self._clear()

    def _clear(self) -> None:
        # Under self._lock, or before any thread runs.
        self._calls: dict[str, _Call] = {}
        self._calls_to: dict[str, int] = {}
        self._window: deque[float] = deque()
        self._number_windows: dict[str, deque[float]] = {}
        self._created = 0
        self._refusals: dict[str, int] = {}
        self._fault_rng = random.Random(self._config.seed)
        self._generation = getattr(self, "_generation", 0) + 1

    @property
    def config(self) -> SimConfig:
        return self._config

    # -- life cycle ---------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a simulator starts once; make a new one to start again")
        self._server = _Server((host, port), self)
        bound_port = self._server.server_address[1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{bound_port}"
        threads = [
            threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="sim-http",
                daemon=True,
            ),
            threading.Thread(target=self._scheduler.run, name="sim-scheduler", daemon=True),
        ]
        threads += [
            threading.Thread(target=self._sender, name=f"sim-sender-{i}", daemon=True)
            for i in range(self.SENDERS)
        ]
        for thread in threads:
            thread.start()
        self._threads = threads
        return self.url

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        # Keep-alive connections park their handler threads in a read: end those reads.
        with server.connections_lock:
            connections = dict(server.connections)
        for sock in connections.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        self._scheduler.stop()
        for _ in range(self.SENDERS):
            self._send_queue.put(None)
        # A sender inside a callback to a receiver that does not answer finishes when
        # that callback's timeout expires; it is a daemon thread, so it never blocks exit.
        deadline = time.monotonic() + 2.0
        for thread in [*self._threads, *connections]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None

    def __enter__(self) -> Simulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configure(self, **changes: Any) -> None:
        with self._lock:
            config = dataclasses.replace(self._config, **changes)
            _check_config(config)
            self._config = config
            if "seed" in changes:
                self._fault_rng = random.Random(config.seed)

    def calls(self) -> list[dict]:
        with self._lock:
            return [call.record() for call in self._calls.values()]

    def stats(self) -> dict:
        """Calls created and requests refused, by ``status category/code``."""
        with self._lock:
            return {"created": self._created, "refused": dict(self._refusals)}

    def _count_refusal(self, exc: _ApiError) -> None:
        body = exc.body if isinstance(exc.body, dict) else {}
        key = f"{exc.status} {body.get('category', '-')}/{body.get('code', '-')}"
        with self._lock:
            self._refusals[key] = self._refusals.get(key, 0) + 1

    def reset(self) -> None:
        with self._lock:
            for call in self._calls.values():
                call.cancelled = True
                call.outbox.clear()
            self._clear()

    # -- the API ------------------------------------------------------------------------

    def _admit(self, config: SimConfig, src: str, now: float) -> bool:
        """Sliding-window rate limits over ``rate_window`` (docs/carrier.md, default limits)."""
        checks = []
        if config.rate is not None:
            checks.append((self._window, config.rate))
        if config.number_rate is not None:
            checks.append((self._number_windows.setdefault(src, deque()), config.number_rate))
        for window, rate in checks:
            while window and window[0] <= now - config.rate_window:
                window.popleft()
            if len(window) >= max(1, int(rate * config.rate_window + 1e-9)):
                return False
        return True

    def _create(self, body: Any, base: str) -> dict:
        request = _validate_create(body)
        with self._lock:
            config = self._config
            if config.numbers is not None and request["from"] not in config.numbers:
                raise _ApiError(
                    401,
                    _error(
                        "authentication",
                        "number-access-denied",
                        "from: the number is not on this account",
                        [{"name": "from", "value": request["from"]}],
                    ),
                )
            now = time.monotonic()
            rng = self._fault_rng
            if not self._admit(config, request["from"], now) or (
                config.fault_rate_limit and rng.random() < config.fault_rate_limit
            ):
                raise _ApiError(
                    403, _error("limit", "call-rate-limit", "the call rate limit was exceeded")
                )
            if config.fault_429 and rng.random() < config.fault_429:
                reset_ms = str(int(time.time() * 1000) + 1000)
                raise _ApiError(
                    429,
                    _error(
                        "too-many-requests",
                        "too-many-requests",
                        "too many requests",
                        [{"name": "rateLimitResetTime", "value": reset_ms}],
                    ),
                    {"X-RateLimit-Reset": reset_ms},
                )
            if config.fault_500 and rng.random() < config.fault_500:
                raise _ApiError(
                    500, _error("internal-server-error", "internal-error", "internal error")
                )
            if config.fault_503 and rng.random() < config.fault_503:
                raise _ApiError(
                    503, _error("unavailable", "call-unavailable", "service unavailable")
                )
            if config.credit is not None and self._created >= config.credit:
                raise _ApiError(
                    403,
                    _error("credit", "insufficient-available-balance", "insufficient balance"),
                )
            if request["to"].startswith(tuple(config.refused_prefixes)):
                raise _ApiError(
                    403,
                    _error(
                        "forbidden",
                        "invalid-call-to-number",
                        "to: this number cannot be called",
                        [{"name": "to", "value": request["to"]}],
                    ),
                )
            ambiguous = bool(config.fault_ambiguous and rng.random() < config.fault_ambiguous)
            call = self._new_call(config, request, base, now, ambiguous)
            style = config.location_style
            if style == "mixed":
                style = "relative" if self._created % 2 else "absolute"
            path = f"/v1/users/{config.user_id}/calls/{call.id}"
        return {"ambiguous": ambiguous, "location": path if style == "relative" else base + path}

    def _new_call(
        self, config: SimConfig, request: dict, base: str, now: float, ambiguous: bool
    ) -> _Call:
        # Under self._lock.
        dst = request["to"]
        nth = self._calls_to.get(dst, 0)
        self._calls_to[dst] = nth + 1
        # Seeded by (seed, to, n-th call to it) so a re-run dials the same outcomes
        # whatever order the calls arrive in.
        rng = random.Random(f"{config.seed}|{dst}|{nth}")
        sequence = config.outcome_by_number.get(dst)
        if sequence:
            outcome = sequence[min(nth, len(sequence) - 1)]
        else:
            names = [n for n in OUTCOMES if config.outcomes.get(n, 0) > 0]
            outcome = rng.choices(names, [config.outcomes[n] for n in names])[0]
        call_id = "c-" + "".join(self._id_rng.choices(_ID_CHARS, k=25))
        call = _Call(
            id=call_id,
            src=request["from"],
            dst=dst,
            tag=request.get("tag"),
            outcome=outcome,
            created_at=time.time(),
            uri=f"{base}/v1/users/{config.user_id}/calls/{call_id}",
            call_timeout=request.get("callTimeout", 60),
            callback_url=request.get("callbackUrl"),
            callback_method=request.get("callbackHttpMethod", "POST").upper(),
            callback_timeout=request.get("callbackTimeout", 10000),
            fallback_url=request.get("fallbackUrl"),
            request=request,
            rng=rng,
            generation=self._generation,
            ambiguous=ambiguous,
        )
        if config.reorder_callbacks and rng.random() < config.reorder_callbacks:
            call.held = []
        self._calls[call_id] = call
        self._created += 1
        self._window.append(now)
        self._number_windows.setdefault(call.src, deque()).append(now)

        plan: list[tuple[float, str, dict]] = []
        if outcome == "answered":
            plan = [
                (config.answer_delay, "answer", {}),
                (config.answer_delay + config.talk_time, "hangup", {"cause": "NORMAL_CLEARING"}),
            ]
        elif outcome == "no-answer":
            wait = config.no_answer_delay
            wait = call.call_timeout if wait is None else wait
            plan = [(wait, "timeout", {}), (wait, "hangup", {"cause": "NO_ANSWER"})]
        elif outcome in _HANGUP_CAUSE:
            plan = [(config.answer_delay, "hangup", {"cause": _HANGUP_CAUSE[outcome]})]
        for delay, name, extra in plan:
            self._scheduler.at(now + delay, self._planned(call, name, extra))
        return call

    def _planned(self, call: _Call, name: str, extra: dict) -> Callable[[], None]:
        def occur() -> None:
            with self._lock:
                if call.generation == self._generation and not call.ended:
                    self._occur(call, name, extra)

        return occur

    def _occur(self, call: _Call, name: str, extra: dict) -> None:
        # Under self._lock: the event happens now; its callback is queued.
        config = self._config
        now = time.time()
        if name == "answer":
            call.state, call.active_at = "active", now
        elif name == "hangup":
            call.state = "rejected" if extra.get("cause") == "CALL_REJECTED" else "completed"
            call.ended_at, call.ended = now, True
        payload: dict[str, Any] = {
            "eventType": name,
            "from": call.src,
            "to": call.dst,
            "callId": call.id,
            "callUri": call.uri,
        }
        if name in ("answer", "hangup"):
            payload["callState"] = call.state
        payload.update(extra)
        payload["time"] = _iso(now)
        # tag is documented on answer only; older SDKs expect it everywhere.
        if call.tag is not None and (name == "answer" or config.tag_on_all_events):
            payload["tag"] = call.tag
        event_id = "ev-" + "".join(self._id_rng.choices(_ID_CHARS, k=25))
        call.log.append({"id": event_id, "time": payload["time"], "name": name, "data": payload})
        if call.outcome == "silent" or not call.callback_url:
            return
        copies = 1
        if config.duplicate_callbacks and call.rng.random() < config.duplicate_callbacks:
            copies = 2
        items = [_Outgoing(name, payload) for _ in range(copies)]
        if call.held is None:
            self._enqueue(call, items)
            return
        call.held.extend(items)
        if call.ended:  # hangup is always the last event: release the lot, shuffled
            held, call.held = call.held, None
            shuffled = held[:]
            call.rng.shuffle(shuffled)
            if len(shuffled) > 1 and all(a is b for a, b in zip(shuffled, held, strict=True)):
                shuffled.reverse()
            self._enqueue(call, shuffled)

    def _enqueue(self, call: _Call, items: list[_Outgoing]) -> None:
        # Under self._lock. One sender at a time drains a call's outbox, keeping its order.
        call.outbox.extend(items)
        if not call.sending:
            call.sending = True
            self._send_queue.put(call)

    def _get(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None:
            raise _ApiError(
                404,
                _error(
                    "not-found",
                    "call-not-found",
                    f"the call {call_id} was not found",
                    [{"name": "callId", "value": call_id}],
                ),
            )
        return call

    def _resource(self, call_id: str) -> dict:
        with self._lock:
            return self._get(call_id).resource()

    def _events(self, call_id: str) -> list[dict]:
        with self._lock:
            return [dict(event) for event in self._get(call_id).log]

    def _update(self, call_id: str, body: Any) -> None:
        with self._lock:
            call = self._get(call_id)
            if not isinstance(body, dict) or body.get("state") != "completed" or len(body) != 1:
                shown = body.get("state", "") if isinstance(body, dict) else ""
                raise _invalid("state", shown, 'only {"state": "completed"} is supported')
            if not call.ended:
                self._occur(call, "hangup", {"cause": "NORMAL_CLEARING"})

    def _list(self, query: dict[str, list[str]], base: str, path: str) -> tuple[list, dict]:
        def one(name: str, default: str | None = None) -> str | None:
            values = query.get(name)
            return values[-1] if values else default

        def number(name: str, default: int, low: int, high: int | None) -> int:
            raw = one(name, str(default))
            try:
                value = int(raw or "")
            except ValueError:
                raise _invalid(name, raw, "must be a whole number") from None
            if value < low or (high is not None and value > high):
                raise _invalid(name, raw, f"must be between {low} and {high or 'any'}")
            return value

        page = number("page", 0, 0, None)
        size = number("size", 25, 1, 1000)
        order = one("sortOrder", "desc")
        if order not in ("asc", "desc"):
            raise _invalid("sortOrder", order, "must be asc or desc")
        src, dst = one("from"), one("to")
        with self._lock:
            matching = [
                call
                for call in self._calls.values()
                if (src is None or call.src == src) and (dst is None or call.dst == dst)
            ]
            # Creation order breaks ties between equal start times.
            if order == "desc":
                matching.reverse()
            matching.sort(key=lambda c: c.created_at, reverse=order == "desc")
            chunk = [c.resource() for c in matching[page * size : (page + 1) * size]]
            more = len(matching) > (page + 1) * size
        headers = {}
        if more:
            params = {k: v for k, v in (("from", src), ("to", dst)) if v is not None}
            params.update(page=str(page + 1), size=str(size), sortOrder=order)
            headers["Link"] = f'<{base}{path}?{urlencode(params)}>; rel="next"'
        return chunk, headers

    # -- callbacks ----------------------------------------------------------------------

    def _sender(self) -> None:
        client = _CallbackClient()
        try:
            while True:
                call = self._send_queue.get()
                if call is None:
                    return
                self._drain(call, client)
        finally:
            client.close()

    def _drain(self, call: _Call, client: _CallbackClient) -> None:
        while not self._stopping.is_set():
            with self._lock:
                if call.cancelled or not call.outbox:
                    call.sending = False
                    return
                item = call.outbox[0]
            ok = self._post(client, call, item, call.callback_url or "")
            if not ok and call.fallback_url:
                ok = self._post(client, call, item, call.fallback_url)
            with self._lock:
                if call.cancelled:
                    call.sending = False
                    return
                if ok:
                    call.outbox.popleft()
                    call.delivered.append(item.name)
                    continue
                item.attempts += 1
                if item.attempts > self._config.callback_retries:
                    call.outbox.popleft()
                    call.undelivered.append(item.name)
                    logger.warning("gave up on the %s callback of call %s", item.name, call.id)
                    continue
                delay = 0.5 * 2 ** (item.attempts - 1)
            # The call stays marked as sending, so its later events wait for this retry.
            self._scheduler.at(time.monotonic() + delay, lambda: self._send_queue.put(call))
            return

    def _post(self, client: _CallbackClient, call: _Call, item: _Outgoing, url: str) -> bool:
        read = call.callback_timeout / 1000
        timeout = (min(3.0, read), read)
        try:
            # Credentials in the URL become an Authorization: Basic header, which is the
            # platform's documented protection.
            if call.callback_method == "GET":
                params = {k: str(v) for k, v in item.payload.items()}
                status = client.request(
                    "GET", url, body=None, params=params, headers={}, timeout=timeout
                )
            else:
                status = client.request(
                    "POST",
                    url,
                    body=json.dumps(item.payload).encode(),
                    params=None,
                    headers=_CALLBACK_HEADERS,
                    timeout=timeout,
                )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            logger.debug(
                "%s callback of %s to %s failed: %s",
                item.name,
                call.id,
                _without_userinfo(url),
                type(exc).__name__,
            )
            return False
        if 200 <= status < 300:
            return True
        if 400 <= status < 500:
            with self._lock:
                call.refused += 1
        logger.debug(
            "%s callback of %s to %s answered %s",
            item.name,
            call.id,
            _without_userinfo(url),
            status,
        )
        return False


def _outcome_weights(raw: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in OUTCOMES:
            raise argparse.ArgumentTypeError(
                f"expected name=weight pairs over {', '.join(OUTCOMES)}, got {part!r}"
            )
        try:
            weights[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {name} is not a number") from None
    return weights


def main(argv: list[str] | None = None) -> int:
    """Serve the simulator until SIGTERM or SIGINT."""
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="dialer simulator", description="A local stand-in for the Catapult v1 Voice API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--user-id", default=defaults.user_id)
    parser.add_argument("--token", default=defaults.token)
    parser.add_argument("--secret", default=defaults.secret)
    parser.add_argument("--numbers", help="comma-separated from numbers on the account")
    parser.add_argument("--rate", type=float, help="account calls/s over --rate-window")
    parser.add_argument("--number-rate", type=float, help="calls/s per from number")
    parser.add_argument("--rate-window", type=float, default=defaults.rate_window)
    parser.add_argument(
        "--outcomes",
        type=_outcome_weights,
        help="weights, e.g. answered=0.6,busy=0.2,no-answer=0.2",
    )
    parser.add_argument("--answer-delay", type=float, default=defaults.answer_delay)
    parser.add_argument("--talk-time", type=float, default=defaults.talk_time)
    parser.add_argument("--no-answer-delay", type=float)
    for name in ("500", "503", "429", "rate-limit", "ambiguous"):
        parser.add_argument(f"--fault-{name}", type=float, default=0.0, metavar="P")
    parser.add_argument("--ambiguous-hold", type=float, default=defaults.ambiguous_hold)
    parser.add_argument("--duplicate-callbacks", type=float, default=0.0, metavar="P")
    parser.add_argument("--reorder-callbacks", type=float, default=0.0, metavar="P")
    parser.add_argument(
        "--no-tag-on-all-events",
        dest="tag_on_all_events",
        action="store_false",
        help="send the tag only on answer events",
    )
    parser.add_argument("--callback-retries", type=int, default=defaults.callback_retries)
    parser.add_argument("--credit", type=int)
    parser.add_argument(
        "--location-style", choices=("relative", "absolute", "mixed"), default="mixed"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    options = vars(args)
    host, port = options.pop("host"), options.pop("port")
    numbers = options.pop("numbers")
    options["numbers"] = [n.strip() for n in numbers.split(",") if n.strip()] if numbers else None
    if options["outcomes"] is None:
        options["outcomes"] = defaults.outcomes
    try:
        config = SimConfig(**options)
        _check_config(config)
    except ValueError as exc:
        parser.error(str(exc))

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    simulator = Simulator(config)
    url = simulator.start(host, port)
    logger.info("carrier simulator listening on %s (user id %s)", url, config.user_id)

    done = threading.Event()
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: done.set())
    except ValueError:  # not the main thread: rely on KeyboardInterrupt
        pass
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        simulator.stop()
        logger.info("carrier simulator stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
