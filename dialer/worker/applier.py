"""Applying callback events: consumer threads in every worker process read the stream
(dialer.callbacks.eventstream) and apply what they read in batches, one transaction each.

Each consumer thread loops: read up to ``BATCH`` entries (``XREADGROUP … BLOCK``: it
returns as soon as anything is there, so under load a batch is what arrived while the
previous one was applied; a read that found only a few waits ``LINGER`` for more, since
a transaction's fixed cost dwarfs a few events' work); apply them in ONE transaction
through ``dialer.state.events.apply_events``; commit; then acknowledge and delete them. One thread
of a process reads at a time while the others apply, so batches gather meanwhile.
Consumers apply batches side by side, and a call's answer and hangup often fall in two
of them: a batch skips the contacts another holds (``SKIP LOCKED``) and applies those
few events right after in a second transaction, which waits for that one batch only.
Blocking on every lock instead would queue each batch behind the previous one's commit.
Every few seconds it also takes over entries another consumer left pending for longer
than ``RECLAIM_IDLE`` (a worker killed mid-batch): the redelivery. Applying an event
twice is harmless: the state machine stores the second as ``repeat``.

When a batch fails:

- **one bad event cannot block the rest**: the batch is applied again one event per
  transaction; an event that fails alone for a reason other than the database being
  unreachable is logged with its payload and dropped (acknowledged, counted as
  ``failed``); the sweep reads the call back from the carrier if it mattered;
- **a malformed entry** (not JSON, not a valid event) is logged and dropped the same way
  (``malformed``); the receiver validated it, so this is a stream written by hand;
- **the database is unreachable** (or a deadlock, a serialisation failure, a pool
  timeout): the events stay unacknowledged, the consumer waits (1 s, doubling up to
  10 s) and applies the same entries again, reading nothing new meanwhile.

Threads, not tasks: the consumers run beside the Celery thread pool, so a backlog of
dials never delays an event (benchmarks/PROFILE.md, F4), and no Celery message is sent,
received, traced or acked per event. They start with the worker (a bootstep, or each
child's ``worker_process_init`` under a prefork pool) and stop at its shutdown after
the batch in hand is committed and acknowledged.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime
from typing import Any

from dialer import clock, metrics, settings
from dialer.callbacks.eventstream import (
    BATCH,
    BLOCK,
    FORGET_CONSUMER,
    LINGER,
    RECLAIM_IDLE,
    Entry,
    Stream,
    stream,
)
from dialer.carrier import events
from dialer.state import events as applying
from dialer.store import db

log = logging.getLogger(__name__)

RECLAIM_EVERY = 5.0  # seconds between looks for entries a dead consumer left pending
FORGET_EVERY = 600.0  # seconds between clean-ups of long-gone consumers' names
MAX_BACKOFF = 10.0

Item = tuple[Entry, events.CallEvent, datetime]  # an entry and what it says


def _transient(exc: BaseException) -> bool:
    """The database could not be used right now: try the same events again later."""
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError)


def _parse(entry: Entry) -> tuple[events.CallEvent, datetime]:
    import json

    event = events.parse(json.loads(entry.payload), raw=entry.payload)
    return event, datetime.fromisoformat(entry.received_at)


def apply_entries(entries: list[Entry]) -> tuple[list[str], list[Entry]]:
    """Apply entries; return (ids applied or dropped: done with, entries to try again)."""
    done: list[str] = []
    good: list[Item] = []
    for entry in entries:
        try:
            event, received_at = _parse(entry)
        except Exception as exc:  # BadEvent is a ValueError; a RecursionError, anything
            # An entry that cannot be read now never will be: dropped, not retried, or
            # it would hold its whole batch pending (the loop treats an error out of
            # here as the database or Redis being away).
            log.error("dropping malformed stream entry %s: %r", entry.id, str(exc)[:200])
            metrics.event_applied("malformed", None)
            done.append(entry.id)
            continue
        good.append((entry, event, received_at))
    remaining = good
    try:
        if remaining:
            # Contacts another consumer's batch holds are skipped, not waited for ...
            remaining = _apply(remaining, skip_locked=True)
            later = {g[0].id for g in remaining}
            done += [g[0].id for g in good if g[0].id not in later]
        if remaining:
            # ... then applied at once in a second transaction, which waits for that one
            # batch to commit: no consumer queues behind a chain of others.
            _apply(remaining, skip_locked=False)
            done += [g[0].id for g in remaining]
        return done, []
    except Exception as exc:
        if len(remaining) == 1:
            return _one_failed(remaining[0][0], exc, done)
        log.warning(
            "a batch of %d events failed (%s: %s): applying them one by one",
            len(remaining),
            type(exc).__name__,
            str(exc)[:200],
        )
    for i, item in enumerate(remaining):
        try:
            _apply([item], skip_locked=False)
            done.append(item[0].id)
        except Exception as exc:
            done, held = _one_failed(item[0], exc, done)
            if held:
                return done, [g[0] for g in remaining[i:]]
    return done, []


def _one_failed(entry: Entry, exc: BaseException, done: list[str]) -> tuple[list[str], list[Entry]]:
    if _transient(exc):
        log.warning("cannot apply events now (%s): they wait", type(exc).__name__)
        return done, [entry]
    log.error(
        "dropping stream entry %s, which fails alone: %s: %s; payload %s",
        entry.id,
        type(exc).__name__,
        str(exc)[:300],
        entry.payload[:2000],
        exc_info=exc,
    )
    metrics.event_applied("failed", entry.received_at)
    return [*done, entry.id], []


def _apply(items: list[Item], *, skip_locked: bool) -> list[Item]:
    """One transaction; returns the items deferred (their contacts were busy)."""
    with db.session_scope() as session:
        dispositions = applying.apply_events(
            session, [i[1] for i in items], [i[2] for i in items], clock.now(),
            skip_locked=skip_locked,
        )  # fmt: skip
    # Committed: the lag of each event ends here.
    metrics.events_applied(
        [(d, i[0].received_at) for d, i in zip(dispositions, items, strict=True) if d is not None]
    )
    return [i for d, i in zip(dispositions, items, strict=True) if d is None]


class Applier:
    """``consumers`` threads applying the stream's events in this process."""

    def __init__(
        self,
        target: Stream | None = None,
        consumers: int = 2,
        *,
        batch: int = BATCH,
        block: float = BLOCK,
        reclaim_idle: float = RECLAIM_IDLE,
        reclaim_every: float = RECLAIM_EVERY,
        linger: float = LINGER,
        name: str | None = None,
    ) -> None:
        self.stream = target or stream("consumer")
        self.consumers = consumers
        self.batch = batch
        self.block = block
        self.reclaim_idle = reclaim_idle
        self.reclaim_every = reclaim_every
        self.linger = linger
        # One thread of the process reads at a time, while the others apply: the next
        # batch gathers during this one's transaction instead of being split in small
        # reads by every idle thread.
        self._reading = threading.Lock()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for i in range(self.consumers):
            thread = threading.Thread(
                target=self._run,
                args=(f"{self.name}:{i}", i == 0),
                name=f"dialer-applier-{i}",
                # Daemon as a last resort only: stop() joins them at every orderly
                # shutdown; a worker that dies leaves its entries to be reclaimed.
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        log.info("applying callback events with %d consumer threads", self.consumers)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand (committed and acknowledged), then stop."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        left = [t.name for t in self._threads if t.is_alive()]
        if left:
            log.warning("consumer threads still applying at shutdown: %s", ", ".join(left))
        self._threads = []

    def _read(self, consumer: str) -> list[Entry]:
        if not self._reading.acquire(timeout=self.block):
            return []  # another thread is reading: look at the stop flag, come back
        try:
            entries = self.stream.read(consumer, self.batch, self.block)
            if entries and len(entries) < self.batch // 4 and not self._stop.is_set():
                time.sleep(self.linger)
                entries += self.stream.read(consumer, self.batch - len(entries), 0)
            return entries
        finally:
            self._reading.release()

    def _run(self, consumer: str, housekeeper: bool) -> None:
        held: list[Entry] = []
        backoff = 1.0
        grouped = False
        next_reclaim = 0.0
        next_forget = time.monotonic() + FORGET_EVERY
        failing = False
        while not self._stop.is_set():
            try:
                if held:
                    if self._stop.wait(backoff):
                        break  # they stay pending: another consumer takes them over
                    done, held = apply_entries(held)
                    self.stream.done(done)
                    backoff = min(MAX_BACKOFF, backoff * 2) if held else 1.0
                    continue
                if not grouped:
                    self.stream.ensure_group()
                    grouped = True
                if time.monotonic() >= next_reclaim:
                    taken = self.stream.reclaim(consumer, self.reclaim_idle, self.batch)
                    # A full page: more may be waiting, look again right away.
                    wait = 0.0 if len(taken) == self.batch else self.reclaim_every
                    next_reclaim = time.monotonic() + wait
                    if taken:
                        log.warning(
                            "took over %d events left pending by a consumer that stopped",
                            len(taken),
                        )
                        done, held = apply_entries(taken)
                        self.stream.done(done)
                        continue
                if housekeeper and time.monotonic() >= next_forget:
                    next_forget = time.monotonic() + FORGET_EVERY
                    self.stream.forget_idle_consumers(FORGET_CONSUMER)
                entries = self._read(consumer)
                if failing:
                    log.info("the event stream is reachable again")
                    failing = False
                if entries:
                    done, held = apply_entries(entries)
                    self.stream.done(done)
            except Exception as exc:
                # Redis unreachable (or restarting): what was read and not acknowledged
                # stays pending; wait and carry on.
                if not failing:
                    log.warning("event stream unavailable (%s: %s)", type(exc).__name__, exc)
                    failing = True
                self._stop.wait(1.0)


# ------------------------------------------------------------ in the Celery worker


def _wanted() -> int:
    return settings.get().event_consumers


_process_applier: Applier | None = None


def _bootstep() -> Any:
    from celery import bootsteps

    class Consumers(bootsteps.StartStopStep):
        """The worker's consumer threads: started with the worker, stopped with it."""

        label = "dialer event consumers"

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.applier: Applier | None = None

        def include_if(self, parent: Any) -> bool:
            return _wanted() > 0

        def start(self, parent: Any) -> None:
            if "prefork" in getattr(parent.pool_cls, "__module__", ""):
                return  # each child runs its own (worker_process_init below)
            self.applier = Applier(consumers=_wanted())
            self.applier.start()

        def stop(self, parent: Any) -> None:
            if self.applier is not None:
                self.applier.stop()
                self.applier = None

        terminate = stop

    return Consumers


def install(app: Any) -> None:
    """Run the consumers in ``app``'s workers (called where the tasks are registered)."""
    from celery.signals import worker_process_init, worker_process_shutdown

    app.steps["worker"].add(_bootstep())

    @worker_process_init.connect(weak=False)
    def _start_in_child(**_: Any) -> None:
        global _process_applier
        if _wanted() > 0:
            _process_applier = Applier(consumers=_wanted())
            _process_applier.start()

    @worker_process_shutdown.connect(weak=False)
    def _stop_in_child(**_: Any) -> None:
        global _process_applier
        if _process_applier is not None:
            _process_applier.stop()
            _process_applier = None
