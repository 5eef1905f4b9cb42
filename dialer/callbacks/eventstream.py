"""The callback stream: where the receiver puts each accepted event for the workers.

A Redis Stream (``XADD``) on ``DIALER_REDIS_URL``, read by the workers' consumer threads
as one consumer group (``XREADGROUP``), in batches (dialer.worker.applier). Why a stream and not
a Celery task per event: a task costs the receiver ~290 µs of GIL to publish and a worker
~1.5 ms to receive, decode, trace and ack, and events applied one per task cost ~8 SQL
statements each (benchmarks/PROFILE.md); a stream entry is one ``XADD``, and a worker takes up
to ``BATCH`` entries in one read and applies them in one transaction.

What the stream guarantees, and how:

- **Nothing accepted is dropped.** No ``MAXLEN``: an entry leaves the stream only when a
  worker has applied it and committed (``XACK`` then ``XDEL``, in one round trip). The
  receiver answers 2xx only once ``XADD`` returned.
- **Entries added before any worker existed are applied.** The group is created at id
  ``0`` (not ``$``), by the consumers, whenever it is missing (first start, or a Redis
  that lost its data).
- **A consumer that died leaves its entries pending**, and another takes them over with
  ``XAUTOCLAIM`` once they have been idle for ``RECLAIM_IDLE``: that is the redelivery.
  Applying an event twice is harmless (the state machine stores it as ``repeat``).
- **The backlog is** ``XLEN``: entries accepted and not yet applied (delivered or not),
  since applied ones are deleted. The receiver's ``/metrics`` shows it.

``memory://`` (``dialer demo``, no Redis): :class:`LocalStream`, a queue in the process,
consumed by the demo's worker threads through the same apply code; like pacing's
``LocalBackend``, it is for one process and keeps nothing across a restart.

This module needs only redis-py: the receiver imports it without SQLAlchemy.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from dialer import settings

log = logging.getLogger(__name__)

STREAM = "dialer:events"
GROUP = "dialer-appliers"
BATCH = 200  # entries one read takes, at most: one transaction's worth
BLOCK = 1.0  # seconds a read waits for the first entry
# A read that finds only a few entries waits this long for more before they are applied:
# a transaction costs about as much for 2 events as the per-event work of 30, so at a
# low rate events are applied in tens rather than ones, for LINGER of lag. At the
# target's 800 events/s (400 calls/s paced), 0.2 s rather than 0.05 took the workers
# from ~1.9 to ~1.7 ms CPU per call, for event-to-row p99 ~230 ms instead of ~130.
LINGER = 0.2
RECLAIM_IDLE = 30.0  # seconds an entry stays with a consumer before another takes it over
# A consumer gone this long with nothing pending is removed from the group's list (a
# live one reads at least every BLOCK seconds; one with entries pending is never removed,
# that would drop them).
FORGET_CONSUMER = 3600.0


class HandoverFailed(Exception):
    """The event could not be put in the stream."""


@dataclass(frozen=True)
class Entry:
    """One stream entry: the event as the receiver validated it, and when it came in."""

    id: str
    payload: str  # the event's JSON body
    received_at: str  # ISO 8601, the receiver's clock


class Stream(Protocol):
    def add(self, payload: str, received_at: str) -> str: ...
    def ensure_group(self) -> None: ...
    def read(self, consumer: str, count: int, block: float) -> list[Entry]: ...
    def reclaim(self, consumer: str, min_idle: float, count: int) -> list[Entry]: ...
    def done(self, ids: list[str]) -> None: ...
    def backlog(self) -> int: ...
    def forget_idle_consumers(self, idle: float) -> int: ...


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[Entry]:
    """Entries as redis-py parses XREADGROUP/XAUTOCLAIM: [(id, {field: value}), ...]."""
    out = []
    for entry_id, fields in raw or []:
        if fields is None:  # deleted while pending (Redis < 7 reports it so)
            continue
        payload = fields.get(b"p", fields.get("p", b""))
        received = fields.get(b"r", fields.get("r", b""))
        out.append(Entry(_text(entry_id), _text(payload), _text(received)))
    return out


class RedisStream:
    """The stream on Redis. One instance per process: its connection pool is shared by
    the receiver's threads, and by the consumer threads (each blocked read holds one
    connection of the pool while it waits)."""

    def __init__(self, client: Any, key: str = STREAM, group: str = GROUP) -> None:
        self.client = client
        self.key = key
        self.group = group

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float, retries: int) -> RedisStream:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        # Few, quick retries: with Redis down the receiver must answer 503 promptly (the
        # carrier then retries or uses the fallback URL), not after redis-py's default
        # ten attempts with backoff.
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries),
            health_check_interval=30,
        )
        return cls(client)

    def add(self, payload: str, received_at: str) -> str:
        return _text(self.client.xadd(self.key, {"p": payload, "r": received_at}))

    def ensure_group(self) -> None:
        import redis

        try:
            # At 0, not $: entries the receiver added before any worker ran are applied.
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block: float) -> list[Entry]:
        import redis

        try:
            got = self.client.xreadgroup(
                self.group,
                consumer,
                {self.key: ">"},
                count=count,
                block=int(block * 1000) if block > 0 else None,  # BLOCK 0: for ever
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost its data (a restart without persistence): start again.
            self.ensure_group()
            return []
        return _entries(got[0][1]) if got else []

    def reclaim(self, consumer: str, min_idle: float, count: int) -> list[Entry]:
        import redis

        try:
            got = self.client.xautoclaim(
                self.key, self.group, consumer, int(min_idle * 1000), start_id="0-0", count=count
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        return _entries(got[1])

    def done(self, ids: list[str]) -> None:
        if not ids:
            return
        # Acknowledged and deleted together: the stream holds only what is not yet
        # applied, so it never grows without bound, and XLEN is the backlog. (One group
        # reads this stream: nobody else needs the entry afterwards.)
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.key, self.group, *ids)
        pipe.xdel(self.key, *ids)
        pipe.execute()

    def backlog(self) -> int:
        return int(self.client.xlen(self.key))

    def forget_idle_consumers(self, idle: float) -> int:
        import redis

        try:
            consumers = self.client.xinfo_consumers(self.key, self.group)
        except redis.ResponseError:
            return 0  # no stream or no group yet
        forgotten = 0
        for c in consumers:
            if int(c.get("pending", 0)) == 0 and int(c.get("idle", 0)) > idle * 1000:
                self.client.xgroup_delconsumer(self.key, self.group, c["name"])
                forgotten += 1
        return forgotten


class LocalStream:
    """The stream in this process (``memory://``): a queue, for the demo.

    Entries read and not yet done are kept per consumer, as Redis does, so ``reclaim``
    behaves the same; nothing survives the process.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: collections.deque[Entry] = collections.deque()
        self._pending: dict[str, tuple[str, float, Entry]] = {}  # id -> (consumer, since, e)
        self._ids = itertools.count(1)

    def add(self, payload: str, received_at: str) -> str:
        with self._cond:
            entry = Entry(f"{next(self._ids)}-0", payload, received_at)
            self._waiting.append(entry)
            self._cond.notify()
        return entry.id

    def ensure_group(self) -> None:
        pass

    def read(self, consumer: str, count: int, block: float) -> list[Entry]:
        deadline = time.monotonic() + block
        with self._cond:
            while not self._waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            out = [self._waiting.popleft() for _ in range(min(count, len(self._waiting)))]
            now = time.monotonic()
            for e in out:
                self._pending[e.id] = (consumer, now, e)
            return out

    def reclaim(self, consumer: str, min_idle: float, count: int) -> list[Entry]:
        now = time.monotonic()
        with self._cond:
            idle = [e for _, since, e in self._pending.values() if now - since >= min_idle]
            out = idle[:count]
            for e in out:
                self._pending[e.id] = (consumer, now, e)
            return out

    def done(self, ids: list[str]) -> None:
        with self._cond:
            for i in ids:
                self._pending.pop(i, None)

    def backlog(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._pending)

    def forget_idle_consumers(self, idle: float) -> int:
        return 0


_lock = threading.Lock()
_streams: dict[tuple[str, str], Stream] = {}


def stream(role: str = "receiver", url: str | None = None) -> Stream:
    """The process's stream for ``role`` (its own connection pool): ``receiver`` writes
    with short timeouts; ``consumer`` reads with blocking reads that need longer ones.
    ``memory://`` gives the one in-process stream, whatever the role."""
    url = url or settings.get().redis_url
    if url.startswith("memory://"):
        role = "local"
    key = (role, url)
    with _lock:
        found = _streams.get(key)
        if found is None:
            if role == "local":
                found = LocalStream()
            elif role == "consumer":
                # The socket timeout outlasts a blocked read (BLOCK) with room to spare.
                found = RedisStream.from_url(url, socket_timeout=BLOCK + 5.0, retries=1)
            else:
                found = RedisStream.from_url(url, socket_timeout=2.0, retries=2)
            _streams[key] = found
        return found


def reset() -> None:
    """Forget the process's streams (tests, after a settings change)."""
    with _lock:
        _streams.clear()


def _after_fork() -> None:
    # A forked child (a prefork child) must not share its parent's
    # sockets: it builds its own pool on first use.
    _streams.clear()


os.register_at_fork(after_in_child=_after_fork)


class Handover:
    """The receiver's hand-over under WSGI (``dialer demo``): one ``XADD`` per accepted
    event, over the process's pool. ``payload`` is the event's JSON text, stored as is."""

    def __init__(self, target: Stream | None = None) -> None:
        self._stream = target or stream("receiver")

    def __call__(self, payload: str, received_at: str) -> None:
        try:
            self._stream.add(payload, received_at)
        except Exception as exc:  # redis-py raises a variety of connection errors
            # The message names Redis's host and port, never a password.
            raise HandoverFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from None
