"""The simulator's HTTP side: routes, Basic auth, the request limit, the admin endpoints."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from dialer.dev.simulator.protocol import ApiError, error, invalid

if TYPE_CHECKING:
    from dialer.dev.simulator.core import Simulator

logger = logging.getLogger(__name__)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the handler threads itself, with a deadline
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], sim: Simulator):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sim = sim
        self.connections: dict[threading.Thread, socket.socket] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("simulator connection from %s failed", client_address, exc_info=True)


def endpoint_kind(method: str, rest: list[str]) -> str:
    """Which endpoint a request under ``…/calls`` is, for the stats and the limit."""
    if not rest:
        return {"POST": "create", "GET": "list"}.get(method, "other")
    if len(rest) == 1:
        return {"GET": "read", "POST": "update"}.get(method, "other")
    if rest[1:] == ["events"] and method == "GET":
        return "events"
    if rest[1:] == ["audio"] and method == "POST":
        return "audio"
    if rest[1:] == ["gather"] and method == "POST":
        return "gather"
    if len(rest) == 3 and rest[1] == "gather" and method == "GET":
        return "gather-read"
    return "other"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CatapultSimulator/1"
    # Buffer each response and send it in one write (flushed after each request), and
    # disable Nagle, so keep-alive clients never wait on a delayed ACK.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    server: Server

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
            raise invalid("body", "", "the request body is not valid JSON") from None

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
            raise ApiError(
                401,
                error("authentication", "user-access-denied", "invalid credentials or user id"),
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
                raise ApiError(404, error("not-found", "not-found", "no such resource"))
            self._authenticate(segments[2])
            rest = segments[4:]
            kind = endpoint_kind(method, rest)
            sim._admit_request(kind)
            if kind == "create":
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
            elif kind == "list":
                body, headers = sim._list(query, self._base(), parts.path)
                self._send(200, body, headers)
            elif kind == "read":
                self._send(200, sim._resource(rest[0]))
            elif kind == "update":
                self._send(200, None, sim._update(rest[0], self._json(raw), self._base()))
            elif kind == "events":
                self._send(200, sim._events(rest[0]))
            elif kind == "audio":
                sim._audio(rest[0], self._json(raw))
                self._send(200)
            elif kind == "gather":
                self._send(201, None, {"Location": sim._rest_gather(rest[0], self._json(raw))})
            elif kind == "gather-read":
                self._send(200, sim._gather_resource(rest[0], rest[2]))
            elif len(rest) <= 1 or rest[1:] in (["events"], ["audio"], ["gather"]):
                raise ApiError(405, error("bad-request", "method-not-allowed", method))
            else:
                raise ApiError(404, error("not-found", "not-found", "no such resource"))
        except ApiError as exc:
            sim._count_refusal(exc)
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
                raise invalid("body", "", "the request body must be a JSON object")
            try:
                sim.configure(**changes)
            except (TypeError, ValueError) as exc:
                raise ApiError(400, error("bad-request", "validation-error", str(exc))) from exc
            self._send(200, {"ok": True})
        elif rest == ["reset"] and method == "POST":
            sim.reset()
            self._send(200, {"ok": True})
        else:
            raise ApiError(404, error("not-found", "not-found", "no such admin resource"))

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")
