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

Imported by uvicorn in the receiver's server processes only (``dialer receiver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dialer.callbacks.receiver import MAX_HEADER_FIELD, MAX_HEADER_FIELDS, MAX_REQUEST_LINE

# All of a request's head: its line, its headers, their separators.
MAX_HEAD = MAX_REQUEST_LINE + 2 + MAX_HEADER_FIELDS * (MAX_HEADER_FIELD + 2) + 2

_STATUS = {
    414: b"HTTP/1.1 414 URI Too Long\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True  # between a request's first byte and its headers' end
    _head_bytes = 0
    _fields = 0

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
