"""Withdrawing queued attempts before they are sent (a pause, a cancel, a rule that now
forbids the call): they never count against --max-attempts."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dialer.policy import rules
from dialer.state.common import NEVER_OPEN, count_finished, is_current, lock_in
from dialer.store import db
from dialer.store.models import Attempt, AttemptStatus, Contact, ContactStatus

log = logging.getLogger(__name__)


def withdraw_for(
    session: Session,
    attempt_id: int,
    now: datetime,
    status: ContactStatus,
    due: rules.Due | None,
) -> None:
    """A queued attempt the rules now forbid is never sent and does not count: its
    contact is suppressed (do-not-call) or waits for its window to open again."""
    locked = lock_in(session, attempt_id, AttemptStatus.QUEUED)
    if locked is None:
        return
    contact, attempt = locked
    suppressed = status == ContactStatus.SUPPRESSED
    attempt.status, attempt.ended_at = AttemptStatus.WITHDRAWN, now
    attempt.error = "on the do-not-call list" if suppressed else "outside calling hours"
    count_finished(session, AttemptStatus.WITHDRAWN, None)
    if not is_current(contact, attempt):
        return
    if suppressed:
        contact.status, contact.due_at, contact.reason = status, None, "on the do-not-call list"
    else:
        assert due is not None
        contact.status, contact.due_at, contact.ready_at = status, due.due_at, due.ready_at
        contact.reason = NEVER_OPEN if due.never else None
    log.info(
        "attempt %s withdrawn before sending: %s",
        attempt_id,
        attempt.error,
        extra={"attempt": attempt_id, "contact": contact.id, "campaign": attempt.campaign_id},
    )


def withdraw_all_queued(
    session: Session, campaign_id: int, now: datetime, *, cancelled: bool
) -> None:
    """Set-based, whatever the backlog (an id list would meet the driver's limit of
    65,535 parameters). The caller holds the campaign row FOR UPDATE, and claims and
    releases take it FOR SHARE, so the set of queued attempts cannot change meanwhile."""
    queued = select(Attempt.contact_id).where(
        Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED
    )
    session.execute(
        update(Contact)
        .where(Contact.id.in_(queued), Contact.status == ContactStatus.DIALING)
        .values(**_released(now, cancelled))
        .execution_options(synchronize_session=False)
    )
    withdrawn = db.rowcount(
        session.execute(
            update(Attempt)
            .where(Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED)
            .values(**_withdrawn(now, cancelled))
            .execution_options(synchronize_session=False)
        )
    )
    count_finished(session, AttemptStatus.WITHDRAWN, None, withdrawn)


def withdraw_queued(
    session: Session, attempt_ids: list[int], now: datetime, *, cancelled: bool
) -> None:
    """Queued attempts of a paused or cancelled campaign are never sent."""
    if not attempt_ids:
        return
    withdrawn = (
        session.execute(
            update(Attempt)
            .where(Attempt.id.in_(attempt_ids), Attempt.status == AttemptStatus.QUEUED)
            .values(**_withdrawn(now, cancelled))
            .returning(Attempt.contact_id)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    if not withdrawn:
        return
    count_finished(session, AttemptStatus.WITHDRAWN, None, len(withdrawn))
    session.execute(
        update(Contact)
        .where(Contact.id.in_(withdrawn), Contact.status == ContactStatus.DIALING)
        .values(**_released(now, cancelled))
        .execution_options(synchronize_session=False)
    )


def _withdrawn(now: datetime, cancelled: bool) -> dict[str, object]:
    """An unsent attempt of a paused or cancelled campaign."""
    return {
        "status": AttemptStatus.WITHDRAWN,
        "ended_at": now,
        "error": "campaign cancelled" if cancelled else "campaign paused",
    }


def _released(now: datetime, cancelled: bool) -> dict[str, object]:
    """Its contact: cancelled with the campaign, or pending again, due at once."""
    if cancelled:
        return {"status": ContactStatus.CANCELLED, "due_at": None, "reason": "campaign cancelled"}
    return {"status": ContactStatus.PENDING, "due_at": now}
