"""The campaign's runs: recurring runs, archiving and finishing a run.

Run 1 begins when the campaign starts (``dialer.state.starting``, with the driver alone,
so ``dialer campaign start`` needs no SQLAlchemy); the later runs of a recurring
campaign begin here, at the tick.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Integer, func, insert, literal, select, update
from sqlalchemy.orm import Session

from dialer.policy import rules
from dialer.state.suppression import suppress_listed
from dialer.store.models import (
    Campaign,
    CampaignRun,
    CampaignState,
    Contact,
    ContactStatus,
    RunContact,
)

log = logging.getLogger(__name__)


def _begin_run(
    session: Session, campaign: Campaign, now: datetime, scheduled_for: datetime | None
) -> None:
    campaign.run = (campaign.run or 0) + 1
    session.add(
        CampaignRun(
            campaign_id=campaign.id,
            number=campaign.run,
            scheduled_for=scheduled_for,
            started_at=now,
        )
    )
    # The next occurrence after now: occurrences missed while this one waited (a beat
    # outage, a long previous run) are not started one by one later. (Run 1's row and
    # next occurrence are written by dialer.state.starting, the same way.)
    campaign.next_run_at = (
        rules.next_run(campaign.schedule, campaign.timezone, now) if campaign.schedule else None
    )
    session.flush()


# Final statuses a new run dials again; invalid, duplicate and suppressed stay as they are.
REDIALED = (ContactStatus.ANSWERED, ContactStatus.UNANSWERED, ContactStatus.FAILED)


def start_due_runs(session: Session, now: datetime) -> list[int]:
    """Start the next run of every recurring campaign whose occurrence has come.

    Only a campaign whose previous run is over (``completed``) starts again; one that
    is still running or paused starts its next run as soon as it completes. The
    campaign row is locked and its ``next_run_at`` moves past ``now`` in the same
    transaction, and run numbers are unique per campaign: two beats (two ticks at once)
    or a beat catching up after an outage start each due run exactly once.
    """
    due = session.scalars(
        select(Campaign)
        .where(
            Campaign.schedule.is_not(None),
            Campaign.next_run_at <= now,
            Campaign.state == CampaignState.COMPLETED,
        )
        .order_by(Campaign.id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    started = []
    for campaign in due:
        if campaign.state != CampaignState.COMPLETED or campaign.next_run_at is None:
            continue
        if campaign.next_run_at > now or campaign.schedule is None:
            continue
        _archive_run(session, campaign)
        session.execute(
            update(Contact)
            .where(Contact.campaign_id == campaign.id, Contact.status.in_(REDIALED))
            .values(
                status=ContactStatus.PENDING,
                attempts=0,
                due_at=now,
                ready_at=None,
                reason=None,
                last_attempt_id=None,
            )
            .execution_options(synchronize_session=False)
        )
        campaign.state, campaign.state_reason, campaign.finished_at = (
            CampaignState.RUNNING,
            None,
            None,
        )
        _begin_run(
            session,
            campaign,
            now,
            scheduled_for=rules.last_run(campaign.schedule, campaign.timezone, now),
        )
        suppress_listed(session, campaign.id)
        log.info(
            "campaign %s: run %s started",
            campaign.id,
            campaign.run,
            extra={"campaign": campaign.id},
        )
        started.append(campaign.id)
    return started


def _archive_run(session: Session, campaign: Campaign) -> None:
    """Keep each redialed contact's outcome in the run that is ending."""
    run_id = session.scalar(
        select(CampaignRun.id).where(
            CampaignRun.campaign_id == campaign.id, CampaignRun.number == campaign.run
        )
    )
    if run_id is None:
        return
    session.execute(
        insert(RunContact).from_select(
            ["run_id", "contact_id", "status", "attempts", "last_attempt_id", "reason"],
            select(
                literal(run_id, Integer),
                Contact.id,
                Contact.status,
                Contact.attempts,
                Contact.last_attempt_id,
                Contact.reason,
            ).where(Contact.campaign_id == campaign.id, Contact.status.in_(REDIALED)),
        )
    )


def finish_run(session: Session, campaign: Campaign, now: datetime) -> None:
    summary = dict(
        session.execute(
            select(Contact.status, func.count())
            .where(Contact.campaign_id == campaign.id)
            .group_by(Contact.status)
        ).all()
    )
    session.execute(
        update(CampaignRun)
        .where(CampaignRun.campaign_id == campaign.id, CampaignRun.number == campaign.run)
        .values(finished_at=now, summary={s.value: summary.get(s.value, 0) for s in ContactStatus})
        .execution_options(synchronize_session=False)
    )
