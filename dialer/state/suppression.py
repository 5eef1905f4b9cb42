"""The do-not-call lists as the state machine applies them."""

from __future__ import annotations

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
