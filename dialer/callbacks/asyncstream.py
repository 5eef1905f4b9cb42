"""The receiver's hand-over under asyncio: ``XADD`` on one pipelined Redis connection.

Each receiver process keeps one connection to ``DIALER_REDIS_URL`` and writes every
accepted event to the stream (dialer.callbacks.eventstream: key ``STREAM``, fields ``p`` and
``r``) over it. Requests handled in the same turn of the event loop go out in one
write, and Redis answers them in order, so each request waits for the reply to its
own ``XADD``: a request is answered 2xx only once that reply is an entry id. An error
reply fails that request alone; a connection that fails, closes or stays silent
past ``timeout`` fails every request waiting on it (503: the carrier retries), and
the next event connects anew. One that failed may still have been added: a repeat
is harmless (the state machine stores it as ``repeat``), a lost event is not, so
nothing is ever answered 2xx on a guess.

Why not redis-py's asyncio client (``redis.asyncio``, a pipeline per batch): on this
path it costs 50-115 µs of CPU per event (command packing, a coroutine per reply
read, connection-pool bookkeeping), against 20-35 µs here (measured with 1 to 32
concurrent requests, benchmarks/PROFILE.md); the receiver's whole budget is ~150 µs.
The protocol needed is small: ``XADD`` replies a bulk string or an error, ``AUTH``
and ``SELECT`` a status or an error (RESP2, no ``HELLO``). The URL is read by
redis-py's own parser, so ``redis://``, ``rediss://`` and ``unix://`` URLs mean what
they mean to the rest of the dialer (user, password, database; for TLS,
``ssl_cert_reqs`` and ``ssl_ca_certs``). Other query options are ignored here.

No message this module raises carries the URL or its password.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any

from dialer.callbacks.eventstream import STREAM, HandoverFailed

TIMEOUT = 2.0  # seconds a request waits for its reply (the receiver's socket timeout)
CONNECT_TIMEOUT = 1.0
_CRLF = b"\r\n"


class RedisReplyError(Exception):
    """Redis answered a command with an error (``-ERR …``)."""


class _Connection(asyncio.Protocol):
    """One connection: commands written in order, replies matched to them in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # (future, deadline) per command written or about to be, oldest first.
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._out: list[bytes] = []
        self._flush_soon = False
        self._buf = b""
        self._watchdog: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- sending

    def command(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed command; the future gets its reply (or its failure)."""
        fut = self._loop.create_future()
        if self.closed:
            fut.set_exception(ConnectionError("connection to Redis closed"))
            return fut
        self._waiting.append((fut, self._loop.time() + self._timeout))
        self._out.append(packed)
        if not self._flush_soon:
            # Everything queued in this turn of the loop goes out in one write.
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(self._waiting[0][1], self._check_deadline)
        return fut

    def _flush(self) -> None:
        self._flush_soon = False
        if self.closed or self.transport is None:
            return  # the waiters were failed when it closed
        data = b"".join(self._out)
        self._out.clear()
        self.transport.write(data)

    def _check_deadline(self) -> None:
        # Armed by the first command after an idle spell, at its deadline; then at the
        # oldest command's deadline, until none waits: a timer per batch would cost
        # more than the rest of the bookkeeping.
        self._watchdog = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if deadline <= self._loop.time():
            self.fail(TimeoutError(f"no reply from Redis within {self._timeout:g}s"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)

    def fail(self, exc: BaseException) -> None:
        """Fail every waiting command and close: replies can no longer be matched."""
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            fut, _ = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)
        self._out.clear()
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.fail(ConnectionError(f"connection to Redis lost ({type(exc).__name__})"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        waiting = self._waiting
        while pos < size:
            end = buf.find(_CRLF, pos)
            if end < 0:
                break
            kind = buf[pos]
            value: Any
            if kind == 36:  # $ bulk string: an entry id
                length = int(buf[pos + 1 : end])
                if length < 0:
                    value, nxt = None, end + 2
                else:
                    nxt = end + 2 + length + 2
                    if nxt > size:
                        break
                    value = buf[end + 2 : end + 2 + length]
            elif kind == 43 or kind == 58:  # + status, : integer
                value, nxt = buf[pos + 1 : end], end + 2
            elif kind == 45:  # - error
                text = buf[pos + 1 : end].decode("utf-8", "replace")[:200]
                value, nxt = RedisReplyError(text), end + 2
            else:  # nothing we send is answered so (arrays, RESP3): give up on it
                self.fail(ConnectionError(f"unexpected reply from Redis ({chr(kind)!r})"))
                return
            pos = nxt
            if not waiting:
                self.fail(ConnectionError("reply from Redis to no command"))
                return
            fut, _ = waiting.popleft()
            if not fut.done():  # a request cancelled meanwhile still had its reply
                if isinstance(value, RedisReplyError):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)
        self._buf = buf[pos:]


def pack(*parts: bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n" % len(part))
        out.append(part)
        out.append(_CRLF)
    return b"".join(out)


class AsyncHandover:
    """``await handover(payload, received_at)``: the event is in the stream, or
    :class:`HandoverFailed` is raised. One per process and event loop."""

    def __init__(
        self,
        url: str,
        *,
        key: str = STREAM,
        timeout: float = TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        from redis.connection import parse_url

        self._options = parse_url(url)  # user, password, db, host/port or path, ssl
        self._tls = url.startswith("rediss://")
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._prefix = b"*7\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$1\r\np\r\n" % (
            len(key.encode()),
            key.encode(),
        )
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def __call__(self, payload: str, received_at: str) -> None:
        p = payload.encode()
        r = received_at.encode()
        packed = b"%s$%d\r\n%s\r\n$1\r\nr\r\n$%d\r\n%s\r\n" % (self._prefix, len(p), p, len(r), r)
        try:
            conn = self._conn
            if conn is None or conn.closed:
                conn = await self._connected()
            await conn.command(packed)
        except (OSError, RedisReplyError, ssl.SSLError) as exc:
            # ConnectionError and TimeoutError are OSErrors. Host and port at most.
            raise HandoverFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from None

    async def _connected(self) -> _Connection:
        # Requests that find no connection share one attempt to make it.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, fut: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not fut.cancelled():
            fut.exception()  # retrieved: its waiters have it, or had gone

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        o = self._options
        conn = _Connection(loop, self._timeout)
        try:
            if "path" in o:
                make = loop.create_unix_connection(lambda: conn, o["path"])
            else:
                make = loop.create_connection(
                    lambda: conn,
                    o.get("host", "localhost"),
                    int(o.get("port", 6379)),
                    ssl=self._ssl_context() if self._tls else None,
                )
            await asyncio.wait_for(make, self._connect_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"could not connect to Redis within {self._connect_timeout:g}s"
            ) from None
        try:
            hello: list[asyncio.Future[Any]] = []
            if o.get("password"):
                creds = [str(o["password"]).encode()]
                if o.get("username"):
                    creds.insert(0, str(o["username"]).encode())
                hello.append(conn.command(pack(b"AUTH", *creds)))
            if int(o.get("db") or 0):
                hello.append(conn.command(pack(b"SELECT", str(int(o["db"])).encode())))
            for fut in hello:
                await fut
        except BaseException:
            conn.fail(ConnectionError("closed"))
            raise
        self._conn = conn
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        o = self._options
        ctx = ssl.create_default_context(cafile=o.get("ssl_ca_certs"))
        reqs = str(o.get("ssl_cert_reqs") or "required").lower()
        if reqs == "none":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif reqs == "optional":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.fail(ConnectionError("the receiver is stopping"))
