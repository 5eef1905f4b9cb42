"""A campaign's status, read with the database driver alone.

``dialer campaign status`` (and ``--watch``) and ``api.status`` both come here: one
implementation. It imports the driver (psycopg 3, or sqlite3), ``dialer.policy.rules`` for the
calling hours and the status enums, and nothing heavier: no SQLAlchemy, no ORM models,
no phonenumbers, no Celery (issue 7: < 200 ms on a million contacts, running; the
driver's own import is most of what is left).

The counts cost O(statuses), not O(contacts): on PostgreSQL they are the sums of the
tallies its triggers keep (``dialer.store.tally``, migration 0003): contacts by status (and,
for pending ones, by time-zone key, for the calling-window part) and calls by run. On
SQLite (the demo, trials: small) the rows are counted directly. Everything is read in
one snapshot (on PostgreSQL one statement, one round trip), so the state, the counts
and the calls agree. The statements, one set per dialect, are in
``dialer.store.dialects.drivers``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dialer import clock
from dialer.errors import ApiError
from dialer.store.dialects import drivers
from dialer.store.dialects.drivers import Driver, Rows, decode_json
from dialer.store.enums import ContactStatus

__all__ = ["Reader", "WindowWait", "read", "window_wait"]


@dataclass(frozen=True)
class Campaign:
    """The columns of a campaign the status shows (and ``dialer.policy.rules`` reads)."""

    id: int
    name: str
    state: str
    state_reason: str | None
    from_number: str
    window: str | None
    days: str | None
    timezone: str
    cps: float | None
    max_concurrent: int | None
    max_attempts: int
    retry_delay: int
    call_timeout: int | None
    schedule: str | None
    run: int
    say: str | None
    play: str | None
    voice: str | None
    locale: str | None
    gender: str | None
    keys: list[list[str]] | None
    goodbye: str | None
    transfer_to: str | None
    max_duration: int | None
    zone_keys: list[str | None]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_run_at: datetime | None


@dataclass(frozen=True)
class WindowWait:
    waiting: int  # pending contacts whose calling window is shut now
    next_opening: datetime | None  # the soonest of their windows to open
    never: int  # of those, contacts whose window never holds in all their zones


def window_wait(campaign: Any, pending: Mapping[str | None, int], now: datetime) -> WindowWait:
    """Who waits for a calling window, and when the next one opens, from the pending
    contacts counted by time-zone key (``Contact.zones``; None: the campaign's zone)."""
    if not campaign.window and not campaign.days:
        return WindowWait(0, None, 0)  # any time is calling time (rules.Hours.parse)
    from dialer.policy import rules  # only for campaigns with hours: ~7 ms of the command's start

    hours = rules.campaign_hours(campaign)
    if hours is None:
        return WindowWait(0, None, 0)
    waiting = never = 0
    opening: datetime | None = None
    for key in dict.fromkeys(campaign.zone_keys or [None]):
        n = pending.get(key, 0)
        if not n or rules.is_open(hours, rules.contact_zones(campaign, key), now):
            continue
        due = rules.when_due(campaign, key, now)
        waiting += n
        if due.never:
            never += n
        elif opening is None or due.due_at < opening:
            opening = due.due_at
    return WindowWait(waiting, opening, never)


def read(
    conn: Any,
    campaign_id: int,
    run: int | None = None,
    *,
    driver: Driver,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The status of a campaign (its current run, or past run ``run``) as ``api.status``
    returns it. ``conn`` is a DB-API connection of ``driver`` (``dialects.drivers``) not
    in a transaction; it is left that way."""
    cursor = conn.cursor()
    try:
        found = driver.fetch_status(cursor, campaign_id)
    finally:
        cursor.close()
        conn.rollback()
    if found is None:
        raise ApiError(f"no campaign with id {campaign_id}")
    return _status(*found, campaign_id=campaign_id, run=run, now=now or clock.now())


def _status(
    columns: tuple[Any, ...],
    run_rows: Rows,
    call_rows: Rows,
    contact_rows: Rows,
    response_rows: Rows,
    caller_rows: Rows,
    resend_rows: Rows,
    *,
    campaign_id: int,
    run: int | None,
    now: datetime,
) -> dict[str, Any]:
    call_options = dict(
        zip(
            ("local_presence", "record", "record_format", "record_max", "transcribe",
             "sip_headers", "callback_timeout"),
            columns[-drivers.CALL_COLUMNS :],
            strict=True,
        )
    )  # fmt: skip
    call_options["sip_headers"] = decode_json(call_options["sip_headers"])
    columns = columns[: -drivers.CALL_COLUMNS]
    (*fields, keys, goodbye, transfer_to, max_duration) = columns[:-5]
    (zone_keys, created, started, finished, next_run) = columns[-5:]
    campaign = Campaign(
        *(
            *fields,
            decode_json(keys),
            goodbye,
            transfer_to,
            max_duration,
            decode_json(zone_keys) or [],
            _utc(created),
            _utc(started),
            _utc(finished),
            _utc(next_run),
        )
    )
    runs = [
        {
            "number": number,
            "scheduled_for": _iso(_utc(scheduled)),
            "started_at": _iso(_utc(run_started)),
            "finished_at": _iso(_utc(run_finished)),
            "contacts": decode_json(summary),
        }
        for number, scheduled, run_started, run_finished, summary in run_rows
    ]
    calls = {number: int(n) for number, n in call_rows}
    if run is not None and run != campaign.run:
        past = next((r for r in runs if r["number"] == run), None)
        if past is None:
            raise ApiError(
                f"campaign {campaign_id} has no run {run} "
                f"(runs: {', '.join(str(r['number']) for r in runs) or 'none yet'})"
            )
        return _run_status(campaign, past, calls.get(run, 0), _responses(response_rows, run))

    counts: dict[str, int] = {}
    pending: dict[str | None, int] = {}
    for status, zones, n in contact_rows:
        counts[status] = counts.get(status, 0) + int(n)
        if status == ContactStatus.PENDING:
            pending[zones] = pending.get(zones, 0) + int(n)
    wait = window_wait(campaign, pending, now)
    return {
        "id": campaign.id,
        "name": campaign.name,
        "state": campaign.state,
        "state_reason": campaign.state_reason,
        "from": campaign.from_number,
        "total": sum(counts.values()),
        "contacts": _by_status(counts),
        "calls": sum(calls.values()),
        "created_at": campaign.created_at.isoformat(),
        "started_at": _iso(campaign.started_at),
        "finished_at": _iso(campaign.finished_at),
        "rules": {
            "window": campaign.window,
            "days": campaign.days,
            "timezone": campaign.timezone,
            "cps": campaign.cps,
            "max_concurrent": campaign.max_concurrent,
            "max_attempts": campaign.max_attempts,
            "retry_delay": campaign.retry_delay,
            "call_timeout": campaign.call_timeout,
            "schedule": campaign.schedule,
            **{k: v for k, v in call_options.items() if v not in (None, False)},
        },
        "caller_ids": _caller_ids(caller_rows),
        "script": _script(campaign),
        "responses": _responses(response_rows, campaign.run),
        "window": {
            "waiting": wait.waiting,
            "next_opening": _iso(wait.next_opening),
            "never_opens": wait.never,
        },
        "resend": _resend(resend_rows),
        "run": campaign.run,
        "next_run": _iso(campaign.next_run_at),
        "runs": runs,
    }


def _resend(rows: Rows) -> dict[str, Any]:
    """Calls waiting to be sent again because nothing was created, and why (the newest
    reason): the carrier out of reach, a 5xx, a rate limit (dialer.worker.dialing)."""
    waiting, reason = next(iter(rows), (0, None))
    return {"waiting": int(waiting or 0), "reason": reason if waiting else None}


def _script(campaign: Campaign) -> dict[str, Any]:
    """The call script's options that are set (docs/interface.md, "What an answered call
    hears"); {} for a campaign without one."""
    shown: dict[str, Any] = {
        name: getattr(campaign, name)
        for name in ("say", "play", "voice", "locale", "gender", "goodbye", "transfer_to")
        if getattr(campaign, name) is not None
    }
    if campaign.keys:
        shown["keys"] = ",".join(f"{k}={label}" for k, label in campaign.keys)
    if campaign.max_duration is not None:
        shown["max_duration"] = campaign.max_duration
    return shown


def _caller_ids(rows: Rows) -> list[dict[str, Any]]:
    """The caller-id pool, in its order: each number's calls (all runs), label, state
    (active or removed) and why it was removed (docs/interface.md, "Caller ids")."""
    return [
        {
            "number": e164,
            "label": label,
            "state": state,
            "calls": int(calls or 0),
            "reason": reason,
            "removed_at": _iso(_utc(removed_at)),
        }
        for e164, label, state, reason, removed_at, calls in rows
    ]


def _responses(rows: Rows, run: int) -> dict[str, int]:
    """The run's responses by label (the labels of the keys pressed)."""
    out: dict[str, int] = {}
    for number, label, n in rows:
        if number == run and int(n):
            out[label] = out.get(label, 0) + int(n)
    return dict(sorted(out.items()))


def _run_status(
    campaign: Campaign, run: dict[str, Any], calls: int, responses: dict[str, int]
) -> dict[str, Any]:
    """A finished run: its contacts by status as they stood when it finished."""
    counts = run["contacts"] or {}
    return {
        "id": campaign.id,
        "name": campaign.name,
        "state": "completed" if run["finished_at"] else campaign.state,
        "run": run["number"],
        "total": sum(counts.values()),
        "contacts": _by_status(counts),
        "calls": calls,
        "responses": responses,
        "scheduled_for": run["scheduled_for"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
    }


def _by_status(counts: Mapping[str, int]) -> dict[str, int]:
    return {s.value: counts.get(s.value, 0) for s in ContactStatus}


def _utc(value: Any) -> datetime | None:
    """Timestamps in UTC, as the models give them: psycopg returns them in the session's
    time zone, SQLite keeps naive UTC text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


# ------------------------------------------------------ one connection, kept


class Reader:
    """``read`` over one connection kept between calls (``campaign status --watch``),
    opened on first use and opened again once if it was lost (a database restart)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._driver: Driver | None = None

    def status(self, campaign_id: int, run: int | None = None) -> dict[str, Any]:
        for retry in (False, True):
            if self._conn is None or self._driver is None:
                self._conn, self._driver = drivers.connect(self.url)
            try:
                return read(self._conn, campaign_id, run, driver=self._driver)
            except self._driver.connection_errors():
                self.close()
                if retry:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # already gone
                conn.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
