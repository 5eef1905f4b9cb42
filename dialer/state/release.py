"""Releasing work: due pending contacts become queued attempts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from dialer.state.common import is_postgres
from dialer.store.models import (
    LIVE_ATTEMPT,
    Attempt,
    AttemptStatus,
    Campaign,
    Contact,
    ContactStatus,
)


def release_due(session: Session, campaign: Campaign, limit: int, now: datetime) -> list[int]:
    """Turn up to ``limit`` due pending contacts into queued attempts; return their ids.

    ``FOR UPDATE SKIP LOCKED`` lets two ticks run at once without taking the same
    contact; the conditional UPDATE on ``status = 'pending'`` makes it safe on SQLite
    (which has neither, and serialises writers instead).
    """
    if limit <= 0:
        return []
    if is_postgres(session):
        # One statement: lock, insert the attempts, point the contacts at them.
        made = session.scalars(
            _RELEASE,
            {"c": campaign.id, "now": now, "n": limit, "run": campaign.run or 1},
        ).all()
        return sorted(made)  # ids in insertion order, which is due order
    ids = session.scalars(
        select(Contact.id)
        .where(
            Contact.campaign_id == campaign.id,
            Contact.status == ContactStatus.PENDING,
            Contact.due_at <= now,
        )
        .order_by(Contact.due_at, Contact.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        return []
    claimed = session.execute(
        update(Contact)
        .where(Contact.id.in_(ids), Contact.status == ContactStatus.PENDING)
        .values(status=ContactStatus.DIALING, due_at=None, ready_at=None)
        .returning(Contact.id, Contact.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return []
    created = session.execute(
        insert(Attempt).returning(Attempt.id, Attempt.contact_id),
        [
            {
                "contact_id": cid,
                "campaign_id": campaign.id,
                "number": made + 1,
                "run": campaign.run or 1,
                "status": AttemptStatus.QUEUED,
                "queued_at": now,
                "sends": 0,
            }
            for cid, made in claimed
        ],
    ).all()
    session.execute(update(Contact), [{"id": cid, "last_attempt_id": aid} for aid, cid in created])
    return [aid for aid, _ in created]


_RELEASE = text(
    """
    WITH picked AS (
        SELECT id, attempts, due_at FROM contact
         WHERE campaign_id = :c AND status = 'pending' AND due_at <= :now
         ORDER BY due_at, id
         LIMIT :n
           FOR UPDATE SKIP LOCKED
    ), made AS (
        INSERT INTO attempt (contact_id, campaign_id, number, run, status, queued_at, sends)
        SELECT id, :c, attempts + 1, :run, 'queued', :now, 0 FROM picked ORDER BY due_at, id
        RETURNING id, contact_id
    )
    UPDATE contact AS c
       SET status = 'dialing', due_at = NULL, ready_at = NULL, last_attempt_id = made.id
      FROM made
     WHERE c.id = made.contact_id
    RETURNING made.id
    """
)


def has_due_work(session: Session, campaign_id: int, now: datetime) -> bool:
    """Whether the campaign has something to send now: queued attempts or due contacts."""
    queued = select(Attempt.id).where(
        Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED
    )
    due = select(Contact.id).where(
        Contact.campaign_id == campaign_id,
        Contact.status == ContactStatus.PENDING,
        Contact.due_at <= now,
    )
    return bool(session.scalar(select(queued.exists() | due.exists())))


def backlog(session: Session, campaign_id: int) -> tuple[int, int, int]:
    """(queued attempts, claimed ones not yet sent, live attempts that hold or may
    hold a call: the claimed ones included)."""
    rows = dict(
        session.execute(
            select(Attempt.status, func.count())
            .where(
                Attempt.campaign_id == campaign_id,
                Attempt.status.in_([AttemptStatus.QUEUED, *LIVE_ATTEMPT]),
            )
            .group_by(Attempt.status)
        ).all()
    )
    return (
        rows.get(AttemptStatus.QUEUED, 0),
        rows.get(AttemptStatus.SENDING, 0),
        sum(rows.get(s, 0) for s in LIVE_ATTEMPT),
    )
