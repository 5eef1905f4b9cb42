"""Campaign controls: changing the rules, pause, cancel, completing.

Start and resume are ``dialer.state.starting`` (the driver alone, for the command's
start-up time)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dialer.policy import rules
from dialer.state.common import CampaignStateError
from dialer.state.runs import finish_run
from dialer.state.withdraw import withdraw_all_queued
from dialer.store import db
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    Campaign,
    CampaignState,
    Contact,
    ContactStatus,
)

RULE_FIELDS = (
    "window",
    "days",
    "timezone",
    "cps",
    "max_concurrent",
    "max_attempts",
    "retry_delay",
    "schedule",
)
# Every call's create-call options (dialer.carrier.options) and --local-presence:
# changes apply to calls claimed from then on.
CALL_OPTION_FIELDS = (
    "record", "record_format", "record_max", "transcribe", "sip_headers", "callback_timeout",
    "local_presence",
)  # fmt: skip
# The call script (dialer.script): changes apply to calls answered from then on.
SCRIPT_FIELDS = (
    "say", "play", "voice", "locale", "gender", "keys", "goodbye", "transfer_to", "max_duration",
)  # fmt: skip


def update_rules(
    session: Session, campaign: Campaign, changes: dict[str, object], now: datetime
) -> list[str]:
    """Apply new rules to a campaign's work not yet sent; return the fields changed.

    Calls already created are not touched. Contacts waiting for a window, or for a
    retry, are decided again under the new rules; queued attempts are checked at their
    claim, as always. Raising --max-attempts does not reopen contacts already final.
    """
    if campaign.state == CampaignState.CANCELLED:
        raise CampaignStateError(f"campaign {campaign.id} is cancelled: nothing to update")
    allowed = (*RULE_FIELDS, *SCRIPT_FIELDS, *CALL_OPTION_FIELDS)
    changed = [k for k, v in changes.items() if k in allowed and getattr(campaign, k) != v]
    for name in changed:
        setattr(campaign, name, changes[name])
    session.flush()
    pending = (Contact.campaign_id == campaign.id) & (Contact.status == ContactStatus.PENDING)
    if {"window", "days", "timezone"} & set(changed):
        # Back to when they were ready; the next tick defers them under the new hours.
        session.execute(
            update(Contact)
            .where(pending, Contact.ready_at.is_not(None))
            .values(due_at=Contact.ready_at, ready_at=None, reason=None)
            .execution_options(synchronize_session=False)
        )
    if "retry_delay" in changed:
        _reschedule_retries(session, campaign)
    if "max_attempts" in changed:
        session.execute(
            update(Contact)
            .where(pending, Contact.attempts >= campaign.max_attempts)
            .values(
                status=ContactStatus.UNANSWERED,
                due_at=None,
                ready_at=None,
                reason=f"no attempt left (--max-attempts is now {campaign.max_attempts})",
            )
            .execution_options(synchronize_session=False)
        )
    if {"schedule", "timezone"} & set(changed):
        campaign.next_run_at = (
            rules.next_run(campaign.schedule, campaign.timezone, now)
            if campaign.schedule and campaign.state != CampaignState.DRAFT
            else None
        )
    return changed


def _reschedule_retries(session: Session, campaign: Campaign, batch: int = 5000) -> None:
    """Retries not yet made are due --retry-delay after their last call ended."""
    rows = session.execute(
        select(Contact.id, Attempt.ended_at)
        .join(Attempt, Attempt.id == Contact.last_attempt_id)
        .where(
            Contact.campaign_id == campaign.id,
            Contact.status == ContactStatus.PENDING,
            Contact.attempts > 0,
            Attempt.status == AttemptStatus.ENDED,
            Attempt.ended_at.is_not(None),
        )
    ).all()
    values = [
        {"id": cid, "due_at": rules.retry_at(campaign, ended), "ready_at": None, "reason": None}
        for cid, ended in rows
        if ended is not None  # as the WHERE says
    ]
    for i in range(0, len(values), batch):
        session.execute(update(Contact), values[i : i + batch])


def pause(session: Session, campaign: Campaign, now: datetime) -> None:
    if campaign.state == CampaignState.PAUSED:
        return
    if campaign.state != CampaignState.RUNNING:
        raise CampaignStateError(
            f"campaign {campaign.id} is {campaign.state}: only a running campaign can be paused"
        )
    campaign.state = CampaignState.PAUSED
    session.flush()
    withdraw_all_queued(session, campaign.id, now, cancelled=False)


def cancel(session: Session, campaign: Campaign, now: datetime) -> None:
    if campaign.state == CampaignState.CANCELLED:
        return
    if campaign.state == CampaignState.COMPLETED and not campaign.schedule:
        raise CampaignStateError(f"campaign {campaign.id} is completed: nothing to cancel")
    # Cancelling a recurring campaign between runs stops its schedule.
    campaign.state, campaign.finished_at = CampaignState.CANCELLED, now
    campaign.next_run_at = None
    session.flush()
    withdraw_all_queued(session, campaign.id, now, cancelled=True)
    session.execute(
        update(Contact)
        .where(Contact.campaign_id == campaign.id, Contact.status == ContactStatus.PENDING)
        .values(status=ContactStatus.CANCELLED, due_at=None, reason="campaign cancelled")
        .execution_options(synchronize_session=False)
    )


def complete_if_done(session: Session, campaign: Campaign, now: datetime) -> bool:
    """A running campaign is completed when no contact waits or is being dialed."""
    if campaign.state != CampaignState.RUNNING:
        return False
    busy = session.scalar(
        select(Contact.id)
        .where(
            Contact.campaign_id == campaign.id,
            Contact.status.in_([ContactStatus.PENDING, ContactStatus.DIALING]),
        )
        .limit(1)
    )
    if busy is not None:
        return False
    done = (
        db.rowcount(
            session.execute(
                update(Campaign)
                .where(Campaign.id == campaign.id, Campaign.state == CampaignState.RUNNING)
                .values(state=CampaignState.COMPLETED, finished_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )
    if done:
        campaign.state, campaign.finished_at = CampaignState.COMPLETED, now
        finish_run(session, campaign, now)
    return done
