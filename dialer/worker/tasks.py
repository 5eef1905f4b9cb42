"""Thin Celery tasks: take ids, load rows, check the work is still wanted, act.

- ``tick`` (every second) releases as many due contacts of each running campaign as
  can be sent in the next moments, and publishes their dial messages after that
  transaction commits (``dialer.worker.scheduling``).
- ``release`` (right after ``campaign start`` or ``resume``, published by the command
  without Celery: ``dialer.worker.nudge``) does the same for one campaign's first calls,
  so they need not wait for the tick.
- ``dial`` takes its slot in the fleet-wide pace, claims the attempt in the database,
  creates the call, and records what the carrier said (``dialer.worker.dialing``).
- callback events are not tasks: the consumer threads of ``dialer.worker.applier``, which
  every worker runs beside these tasks, apply them in batches from the event stream.
- ``hang_up`` (every two seconds) ends calls still up past their campaign's
  ``--max-duration`` (``dialer.worker.hangups``).
- ``sweep`` (every ten seconds) re-finds what a crash, a lost message or an ambiguous
  request left behind: expired leases, queued work nobody ran, ambiguous creates,
  events that arrived before their call id was stored (``dialer.worker.sweep``).

The worker process's carrier client and pacer, and the publishing of dial messages, are in
``dialer.worker.clients``. Due times live in the database; countdowns are short (at most
``clients.MAX_COUNTDOWN``), because Redis redelivers long-ETA tasks (docs/field-notes.md,
"Celery on Redis").
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError

from dialer import clock, logs
from dialer.worker import applier, clients, dialing, hangups, nudge, scheduling
from dialer.worker import sweep as sweeping
from dialer.worker.app import app

log = logging.getLogger(__name__)

_retry_db = {"autoretry_for": (DBAPIError,), "retry_backoff": True, "max_retries": 8}


@app.task(name="dialer.tick", **_retry_db)
def tick() -> None:
    scheduling.release_running(clock.now())


@app.task(name=nudge.RELEASE_TASK, **_retry_db)
def release(campaign_id: int) -> None:
    """A campaign just started or resumed: its first calls now, not at the next tick (a
    nudge lost or late changes nothing but that: the tick releases the work anyway).

    One dial batch's worth, which this thread dials itself (a slow pace's batch is
    smaller: the rest of it is published). The release statement's cost grows with its
    rows, and a second batch cost the first call 5 ms on an idle machine, 15-25 ms on a
    busy one; the tick releases the rest within a second."""
    with logs.bound(campaign=campaign_id):
        scheduling.release(campaign_id, limit=clients.DIAL_BATCH, dial_here=True)


@app.task(name="dialer.dial", **_retry_db)
def dial(attempt_id: int) -> None:
    """One attempt (a re-queued send, or a message from before batches)."""
    dialing.dial_batch([attempt_id])


@app.task(name="dialer.dial_batch", **_retry_db)
def dial_batch(attempt_ids: list[int]) -> None:
    """Claim a batch of queued attempts, send each in its slot of the pace, record the
    calls created (dialer.worker.dialing)."""
    dialing.dial_batch(attempt_ids)


# Callbacks arrive on the event stream and are applied in batches by consumer threads
# that every worker runs beside its task pool (dialer.worker.applier), not by a task per event.
applier.install(app)


@app.task(name="dialer.hang_up", **_retry_db)
def hang_up() -> int:
    """Calls still up past their campaign's --max-duration: ended (dialer.worker.hangups)."""
    return hangups.hang_up_overdue(clock.now())


@app.task(name="dialer.sweep", **_retry_db)
def sweep() -> dict[str, int]:
    return sweeping.sweep(clock.now())
