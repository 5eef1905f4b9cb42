"""Releasing work: due pending contacts become queued attempts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dialer.store import dialects
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
    (which has neither, and serialises writers instead). The statements are the
    dialect's (``dialer.store.dialects``: on PostgreSQL one statement).
    """
    if limit <= 0:
        return []
    return dialects.of(session).release_due(session, campaign.id, campaign.run or 1, limit, now)


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
