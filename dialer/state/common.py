"""What the transition families share: the row locks, the counters, adopting a call."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer import metrics
from dialer.errors import CampaignStateError as CampaignStateError  # raised by the lean start too
from dialer.store import db, dialects
from dialer.store.models import Attempt, AttemptStatus, Campaign, Contact, ContactStatus

log = logging.getLogger(__name__)


# ``lease_until`` is the time by which an attempt should have moved on; past it, the
# sweep looks. For ``sending``, the claim's lease. For ``created``, the call's ringing
# time (callTimeout) plus a grace; for ``answered``, the next time to ask the carrier
# whether the call is still up (after GRACE, then doubling up to LIVE_RECHECK, so a
# long conversation costs a few reads). Both catch calls whose callbacks were lost (a
# broker restart, a receiver outage longer than the carrier's retries).
DEFAULT_CALL_TIMEOUT = 60  # docs/carrier.md: callTimeout default
GRACE = timedelta(seconds=30)
LIVE_RECHECK = timedelta(minutes=15)


class Row:
    """A locked row's columns as attributes, for the state machine's functions (which
    read and set attributes, as on a mapped object), remembering what it was: a batch
    is applied to these and written back in one statement per shape of change, without
    the ORM's per-object bookkeeping (half of apply_events' cost, PROFILE.md)."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)
        self._was = values

    if TYPE_CHECKING:  # the columns are set as attributes; typed as any

        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def changes(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_was" and self._was.get(k, v) != v}


# What the transitions take: a mapped row, or its columns as a Row (apply_events).
ContactRow = Contact | Row
AttemptRow = Attempt | Row


NEVER_OPEN = "the calling window never holds in all of this number's time zones"


def lock(session: Session, attempt_id: int) -> tuple[Contact, Attempt] | None:
    """Lock an attempt and its contact, always contact first, so writers never deadlock."""
    contact_id = session.scalar(select(Attempt.contact_id).where(Attempt.id == attempt_id))
    if contact_id is None:
        return None
    contact = session.scalars(
        select(Contact)
        .where(Contact.id == contact_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    attempt = session.scalars(
        select(Attempt)
        .where(Attempt.id == attempt_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return contact, attempt


def lock_in(session: Session, attempt_id: int, *statuses: str) -> tuple[Contact, Attempt] | None:
    """``lock``, but None unless the attempt is (still) in one of ``statuses``."""
    locked = lock(session, attempt_id)
    if locked is None or locked[1].status not in statuses:
        return None
    return locked


def log_ids(attempt: AttemptRow) -> dict[str, int]:
    """The ids a log line about this attempt carries (dialer.logs)."""
    return {"attempt": attempt.id, "campaign": attempt.campaign_id, "contact": attempt.contact_id}


def count_finished(session: Session, status: str, result: str | None, n: int = 1) -> None:
    """Count attempts reaching a final status once the transaction that put them there
    commits (a rolled-back one counts nothing). Counted, not read from the table at
    scrape time: see dialer.metrics."""
    if n:
        db.after_commit(session, lambda: metrics.attempts_finished(status, result, n))


def adopt(
    session: Session,
    contact: ContactRow,
    attempt: AttemptRow,
    call_id: str,
    now: datetime,
    campaigns: dict[int, Campaign | None] | None = None,
) -> None:
    if attempt.status == AttemptStatus.WITHDRAWN:
        # Reconciliation found no call and released the contact, yet the call exists.
        log.error(
            "attempt %s was reconciled as not created but call %s exists",
            attempt.id,
            call_id,
            extra=log_ids(attempt),
        )
    attempt.call_id = call_id
    attempt.created_at = attempt.created_at or now
    campaign = campaign_of(session, attempt.campaign_id, campaigns)
    ring = (campaign.call_timeout if campaign else None) or DEFAULT_CALL_TIMEOUT
    attempt.lease_until = now + timedelta(seconds=ring) + GRACE
    if attempt.status in (
        AttemptStatus.SENDING,
        AttemptStatus.UNKNOWN,
        AttemptStatus.QUEUED,
        AttemptStatus.WITHDRAWN,
    ):
        attempt.status = AttemptStatus.CREATED
    contact.attempts += 1


def is_current(contact: ContactRow, attempt: AttemptRow) -> bool:
    return contact.last_attempt_id == attempt.id and contact.status == ContactStatus.DIALING


def campaign_of(
    session: Session, campaign_id: int, cache: dict[int, Campaign | None] | None
) -> Campaign | None:
    """The attempt's campaign, read once per batch of events when given a cache."""
    if cache is None:
        return session.get(Campaign, campaign_id)
    if campaign_id not in cache:
        # What the state machine reads of a campaign, not the whole mapped row.
        table = Campaign.__table__
        cache[campaign_id] = session.execute(  # type: ignore[assignment]
            select(*(table.c[name] for name in _CAMPAIGN_COLUMNS)).where(table.c.id == campaign_id)
        ).one_or_none()
    return cache[campaign_id]


def campaigns_of(session: Session, campaign_ids: set[int]) -> dict[int, Campaign | None]:
    """``campaign_of``'s cache for a batch, filled in one statement: with many campaigns
    running a batch of events spans dozens of them, and a read each was a statement
    per event again."""
    if not campaign_ids:
        return {}
    table = Campaign.__table__
    found = {
        row.id: row
        for row in session.execute(
            select(*(table.c[name] for name in _CAMPAIGN_COLUMNS)).where(
                dialects.of(session).among(table.c.id, sorted(campaign_ids))
            )
        )
    }
    return {cid: found.get(cid) for cid in campaign_ids}  # type: ignore[misc]


_CAMPAIGN_COLUMNS = (
    "id", "state", "run", "max_attempts", "retry_delay", "window", "days", "timezone",
    "call_timeout", "keys",
)  # fmt: skip
