"""Fleet-wide Prometheus metrics: counted where things happen, added up in Redis, served
by the receiver at ``/metrics``.

What happens is spread over many processes on many machines: workers create calls and
see carrier errors, uvicorn runs several receiver processes. A per-process registry
would make each scrape show one process's share. So:

- **Counters and the lag histogram** are kept per process in a small in-memory buffer
  (one dict update under a lock: about a microsecond, no I/O on the dial or callback
  path), and a daemon thread adds the buffer to one Redis hash every ``FLUSH_SECONDS``
  in a single MULTI/EXEC of HINCRBY(FLOAT)s. Any receiver process answers for the whole
  fleet by reading that hash. A Redis outage never fails a dial or a callback: the
  flush fails (logged at debug), the deltas stay in the buffer (it is keyed by metric
  and labels, so it stays small) and go out with the next flush that works. A process
  that dies loses at most its last second of counts; counters start again from zero
  when Redis loses its data, which Prometheus reads as a counter reset.
- **Gauges** (attempts in flight by status, campaigns by state) are read from the
  database at scrape time. In-flight attempts only: ``status IN (queued, sending,
  unknown, created, answered)`` is a range on ``ix_attempt_status_lease`` that touches
  the in-flight rows (bounded by the release horizon and the calls up), however many
  millions of finished attempts a campaign holds. Finished attempts are counted
  instead (``dialer_attempts_finished_total``), when the transaction that finished them
  commits, rather than counted in the table on every scrape.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` units). Label
values are bounded: statuses, reasons and dispositions are fixed sets, carrier codes
are cut to 64 characters, event types outside the documented ones become ``other``.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from dialer import clock, settings

log = logging.getLogger(__name__)

KEY = "dialer:metrics"  # one Redis hash: field = JSON [name, {label: value}], value = count
FLUSH_SECONDS = 1.0
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# What the carrier documents (docs/carrier.md, "Callback events"); anything else is "other".
KNOWN_EVENTS = frozenset(
    {"answer", "hangup", "timeout", "playback", "speak", "gather", "dtmf", "recording"}
    | {"transcription", "error", "incomingcall", "reject", "transfer-complete"}
)
# Attempts that are not finished: what the database gauge counts.
IN_FLIGHT = ("queued", "sending", "unknown", "created", "answered")

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]

CALLS_CREATED = "dialer_calls_created_total"
CARRIER_ERRORS = "dialer_carrier_errors_total"
RATE_LIMIT_WAITS = "dialer_rate_limit_waits_total"
RATE_LIMIT_WAIT_SECONDS = "dialer_rate_limit_wait_seconds_total"
CALLBACKS_RECEIVED = "dialer_callbacks_received_total"
CALLBACKS_REFUSED = "dialer_callbacks_refused_total"
EVENTS_APPLIED = "dialer_events_applied_total"
EVENT_LAG = "dialer_event_lag_seconds"
EVENT_BACKLOG = "dialer_event_backlog"
ATTEMPTS_FINISHED = "dialer_attempts_finished_total"
RESPONSES = "dialer_responses_total"
CONTROL_REQUESTS = "dialer_control_requests_total"
CALLER_IDS_REMOVED = "dialer_caller_ids_removed_total"
ANSWER_TO_SCRIPT = "dialer_answer_to_script_seconds"

# name -> (help, label names); the counters, in the order they are exposed.
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    CALLS_CREATED: ("Calls the carrier created (a 201 to a create request).", ()),
    CARRIER_ERRORS: (
        "Create-call requests that failed, by HTTP status (none: no answer), carrier "
        "code (none: no code) and what the dialer did (retry, rate-limited, permanent, "
        "stop, ambiguous, duplicate).",
        ("status", "code", "action"),
    ),
    RATE_LIMIT_WAITS: (
        "Waits for the rate limits: pushback (the carrier's 403 call-rate-limit or 429 "
        "held the fleet), pace-sleep (a worker slept for its slot), pace-requeue (the "
        "slot was over a second away: the dial came back later).",
        ("reason",),
    ),
    RATE_LIMIT_WAIT_SECONDS: (
        "Seconds waited, by the same reasons (pushback: the hold set; pace-requeue: the "
        "delay asked for).",
        ("reason",),
    ),
    CALLBACKS_RECEIVED: (
        "Callbacks accepted and put in the event stream (answered 200), by event type.",
        ("event",),
    ),
    CALLBACKS_REFUSED: (
        "Requests to the callback paths that were refused, by HTTP status and reason.",
        ("status", "reason"),
    ),
    EVENTS_APPLIED: (
        "Callback events the state machine stored, by what became of them (applied, "
        "repeat, ignored, orphan; malformed and failed: dropped, see the worker's log).",
        ("disposition",),
    ),
    ATTEMPTS_FINISHED: (
        "Attempts that reached a final status (ended, failed, withdrawn), by status and "
        "the result they finished with.",
        ("status", "result"),
    ),
    RESPONSES: (
        "Keys pressed in answer to a call script, by the label of the key (none: no key, "
        "or one not listed).",
        ("label",),
    ),
    CALLER_IDS_REMOVED: (
        "Caller ids taken out of their campaign's pool because the carrier refused them "
        "(number-access-denied), by carrier code.",
        ("code",),
    ),
    CONTROL_REQUESTS: (
        "What drove calls after their creation, by kind (bxml-answer, bxml-gather: "
        "documents the receiver served; hangup, read, list: requests to the carrier on "
        "the account's non-create budget) and outcome (ok, error, rate-limited).",
        ("kind", "outcome"),
    ),
}
EVENT_LAG_HELP = (
    "Seconds from the receiver accepting a callback to the state machine having applied "
    "it (committed); wall clocks of the receiver and worker machines."
)
ANSWER_TO_SCRIPT_HELP = (
    "Seconds from a scripted call's answer (the carrier's event time) to the receiver "
    "answering it with the script's first verb: the silence a person hears after hello."
)


def _labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


def _field(key: Key) -> str:
    name, labels = key
    return json.dumps([name, dict(labels)], separators=(",", ":"), sort_keys=True)


def _unfield(raw: bytes | str) -> Key | None:
    try:
        name, labels = json.loads(raw)
        return str(name), tuple(sorted((str(k), str(v)) for k, v in labels.items()))
    except (ValueError, TypeError, AttributeError):
        return None  # not ours: ignore rather than fail a scrape


# ---------------------------------------------------------------------- recording


class Recorder:
    """This process's unsent counts, and the thread that adds them to Redis."""

    def __init__(self, client_factory: Callable[[], Any] | None, interval: float = FLUSH_SECONDS):
        self._factory = client_factory
        self._interval = interval
        self._client: Any = None
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child: the parent's counts are the parent's to send.
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counts: dict[Key, float] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._client = None

    @property
    def enabled(self) -> bool:
        return self._factory is not None

    def add(self, items: Iterable[tuple[Key, float]]) -> None:
        if self._factory is None:
            return
        with self._lock:
            counts = self._counts
            for key, value in items:
                counts[key] = counts.get(key, 0) + value
            if self._thread is None:
                # The client now, not at the first flush: the last flush may run at
                # exit, when the Redis client can no longer be made.
                try:
                    self.client()
                except Exception as exc:
                    log.debug("metrics: no Redis client: %s", exc)
                self._thread = threading.Thread(
                    target=self._run, name="dialer-metrics", daemon=True
                )
                self._thread.start()

    def pending(self) -> dict[Key, float]:
        with self._lock:
            return dict(self._counts)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def client(self) -> Any:
        if self._client is None and self._factory is not None:
            self._client = self._factory()
        return self._client

    def flush(self) -> bool:
        """Add this process's counts to Redis; False (counts kept) if Redis failed."""
        if self._factory is None:
            return True
        with self._flush_lock:  # one flush at a time, so a retry never overtakes
            with self._lock:
                counts, self._counts = self._counts, {}
            if not counts:
                return True
            try:
                # MULTI/EXEC: all or nothing, so counts put back after a failure are
                # never counted twice.
                pipe = self.client().pipeline(transaction=True)
                for key, value in counts.items():
                    if isinstance(value, int):
                        pipe.hincrby(KEY, _field(key), value)
                    else:
                        pipe.hincrbyfloat(KEY, _field(key), value)
                pipe.execute()
                return True
            except Exception as exc:  # best effort: never fail the caller
                log.debug("metrics: could not flush %d counts to Redis: %s", len(counts), exc)
                with self._lock:
                    for key, value in counts.items():
                        self._counts[key] = self._counts.get(key, 0) + value
                return False

    def stop(self) -> None:
        self._stop.set()
        self.flush()


