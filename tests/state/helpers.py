"""What the state-machine tests share: a running campaign, a sent attempt, carrier events
and the rows they touch. Every test that takes ``session`` runs on PostgreSQL and SQLite
(tests/state/conftest.py), each in a rolled-back transaction. Test modules import from
here, never from one another."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dialer.carrier.events import CallEvent, parse
from dialer.state import events, release, send, starting
from dialer.store import dialects
from dialer.store.models import Attempt, Campaign, CampaignState, Contact, ContactStatus
from dialer.store.models import CallEvent as CallEventRow

T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def make_campaign(session: Session, n: int = 3, **options) -> Campaign:
    """A running campaign of ``n`` pending contacts (``options`` set other columns)."""
    campaign = Campaign(
        **{
            "name": "t",
            "from_number": "+19195550000",
            "state": CampaignState.RUNNING,
            "created_at": T0,
            "started_at": T0,
            "columns": ["name"],
            "tag_fields": ["name"],
            **options,
        }
    )
    session.add(campaign)
    session.flush()
    session.add_all(
        Contact(
            campaign_id=campaign.id,
            row=i + 1,
            phone=f"919555{1000 + i}",
            e164=f"+1919555{1000 + i}",
            status=ContactStatus.PENDING,
            due_at=T0,
            context={"name": f"n{i}"},
            attempts=0,
        )
        for i in range(n)
    )
    session.flush()
    return campaign


def start(session: Session, campaign: Campaign, now: datetime = T0, resume: bool = False) -> None:
    """``dialer.state.starting`` (the driver alone, as ``dialer campaign start`` runs it) on
    the session's own connection, so inside the test's transaction (a savepoint); then
    the campaign is read again."""
    transition = starting.resume if resume else starting.start
    conn = session.connection().connection.dbapi_connection
    transition(conn, dialects.of(session).driver, campaign.id, now)
    session.refresh(campaign)


def sent_attempt(session: Session, campaign: Campaign, call_id: str | None = "c-1") -> Attempt:
    """Release, claim and (unless call_id is None) record one created call."""
    [aid] = release.release_due(session, campaign, 1, T0)
    order = send.claim_for_send(session, aid, T0, LEASE)
    assert order is not None
    if call_id is not None:
        send.record_created(session, aid, call_id, T0)
    return session.get(Attempt, aid)


def event(
    kind: str,
    call_id: str = "c-1",
    cause: str | None = None,
    attempt_id: int | None = None,
    at: datetime | None = None,
) -> CallEvent:
    payload = {
        "eventType": kind,
        "callId": call_id,
        "from": "+19195550000",
        "to": "+19195551000",
        "time": (at or T0).isoformat().replace("+00:00", "Z"),
    }
    if cause:
        payload["cause"] = cause
    if attempt_id is not None:
        payload["tag"] = json.dumps({"attempt": attempt_id, "campaign": 1})
    return parse(payload)


def apply(session: Session, ev: CallEvent, now: datetime = T0) -> str:
    return events.apply_event(session, ev, now, now)


def rows(session: Session, attempt: Attempt) -> tuple:
    session.flush()
    session.expire_all()
    a = session.get(Attempt, attempt.id)
    c = session.get(Contact, a.contact_id)
    return (
        a.status,
        a.result,
        a.cause,
        a.call_id,
        a.answered_at,
        a.timed_out_at,
        a.hangup_cause,
        c.status,
        c.due_at,
        c.attempts,
        c.reason,
    )


def campaign_rows(session: Session, campaign_id: int) -> tuple:
    """Every row a campaign's events can touch, with ids as positions (two runs in
    rolled-back savepoints get different ids from the sequences)."""
    session.flush()
    session.expire_all()
    attempts_ = session.scalars(
        select(Attempt).where(Attempt.campaign_id == campaign_id).order_by(Attempt.id)
    ).all()
    position = {a.id: i for i, a in enumerate(attempts_)}
    contacts = session.scalars(
        select(Contact).where(Contact.campaign_id == campaign_id).order_by(Contact.id)
    ).all()
    calls = {a.call_id for a in attempts_} | {"c-nobody"}
    stored = session.scalars(
        select(CallEventRow)
        .where(
            CallEventRow.call_id.in_([c for c in calls if c])
            | CallEventRow.attempt_id.in_(list(position))
        )
        .order_by(CallEventRow.id)
    ).all()
    return (
        [
            (
                a.status, a.result, a.cause, a.call_id, a.created_at, a.answered_at,
                a.timed_out_at, a.ended_at, a.hangup_cause, a.lease_until,
            )
            for a in attempts_
        ],
        [
            (c.status, c.due_at, c.ready_at, c.attempts, c.reason, position.get(c.last_attempt_id))
            for c in contacts
        ],
        [
            (position.get(e.attempt_id), e.call_id, e.event_type, e.disposition, e.received_at,
             e.applied_at, {k: v for k, v in e.payload.items() if k != "tag"},
             "tag" in e.payload)  # the tag names the attempt by its id
            for e in stored
        ],
    )  # fmt: skip


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements run inside the block (an executemany counts once)."""
    seen: list[str] = []

    def count(conn, cursor, statement, *_) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    sa_event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa_event.remove(Engine, "before_cursor_execute", count)
