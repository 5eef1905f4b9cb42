"""Calling windows: due contacts wait in the database for their window to open."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dialer.policy import rules
from dialer.state.common import NEVER_OPEN
from dialer.store import campaign_status, db
from dialer.store.campaign_status import WindowWait
from dialer.store.models import Campaign, Contact, ContactStatus


def defer_closed(session: Session, campaign: Campaign, now: datetime) -> int:
    """Due contacts whose calling window is shut wait, in the database, for its opening.

    Checked once per time-zone key of the campaign, not per contact: each key whose
    window is shut now moves its due contacts to that key's next opening (remembering
    when they were ready, for a later change of the rules). Nothing waits in a worker
    or a message. Returns how many contacts moved.
    """
    hours = rules.campaign_hours(campaign)
    if hours is None:
        return 0
    moved = 0
    for key in campaign.zone_keys or [None]:
        if rules.is_open(hours, rules.contact_zones(campaign, key), now):
            continue
        due = rules.when_due(campaign, key, now)
        moved += db.rowcount(
            session.execute(
                update(Contact)
                .where(
                    Contact.campaign_id == campaign.id,
                    Contact.status == ContactStatus.PENDING,
                    Contact.zones.is_(None) if key is None else Contact.zones == key,
                    Contact.due_at <= now,
                )
                .values(
                    ready_at=func.coalesce(Contact.ready_at, Contact.due_at),
                    due_at=due.due_at,
                    reason=NEVER_OPEN if due.never else None,
                )
                .execution_options(synchronize_session=False)
            )
        )
    return moved


def window_wait(session: Session, campaign: Campaign, now: datetime) -> WindowWait:
    """Who waits for a calling window, counting the pending rows themselves (``status``
    reads the same counts from the tally; the rule arithmetic is shared)."""
    pending = dict(
        session.execute(
            select(Contact.zones, func.count())
            .where(Contact.campaign_id == campaign.id, Contact.status == ContactStatus.PENDING)
            .group_by(Contact.zones)
        ).all()
    )
    return campaign_status.window_wait(campaign, pending, now)