def _redis_factory(url: str) -> Callable[[], Any] | None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None  # the demo's memory:// setup: nothing to share counts with

    def make() -> Any:
        import redis

        # Short timeouts: a flush that cannot reach Redis gives up and tries next time.
        return redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)

    return make


_recorder: Recorder | None = None
_recorder_lock = threading.Lock()


def recorder() -> Recorder:
    global _recorder
    if _recorder is None:
        with _recorder_lock:
            if _recorder is None:
                _recorder = Recorder(_redis_factory(settings.get().redis_url))
    return _recorder


def reset(new: Recorder | None = None) -> None:
    """Replace the process's recorder (tests, or after a settings change)."""
    global _recorder
    with _recorder_lock:
        old, _recorder = _recorder, new
    if old is not None:
        old.stop()


def _after_fork() -> None:
    if _recorder is not None:
        _recorder._reset()


def _at_exit() -> None:
    if _recorder is not None:
        _recorder.stop()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_at_exit)


# -------------------------------------------------------------------- the hooks
# Each is one line at its call site and never raises.

_CREATED: Key = (CALLS_CREATED, ())


def call_created() -> None:
    recorder().add(((_CREATED, 1),))


def carrier_error(exc: Any) -> None:
    """A failed create request (a ``CarrierError``)."""
    status = "none" if exc.status is None else str(exc.status)
    code = (exc.code or "none")[:64]
    action = getattr(exc.action, "value", str(exc.action))
    recorder().add((((CARRIER_ERRORS, _labels(status=status, code=code, action=action)), 1),))


