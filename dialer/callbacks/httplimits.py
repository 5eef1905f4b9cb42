"""uvicorn's httptools protocol with limits on a request's head and ``TCP_NODELAY`` on
every connection.

httptools (llhttp) sets no bound on the request line or the headers, and gathers a
header that arrives in pieces until it is whole: a client could make a receiver
process hold as much as it cares to send before the app sees a request. This one
answers (and closes the connection) when a request line is over
``MAX_REQUEST_LINE`` bytes (414), a request has more than ``MAX_HEADER_FIELDS``
headers or one header line is over ``MAX_HEADER_FIELD`` bytes (431), and when the
bytes read before the headers are complete exceed what those limits allow together
(431): so a process never holds more than that, plus one read, of a request's head.

It also bounds the time a connection may take to deliver a request. uvicorn has no
such timeout: its ``timeout_keep_alive`` timer runs only after an answer and is
cancelled by any byte that arrives, so a connection that never sends, or sends a byte
a second, was held for ever. Here each connection must deliver a whole request (head
and body) within ``DIALER_RECEIVER_REQUEST_TIMEOUT`` seconds of being opened, or of its
previous answer; otherwise it is closed: with 408 Request Timeout if part of a request
had come (RFC 9110, section 15.5.9), silently if nothing had. The app then sees the
client gone (``http.disconnect``) and hands nothing over. An idle keep-alive connection
is still closed sooner, by uvicorn's timer (dialer.callbacks.receiver ``KEEPALIVE``).

Imported by uvicorn in the receiver's server processes only (``dialer receiver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dialer import settings
from dialer.callbacks.receiver import MAX_HEADER_FIELD, MAX_HEADER_FIELDS, MAX_REQUEST_LINE

# All of a request's head: its line, its headers, their separators.
MAX_HEAD = MAX_REQUEST_LINE + 2 + MAX_HEADER_FIELDS * (MAX_HEADER_FIELD + 2) + 2

_STATUS = {
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    414: b"HTTP/1.1 414 URI Too Long\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True  # between a request's first byte and its headers' end
    _head_bytes = 0
    _fields = 0
    _in_request = False  # between a request's first byte and its end
    _deadline: asyncio.TimerHandle | None = None  # for the request awaited
    _timeout = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The listening socket uvicorn binds for its worker processes is made with
        # proto 0, so asyncio does not set TCP_NODELAY on the connections it accepts
        # (it checks for IPPROTO_TCP), and an answer written as head then body waits
        # for the client's delayed ACK: 40 ms a request. Set it here.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._timeout = settings.get().receiver_request_timeout
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request, if the client sends one, is due in time

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self._timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._in_request and (self.cycle is None or not self.cycle.response_started):
            self._refuse(408, "request not received whole in time")
        else:
            self.logger.debug("Closed a connection that sent no request in time.")
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: the bytes of a read that ended a head belong to the
        # body or the next request, not to this head.
        if self._in_head and self.parser is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._refuse(431, "request head too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # armed already, unless a request comes while one is answered
        self._in_request = True
        self._in_head = True
        self._head_bytes = 0
        self._fields = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_LINE:
            self._refuse(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_HEADER_FIELDS:
            self._refuse(431, "too many headers")
        elif len(name) + len(value) + 2 > MAX_HEADER_FIELD:
            self._refuse(431, "header line too long")
        else:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.transport.is_closing():
            return  # refused already: no request for the app
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_request = False
        if self.cycle is not None:
            super().on_message_complete()

    def _refuse(self, status: int, message: str) -> None:
        if self.transport.is_closing():
            return
        self.logger.debug("Refused a request: %s.", message)
        text = message.encode()
        self.transport.write(
            _STATUS[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(text)
            + text
        )
        self.transport.close()
