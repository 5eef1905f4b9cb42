"""A TCP relay that can cut a service off: connections refused, open ones reset.

The chaos run puts it between the workers and the carrier simulator to take the carrier
off the network for a while, the way an outage, a firewall change or a DNS failure
does, while the simulator itself (and the calls it is carrying, which still send their
callbacks) runs on. Threads, one pair per connection: a handful of keep-alive
connections at a test's pace.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from dialer.dev.fleet import free_port


class Cutoff:
    """Relays 127.0.0.1:``port`` to ``target``; :meth:`cut` and :meth:`restore`."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.cuts = 0

    def start(self) -> Cutoff:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """From now on nothing gets through: new connections are refused (nothing
        listens), open ones are reset (a request on one may or may not have arrived:
        the dialer must treat it as it treats any lost connection)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
            self.cuts += 1
        if listener is not None:
            # shutdown first: close alone leaves the socket listening (and accepting)
            # until the thread blocked in accept() returns, which it does not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                # RST rather than FIN: what a dead path looks like to the peer.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def restore(self) -> None:
        self.start()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            source.close()