def rate_limit_wait(reason: str, seconds: float) -> None:
    labels = (("reason", reason),)
    recorder().add(
        (
            ((RATE_LIMIT_WAITS, labels), 1),
            ((RATE_LIMIT_WAIT_SECONDS, labels), max(0.0, float(seconds))),
        )
    )


def callback(status: int, reason: str, event_type: str | None = None) -> None:
    """A request to a callback path, as the receiver answered it."""
    if status == 200:
        event = event_type if event_type in KNOWN_EVENTS else "other"
        recorder().add((((CALLBACKS_RECEIVED, (("event", event),)), 1),))
    else:
        key = (CALLBACKS_REFUSED, _labels(status=str(status), reason=reason))
        recorder().add(((key, 1),))


def event_applied(disposition: str, received_at: str | datetime | None) -> None:
    """A callback event stored by the state machine, ``received_at`` as the receiver
    stamped it; call once the transaction committed."""
    events_applied(((disposition, received_at),))


def events_applied(applied: Iterable[tuple[str, str | datetime | None]]) -> None:
    """Many events committed together: (disposition, received_at) each, in one update
    of the process's counts."""
    items: list[tuple[Key, float]] = []
    now = clock.now()
    for disposition, received_at in applied:
        items.append(((EVENTS_APPLIED, (("disposition", disposition),)), 1))
        try:
            at = (
                datetime.fromisoformat(received_at) if isinstance(received_at, str) else received_at
            )
            if at is None:
                continue
            lag = max(0.0, (now - at).total_seconds())
        except (TypeError, ValueError):
            continue  # a stamp that is not a time: count the event, not its lag
        le = next((b for b in LAG_BUCKETS if lag <= b), math.inf)
        items += [((EVENT_LAG + "_bucket", (("le", _le(le)),)), 1), ((EVENT_LAG + "_sum", ()), lag)]
    if items:
        recorder().add(items)


def attempts_finished(status: str, result: str | None, n: int = 1) -> None:
    if n > 0:
        key = (ATTEMPTS_FINISHED, _labels(status=str(status), result=str(result or "none")))
        recorder().add(((key, n),))


def response(label: str | None) -> None:
    label = (label or "none")[:64]
    recorder().add((((RESPONSES, (("label", label),)), 1),))


def caller_id_removed(code: str | None) -> None:
    recorder().add((((CALLER_IDS_REMOVED, (("code", (code or "none")[:64]),)), 1),))


def control_request(kind: str, outcome: str) -> None:
    recorder().add((((CONTROL_REQUESTS, _labels(kind=kind, outcome=outcome)), 1),))


def answer_to_script(seconds: float) -> None:
    """From the carrier's answer (the event's time) to the receiver's script document."""
    seconds = max(0.0, seconds)
    le = next((b for b in LAG_BUCKETS if seconds <= b), math.inf)
    recorder().add(
        (
            ((ANSWER_TO_SCRIPT + "_bucket", (("le", _le(le)),)), 1),
            ((ANSWER_TO_SCRIPT + "_sum", ()), seconds),
        )
    )


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


# ------------------------------------------------------------------- exposition


def read_store(client: Any) -> dict[Key, float]:
    """The fleet's counts, as Redis holds them."""
    out: dict[Key, float] = {}
    for raw_field, raw_value in client.hgetall(KEY).items():
        key = _unfield(raw_field)
        if key is not None:
            out[key] = float(raw_value)
    return out


