"""The do-not-call lists as the state machine applies them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dialer.store import db
from dialer.store.models import Contact, ContactStatus, Suppression


def is_listed(session: Session, e164: str | None, campaign_id: int) -> bool:
    """Whether a number is on the global do-not-call list or the campaign's own."""
    if e164 is None:
        return False
    return (
        session.scalar(
            select(Suppression.id)
            .where(
                Suppression.e164 == e164,
                (Suppression.campaign_id.is_(None)) | (Suppression.campaign_id == campaign_id),
            )
            .limit(1)
        )
        is not None
    )


def suppress_listed(session: Session, campaign_id: int | None = None) -> int:
    """Pending contacts whose number is on a do-not-call list become ``suppressed``.

    ``campaign_id`` None looks at every campaign (after a global list grew).
    """
    listed = select(Suppression.e164).where(
        Suppression.e164 == Contact.e164,
        (Suppression.campaign_id.is_(None)) | (Suppression.campaign_id == Contact.campaign_id),
    )
    stmt = (
        update(Contact)
        .where(Contact.status == ContactStatus.PENDING, listed.exists())
        .values(status=ContactStatus.SUPPRESSED, due_at=None, reason="on the do-not-call list")
        .execution_options(synchronize_session=False)
    )
    if campaign_id is not None:
        stmt = stmt.where(Contact.campaign_id == campaign_id)
    return db.rowcount(session.execute(stmt))


def opt_out(session: Session, e164: str, now: datetime) -> int:
    """A person pressed the opt-out key: their number goes on the global do-not-call list
    in this transaction, and its pending contacts in every campaign become ``suppressed``
    (what ``dnc add`` does, for one number: a probe of ``ix_contact_e164``). Contacts
    another transaction holds (being released right now) are skipped, not waited for:
    the claim before each send checks the list and withdraws them (dialer.state.send).
    Returns how many contacts it suppressed."""
    from dialer.store import dialects

    session.execute(
        dialects.of(session)
        .insert_ignoring_conflicts(Suppression)
        .values(campaign_id=None, e164=e164, added_at=now)
    )
    pending = (
        select(Contact.id)
        .where(Contact.e164 == e164, Contact.status == ContactStatus.PENDING)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Contact)
        .where(Contact.id.in_(pending.scalar_subquery()))
        .values(status=ContactStatus.SUPPRESSED, due_at=None, reason=OPTED_OUT)
        .execution_options(synchronize_session=False)
    )
    return db.rowcount(session.execute(stmt))


OPTED_OUT = "opted out (pressed the opt-out key)"
