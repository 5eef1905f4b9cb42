"""Reconciling: expired claims, calls past their deadline, ambiguous sends."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dialer.state.common import GRACE, LIVE_RECHECK, adopt, count_finished, is_current, lock_in
from dialer.state.events import apply_orphans
from dialer.store import db
from dialer.store.models import Attempt, AttemptStatus, ContactStatus


def expire_leases(session: Session, now: datetime) -> int:
    """A claim whose worker vanished may or may not have sent: treat it as ambiguous."""
    return db.rowcount(
        session.execute(
            update(Attempt)
            .where(Attempt.status == AttemptStatus.SENDING, Attempt.lease_until < now)
            .values(status=AttemptStatus.UNKNOWN, error="lease expired", lease_until=None)
            .execution_options(synchronize_session=False)
        )
    )


def overdue_calls(session: Session, now: datetime, limit: int) -> list[tuple[int, str]]:
    """Created or answered attempts past their deadline: (attempt id, call id)."""
    return [
        (aid, call_id)
        for aid, call_id in session.execute(
            select(Attempt.id, Attempt.call_id)
            .where(
                Attempt.status.in_([AttemptStatus.CREATED, AttemptStatus.ANSWERED]),
                Attempt.lease_until < now,
            )
            .order_by(Attempt.lease_until)
            .limit(limit)
        ).all()
        if call_id is not None
    ]


def check_again(session: Session, attempt_id: int, now: datetime) -> None:
    """The carrier says the call is still up: look again later, backing off."""
    since = session.scalar(
        select(func.coalesce(Attempt.answered_at, Attempt.created_at)).where(
            Attempt.id == attempt_id
        )
    )
    age = (now - since) if since is not None else GRACE
    at = now + min(LIVE_RECHECK, max(GRACE, age))
    session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id,
            Attempt.status.in_([AttemptStatus.CREATED, AttemptStatus.ANSWERED]),
        )
        .values(lease_until=at)
        .execution_options(synchronize_session=False)
    )


def resolve_unknown(session: Session, attempt_id: int, call_id: str | None, now: datetime) -> None:
    """Settle an ambiguous attempt from what the carrier shows.

    Found: the call exists, adopt it. Not found after the call's whole ringing time: it
    was never created, so the contact is due again, and the attempt does not count.
    """
    locked = lock_in(session, attempt_id, AttemptStatus.UNKNOWN)
    if locked is None:
        return
    contact, attempt = locked
    if call_id is not None:
        adopt(session, contact, attempt, call_id, now)
        apply_orphans(session, contact, attempt, now)
        return
    attempt.status, attempt.error = AttemptStatus.WITHDRAWN, "no such call at the carrier"
    count_finished(session, AttemptStatus.WITHDRAWN, None)
    if is_current(contact, attempt):
        contact.status, contact.due_at = ContactStatus.PENDING, now