def read_database() -> tuple[dict[str, int], dict[str, int]]:
    """(in-flight attempts by status, campaigns by state), cheaply (see the module doc)."""
    from sqlalchemy import func, select

    from dialer.store import db, dialects
    from dialer.store.models import Attempt, Campaign

    with db.session_scope() as session:
        # A scrape must never hold a connection for long, whatever the table holds.
        dialects.of(session).limit_statement_time(session, 2000)
        attempts = dict(
            session.execute(
                select(Attempt.status, func.count())
                .where(Attempt.status.in_(IN_FLIGHT))
                .group_by(Attempt.status)
            ).all()
        )
        campaigns = dict(
            session.execute(select(Campaign.state, func.count()).group_by(Campaign.state)).all()
        )
    return attempts, campaigns


class FleetCollector:
    """A prometheus_client collector that reads the fleet's numbers at scrape time."""

    def __init__(
        self,
        store: Callable[[], dict[Key, float]],
        database: Callable[[], tuple[dict[str, int], dict[str, int]]],
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._database = database
        self._backlog = backlog

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        up = GaugeMetricFamily(
            "dialer_metrics_source_up",
            "Whether this scrape could read the source (redis: counters; database: gauges).",
            labels=["source"],
        )
        try:
            stored: dict[Key, float] | None = self._store()
        except Exception as exc:
            log.debug("metrics: cannot read counters from Redis: %s", exc)
            stored = None
        up.add_metric(["redis"], 0 if stored is None else 1)
        try:
            in_flight, campaigns = self._database()
            db_ok = True
        except Exception as exc:
            log.debug("metrics: cannot read gauges from the database: %s", exc)
            in_flight, campaigns, db_ok = {}, {}, False
        up.add_metric(["database"], 1 if db_ok else 0)
        yield up

        if stored is not None:
            by_name: dict[str, list[tuple[Labels, float]]] = {}
            for (name, labels), value in stored.items():
                by_name.setdefault(name, []).append((labels, value))
            for name, (doc, label_names) in COUNTERS.items():
                family = CounterMetricFamily(name, doc, labels=list(label_names))
                rows = by_name.get(name, [])
                if not label_names and not rows:
                    rows = [((), 0.0)]
                for labels, value in sorted(rows):
                    given = dict(labels)
                    family.add_metric([given.get(n, "") for n in label_names], value)
                yield family
            yield _histogram(HistogramMetricFamily, by_name)
            yield _histogram(
                HistogramMetricFamily, by_name, ANSWER_TO_SCRIPT, ANSWER_TO_SCRIPT_HELP
            )
            if self._backlog is not None:
                try:
                    waiting: int | None = self._backlog()
                except Exception as exc:
                    log.debug("metrics: cannot read the event backlog: %s", exc)
                    waiting = None
                if waiting is not None:
                    backlog = GaugeMetricFamily(
                        EVENT_BACKLOG,
                        "Callback events accepted and not yet applied: the event stream's "
                        "length (applied events leave it).",
                    )
                    backlog.add_metric([], waiting)
                    yield backlog

        if db_ok:
            attempts = GaugeMetricFamily(
                "dialer_attempts",
                "Attempts not yet finished, by status (read from the database).",
                labels=["status"],
            )
            for status in IN_FLIGHT:
                attempts.add_metric([status], in_flight.get(status, 0))
            yield attempts
            states = GaugeMetricFamily(
                "dialer_campaigns", "Campaigns by state (read from the database).", labels=["state"]
            )
            for state, count in sorted(campaigns.items()):
                states.add_metric([state], count)
            yield states


def _histogram(
    family_cls: Any,
    by_name: dict[str, list[tuple[Labels, float]]],
    name: str = EVENT_LAG,
    doc: str = EVENT_LAG_HELP,
) -> Any:
    per_bucket = {dict(labels).get("le"): v for labels, v in by_name.get(name + "_bucket", [])}
    buckets, running = [], 0.0
    for bound in (*LAG_BUCKETS, math.inf):
        running += per_bucket.get(_le(bound), 0.0)
        buckets.append((_le(bound), running))
    total = sum(v for _, v in by_name.get(name + "_sum", []))
    return family_cls(name, doc, buckets=buckets, sum_value=total)


def exposition() -> tuple[bytes, str]:
    """The fleet's metrics in Prometheus text format: (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    rec = recorder()
    # This process's own counts first, so a scrape sees them; if Redis just failed
    # that, do not wait for it a second time.
    flushed = rec.flush()

    def store() -> dict[Key, float]:
        client = rec.client()
        if client is None or not flushed:
            raise RuntimeError("Redis for metrics is not configured or not reachable")
        return read_store(client)

    registry = CollectorRegistry(auto_describe=False)

    def backlog() -> int:
        from dialer.callbacks import eventstream

        return eventstream.stream("receiver").backlog()

    registry.register(FleetCollector(store, read_database, backlog))
    return generate_latest(registry), CONTENT_TYPE_LATEST
