"""``--max-duration``: answered calls still up past their campaign's limit, and the
record that the dialer asked the carrier to end them (so it asks once, and again only
if the call is still up ``RESEND_AFTER`` later)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dialer.store.models import Attempt, AttemptStatus, Campaign

RESEND_AFTER = timedelta(seconds=30)


def calls_to_end(session: Session, now: datetime, limit: int = 100) -> list[tuple[int, str]]:
    """(attempt id, call id) of calls up longer than their campaign's --max-duration.

    Answered attempts are the calls up now (a range of ``ix_attempt_status_lease``); only
    those of campaigns with a limit are read, oldest answer first."""
    rows = session.execute(
        select(
            Attempt.id,
            Attempt.call_id,
            Attempt.answered_at,
            Attempt.hangup_sent_at,
            Campaign.max_duration,
        )  # fmt: skip
        .join(Campaign, Campaign.id == Attempt.campaign_id)
        .where(
            Attempt.status == AttemptStatus.ANSWERED,
            Campaign.max_duration.is_not(None),
            Attempt.call_id.is_not(None),
        )
        .order_by(Attempt.answered_at)
    ).all()
    due: list[tuple[int, str]] = []
    for attempt_id, call_id, answered_at, sent_at, max_duration in rows:
        if call_id is None or answered_at is None or max_duration is None:
            continue
        if answered_at + timedelta(seconds=max_duration) > now:
            continue
        if sent_at is not None and sent_at + RESEND_AFTER > now:
            continue
        due.append((attempt_id, call_id))
        if len(due) >= limit:
            break
    return due


def hangup_sent(session: Session, attempt_ids: list[int], now: datetime) -> None:
    if attempt_ids:
        session.execute(
            update(Attempt)
            .where(Attempt.id.in_(attempt_ids))
            .values(hangup_sent_at=now)
            .execution_options(synchronize_session=False)
        )
