"""The nudge: one Celery task message, published without Celery.

``dialer campaign start`` and ``resume`` ask the workers to release the campaign's first
calls at once rather than at the next tick: they publish the task ``dialer.release``
(``dialer.worker.tasks``) to the control queue. Importing Celery and kombu to send that
one message cost the command ~300 ms of its start, and redis-py alone ~100 ms (it
imports its asyncio client), against a target of 500 ms from typing the command to the
first call created (issue 13). So this module writes the message itself: Celery's task
message (protocol 2) in kombu's Redis envelope, ``LPUSH``ed to the queue's list, over one
socket in RESP (``AUTH``, ``SELECT`` and ``LPUSH`` in one write). It imports only the
standard library (``ssl`` for ``rediss://``).

The broker URL is read as kombu reads it (the workers consume with kombu): host
(default 127.0.0.1), port (6379), user and password, the database from the path, and
for ``rediss://`` the ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile`` and
``ssl_keyfile`` query options (without ``ssl_cert_reqs`` kombu does not verify the
certificate, nor does this). Any other broker (``redis+socket://``) is published to
through Celery itself; ``memory://`` (the demo's, inside one process) not at all.

The tests hold it to the real thing, so an upgrade of Celery or kombu that changes the
format fails them: ``tests/worker/test_nudge.py`` compares the message field by field
with the one Celery publishes for the same task, has kombu read it back from each kind of
URL, and compares the URL's reading with kombu's; ``tests/e2e/test_start_e2e.py`` has a
real worker act on it.

A nudge that is lost loses nothing (Redis out of reach, a worker that does not know the
task yet during a rolling upgrade, a message that expired): the campaign is running in
the database, and the tick releases its work within a second.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

RELEASE_TASK = "dialer.release"
CONTROL_QUEUE = "dialer.control"  # dialer.worker.app routes RELEASE_TASK here
# A nudge older than this is dropped by the worker that finds it (Celery's ``expires``):
# the ticks have released the campaign's work by then.
EXPIRES = 10.0
TIMEOUT = 2.0  # seconds to connect, and for the replies


class NudgeFailed(Exception):
    """The message could not be published; the message says why (never the password)."""


def release(broker_url: str, campaign_id: int, *, timeout: float = TIMEOUT) -> None:
    """Ask the workers to release ``campaign_id``'s first calls now."""
    publish(broker_url, RELEASE_TASK, [campaign_id], queue=CONTROL_QUEUE, timeout=timeout)


def publish(
    broker_url: str, task: str, args: list[Any], *, queue: str, timeout: float = TIMEOUT
) -> None:
    """Publish one task message to ``queue`` of the broker at ``broker_url``."""
    scheme = broker_url.partition("://")[0]
    if scheme == "memory":
        return  # a broker inside this process: no worker elsewhere could hear it
    if scheme not in ("redis", "rediss"):
        _publish_with_celery(broker_url, task, args, queue)
        return
    body = message(task, args, queue=queue)
    try:
        _lpush(address(broker_url), queue.encode(), body, timeout)
    except (OSError, ValueError) as exc:  # ConnectionError, TimeoutError, ssl.SSLError
        raise NudgeFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from None


def message(task: str, args: list[Any], *, queue: str, expires: float = EXPIRES) -> bytes:
    """The message Celery publishes for ``task.apply_async(args, expires=expires)`` on a
    Redis broker: Celery's protocol 2 (headers, and a JSON body of args, kwargs and
    the embedded callbacks) in kombu's envelope (body in base64, delivery properties)."""
    task_id = str(uuid.uuid4())
    body = json.dumps(
        [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": (datetime.now(UTC) + timedelta(seconds=expires)).isoformat(),
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": "{}",
        "origin": f"gen{os.getpid()}@{socket.gethostname()}",
        "ignore_result": True,  # task_ignore_result (dialer.worker.app)
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,  # persistent
            "expiration": str(int(expires * 1000)),  # milliseconds, as Celery sets it
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,  # priority 0 is the queue's own list (kombu's _q_for_pri)
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()


def address(url: str) -> dict[str, Any]:
    """The connection a ``redis://`` or ``rediss://`` broker URL names, as kombu reads
    it (``kombu.utils.url.url_to_parts``, the Redis channel's ``_connparams``)."""
    parts = urlsplit("http://" + url.partition("://")[2])  # kombu parses it so too
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError(f"the broker URL's database must be a number, not {path!r}") from None
    query = dict(parse_qsl(parts.query))
    return {
        "host": unquote(parts.hostname or "") or "127.0.0.1",
        "port": parts.port or 6379,
        "username": unquote(parts.username or "") or None,
        "password": unquote(parts.password or "") or None,
        "db": db,
        "tls": url.startswith("rediss://"),
        "ssl": {k: v for k, v in query.items() if k.startswith("ssl_")},
    }


def pack(*parts: bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out += [b"$%d\r\n" % len(part), part, b"\r\n"]
    return b"".join(out)


def _lpush(a: dict[str, Any], key: bytes, value: bytes, timeout: float) -> None:
    commands = []
    if a["password"]:
        creds = [a["password"].encode()]
        if a["username"]:
            creds.insert(0, a["username"].encode())
        commands.append(pack(b"AUTH", *creds))
    if a["db"]:
        commands.append(pack(b"SELECT", str(a["db"]).encode()))
    commands.append(pack(b"LPUSH", key, value))
    sock: socket.socket = socket.create_connection((a["host"], a["port"]), timeout=timeout)
    try:
        if a["tls"]:
            sock = _tls(a).wrap_socket(sock, server_hostname=a["host"])
        sock.sendall(b"".join(commands))
        replies = sock.makefile("rb")
        for _ in commands:  # each a one-line reply: +OK, :length, or -ERR ...
            line = replies.readline()
            if not line:
                raise ConnectionError("Redis closed the connection")
            if line[:1] == b"-":
                raise ConnectionError("Redis: " + line[1:].decode("utf-8", "replace").strip())
    finally:
        sock.close()


def _tls(a: dict[str, Any]) -> Any:
    import ssl

    o = a["ssl"]
    ctx = ssl.create_default_context(cafile=o.get("ssl_ca_certs"))
    if o.get("ssl_certfile"):
        ctx.load_cert_chain(o["ssl_certfile"], o.get("ssl_keyfile"))
    # kombu's reading: required, optional or none (its default: none, with a warning).
    reqs = o.get("ssl_cert_reqs", "none").lower().removeprefix("cert_")
    if reqs != "required":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_OPTIONAL if reqs == "optional" else ssl.CERT_NONE
    return ctx


def _publish_with_celery(broker_url: str, task: str, args: list[Any], queue: str) -> None:
    # A broker URL this module does not read (redis+socket://): Celery itself.
    from dialer.worker.app import app

    with app.connection_for_write(broker_url) as conn:
        app.send_task(task, args, queue=queue, expires=EXPIRES, connection=conn)
