"""The Celery app (``celery -A dialer worker|beat``) and why it is configured as it is.

The database is the source of truth and every task is safe to run twice and safe never
to run (the sweep re-finds work), so the broker settings aim at prompt redelivery and
bounded memory rather than at exactly-once delivery, which Redis cannot give.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    worker_ready,
)
from kombu import Exchange, Queue

from dialer import logs, settings
from dialer.worker import nudge

QUEUES = (nudge.CONTROL_QUEUE, "dialer.dial")
TICK_SECONDS = 1.0
SWEEP_SECONDS = 10.0
HANGUP_SECONDS = 2.0  # --max-duration checks (dialer.worker.hangups)

app = Celery("dialer", include=["dialer.worker.tasks"])


def configure(s: settings.Settings) -> None:
    # Longer than any task runs or waits (a dial waits seconds for its slot, a carrier
    # request at most DIALER_HTTP_TIMEOUT; countdowns are capped at 30 s), so Redis
    # redelivers only what a dead worker left unacknowledged, within minutes.
    # "priority": a worker takes from its queues in the order declared (control, events,
    # dial), not round-robin, so a backlog of dials never delays a tick or an event.
    visibility = {"visibility_timeout": 300, "queue_order_strategy": "priority"}
    app.conf.update(
        broker_url=s.broker_url,
        broker_transport_options=visibility,
        result_backend=None,
        task_ignore_result=True,
        # Ack after the task ran: a worker that dies mid-task leaves its message for
        # redelivery. Tasks are idempotent, so a second run is harmless.
        task_acks_late=True,
        # With a prefork pool, a child killed by a signal would otherwise be acked and
        # its task lost; with it, the task is requeued (the sweep is the backstop).
        task_reject_on_worker_lost=True,
        # Not cancelling running tasks when the broker connection drops: the thread
        # pool cannot kill a job (Celery then dies with NotImplementedError), and a
        # late-acked task that runs on and is redelivered is harmless here, since
        # every task is idempotent.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # The work is I/O (carrier requests, database): threads, many per process.
        worker_pool="threads",
        worker_concurrency=s.worker_threads,
        # Prefetch no more than one message per thread: a dead worker strands less.
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_default_queue="dialer.dial",
        # Each queue with its own exchange and key: declared bare, both would bind
        # the default key and every message would land in both.
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_routes={
            "dialer.tick": {"queue": "dialer.control"},
            "dialer.sweep": {"queue": "dialer.control"},
            "dialer.hang_up": {"queue": "dialer.control"},
            # Published by `dialer campaign start` without Celery (dialer.worker.nudge).
            nudge.RELEASE_TASK: {"queue": nudge.CONTROL_QUEUE},
            "dialer.dial": {"queue": "dialer.dial"},
            "dialer.dial_batch": {"queue": "dialer.dial"},
        },
        # Beat only wakes the database-driven ticks; running two beats just ticks more
        # often, which changes nothing (see dialer.worker.tasks).
        beat_schedule={
            "tick": {
                "task": "dialer.tick",
                "schedule": TICK_SECONDS,
                "options": {"expires": 5 * TICK_SECONDS},
            },
            "sweep": {
                "task": "dialer.sweep",
                "schedule": SWEEP_SECONDS,
                "options": {"expires": 3 * SWEEP_SECONDS},
            },
            "hang_up": {
                "task": "dialer.hang_up",
                "schedule": HANGUP_SECONDS,
                "options": {"expires": 2 * HANGUP_SECONDS},
            },
        },
        worker_hijack_root_logger=True,
        timezone="UTC",
    )


configure(settings.get())


@celeryd_init.connect
def _check_settings(**_: Any) -> None:
    """A worker without carrier credentials or a callback URL cannot dial: say so at start."""
    try:
        settings.get().require(
            "CATAPULT_USER_ID",
            "CATAPULT_API_TOKEN",
            "CATAPULT_API_SECRET",
            "DIALER_CALLBACK_URL",
            "DIALER_CALLBACK_SECRET",
        )
    except settings.SettingsError as exc:
        # Celery logs and swallows an Exception from a signal handler; SystemExit stops it.
        raise SystemExit(f"dialer worker: {exc}") from None


@celeryd_init.connect
def _json_from_the_start(instance: Any = None, **_: Any) -> None:
    """With JSON logs, nothing but JSON: no start-up banner (printed to standard output;
    beat has no hook for this, run it with ``celery -q``), and a warning raised before
    Celery sets up logging (such as running as root) is logged, not printed to standard
    error. (Celery still prints "worker: Warm shutdown" to standard output.)"""
    if settings.get().log_format != "json":
        return
    if instance is not None:
        instance.quiet = True
    logs.configure(level=logging.WARNING)  # Celery replaces it with its own, in JSON too
    logging.captureWarnings(True)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: Any = None, **_: Any) -> None:
    """Celery's handlers (root and task logger, worker and beat) in DIALER_LOG_FORMAT,
    secrets redacted; Celery keeps choosing the stream, file and level."""
    if logger is not None:
        logs.install(logger)
    # "Task ... received" and "... succeeded" for every task: three lines per call at
    # INFO, a tenth of a worker's CPU at full speed. Failures and retries still log.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_ready.connect
def _warm(**_: Any) -> None:
    """Open a database connection and build the carrier client and pacer before the first
    message, not inside it (the first dials after a start would wait ~0.5 s).

    And publish one empty dial batch (it claims nothing): a process's first publish
    builds Celery's result backend (a scan of every installed package's entry points,
    even with no backend), the task sender and a producer connection, and declares the
    dial queue, 40-70 ms that the first release after a ``campaign start`` waited for."""
    try:
        from dialer.store import db
        from dialer.worker import clients, tasks

        with db.engine().connect():
            pass
        clients.carrier()
        clients.pacer()
        tasks.dial_batch.apply_async(([],))
    except Exception as exc:  # the first task will try again, and say what is wrong
        logging.getLogger(__name__).warning("could not warm up: %s", exc)
