"""Callbacks out of the simulator, and the BXML that comes back in their replies.

Callbacks to one call are delivered one at a time, in order, by whichever sender thread
holds the call; different calls go in parallel. A callback that fails goes to the
``fallbackUrl``; if that fails too it is retried after 0.5 s, 1 s, 2 s, ... up to
``callback_retries`` times, holding back the call's later events meanwhile. A BXML fetch
of a verb's requestUrl follows the same rules, without a fallback.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import select
import socket
import ssl
import time
from urllib.parse import unquote, urlencode, urlsplit

from dialer.dev.simulator.base import SimBase
from dialer.dev.simulator.bxml import MAX_BYTES
from dialer.dev.simulator.calls import Call, Outgoing
from dialer.dev.simulator.protocol import without_userinfo

logger = logging.getLogger(__name__)

_CALLBACK_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class CallbackClient:
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
        keep: int | None = None,
    ) -> tuple[int, bytes]:
        """Send one request and return the response's status and, when ``keep`` is set,
        up to ``keep`` + 1 bytes of its body (more means it was too big); raise OSError
        or http.client.HTTPException when there is no response."""
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
            status, data, whole = self._send(conn, method, target, body, headers, timeout, keep)
        except BaseException:
            # Never sent again here, as requests (no retries) never did: a failure goes
            # to the fallback URL and the retry schedule like any other.
            conn.close()
            raise
        if not whole:
            conn.close()  # the rest of an oversized body is never read: not reusable
        return status, data

    @staticmethod
    def _send(
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: tuple[float, float],
        keep: int | None,
    ) -> tuple[int, bytes, bool]:
        if conn.sock is None:
            conn.timeout = timeout[0]
            conn.connect()
        conn.sock.settimeout(timeout[1])
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        if keep is None:
            response.read()  # drained, so the connection can carry the next request
            return response.status, b"", True
        data = response.read(keep + 1)
        if len(data) > keep:
            return response.status, data, False
        response.read()
        return response.status, data, True


def _dropped(sock: socket.socket) -> bool:
    """Whether the peer closed an idle kept-alive connection (it reads as ready)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class DeliveryMixin(SimBase):
    def _sender(self) -> None:
        client = CallbackClient()
        try:
            while True:
                call = self._send_queue.get()
                if call is None:
                    return
                self._drain(call, client)
        finally:
            client.close()

    def _drain(self, call: Call, client: CallbackClient) -> None:
        # Runs outside the lock, taking it to look at and change the call.
        while not self._stopping.is_set():
            with self._lock:
                if call.cancelled or not call.outbox:
                    call.sending = False
                    return
                item = call.outbox[0]
                if item.name == "answer" and call.answer_sent_at is None:
                    call.answer_sent_at = time.monotonic()
            targets = [item.url] if item.url else [call.callback_url or ""]
            if not item.url and call.fallback_url:
                targets.append(call.fallback_url)
            ok, body, answered, problem = False, b"", "", ""
            for url in targets:
                ok, body, problem = self._send(client, call, item, url)
                if ok:
                    answered = url
                    break
            with self._lock:
                if call.cancelled:
                    call.sending = False
                    return
                if item.fetch is not None and item.attempts == 0:
                    self._bxml_reply(call, item, ok, body, answered, problem)
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

    def _send(
        self, client: CallbackClient, call: Call, item: Outgoing, url: str
    ) -> tuple[bool, bytes, str]:
        """One request for ``item`` to ``url``: (2xx, the reply's body when it may be
        BXML, what went wrong otherwise). Runs outside the lock."""
        read = (item.timeout_ms or call.callback_timeout) / 1000
        timeout = (min(3.0, read), read)
        keep = MAX_BYTES if item.fetch is not None else None
        if keep is not None or item.url:
            with self._lock:
                call.bxml_fetches += 1
        try:
            # Credentials in the URL become an Authorization: Basic header, which is the
            # platform's documented protection. A verb's requestUrl is always fetched
            # with GET (docs/carrier.md, "BXML").
            if item.url or call.callback_method == "GET":
                params = {k: str(v) for k, v in item.payload.items()}
                status, body = client.request(
                    "GET", url, body=None, params=params, headers={}, timeout=timeout, keep=keep
                )
            else:
                status, body = client.request(
                    "POST",
                    url,
                    body=json.dumps(item.payload).encode(),
                    params=None,
                    headers=_CALLBACK_HEADERS,
                    timeout=timeout,
                    keep=keep,
                )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            logger.debug(
                "%s callback of %s to %s failed: %s",
                item.name,
                call.id,
                without_userinfo(url),
                type(exc).__name__,
            )
            return False, b"", f"no reply ({type(exc).__name__})"
        if 200 <= status < 300:
            return True, body, ""
        if 400 <= status < 500:
            with self._lock:
                call.refused += 1
        logger.debug(
            "%s callback of %s to %s answered %s",
            item.name,
            call.id,
            without_userinfo(url),
            status,
        )
        return False, b"", f"HTTP {status}"
