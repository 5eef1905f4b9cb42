"""Releasing work: due pending contacts become queued attempts.

The tick sees every running campaign at once: ``running`` reads them, with what each has
to send and has in flight, in two statements however many there are; ``lock_running``
and ``release_due_many`` release them all in one transaction. A statement per campaign
per second was most of the tick's cost with many campaigns (issue 13, target 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dialer.store import dialects
from dialer.store.models import (
    LIVE_ATTEMPT,
    Attempt,
    AttemptStatus,
    Campaign,
    CampaignState,
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


def release_due_many(
    session: Session, wanted: Sequence[tuple[int, int, int]], now: datetime
) -> dict[int, list[int]]:
    """``release_due`` for many campaigns at once: ``wanted`` is (campaign id, its run,
    how many at most) each; returns the new attempts' ids by campaign, in due order.
    The caller holds the campaigns ``FOR SHARE`` (``lock_running``)."""
    wanted = [(cid, run or 1, n) for cid, run, n in wanted if n > 0]
    if not wanted:
        return {}
    return dialects.of(session).release_due_many(session, wanted, now)


@dataclass(frozen=True)
class Running:
    """A running campaign as the tick sees it."""

    id: int
    cps: float | None
    max_concurrent: int | None
    windowed: bool  # has calling hours (--window or --days)
    due: bool  # has pending contacts due now
    done: bool  # has no contact pending or being dialed: it may complete
    queued: int = 0  # queued attempts
    claimed: int = 0  # attempts claimed (sending) and not yet sent
    live: int = 0  # attempts that hold or may hold a call, the claimed ones included
    from_count: int | None = None  # active caller ids (None: one)

    @property
    def has_work(self) -> bool:
        """Something to send now: queued attempts or due contacts."""
        return self.queued > 0 or self.due


def running(session: Session, now: datetime) -> list[Running]:
    """Every running campaign, with its due work and its backlog: two statements,
    reading a few index entries per campaign and the attempts in flight."""
    # The campaign's first pending contact in due order: an ORDER BY the due index
    # gives (campaign_id, due_at, id), so the plan is one probe of it whatever the
    # statistics say. (With EXISTS the planner may expect a sequential scan to meet a
    # match within a few dozen rows, which holds only while campaigns' contacts are
    # interleaved in the table; an import writes each campaign's together.) A pending
    # contact always has a due_at, so "none" is also "no contact waits".
    first_due = (
        select(Contact.due_at)
        .where(Contact.campaign_id == Campaign.id, Contact.status == ContactStatus.PENDING)
        .order_by(Contact.due_at, Contact.id)
        .limit(1)
        .scalar_subquery()
    )
    # Contacts being dialed are few (the release horizon and the calls up).
    dialing = (
        select(Contact.id)
        .where(Contact.campaign_id == Campaign.id, Contact.status == ContactStatus.DIALING)
        .exists()
    )
    rows = session.execute(
        select(
            Campaign.id,
            Campaign.cps,
            Campaign.max_concurrent,
            or_(Campaign.window.is_not(None), Campaign.days.is_not(None)),
            first_due,
            dialing,
            Campaign.from_count,
        )
        .where(Campaign.state == CampaignState.RUNNING)
        .order_by(Campaign.id)
    ).all()
    if not rows:
        return []
    counts = backlogs(session, [r[0] for r in rows])
    out = []
    for cid, cps, cap, windowed, due_at, is_dialing, from_count in rows:
        queued, claimed, live = counts.get(cid, (0, 0, 0))
        out.append(
            Running(
                cid,
                cps,
                cap,
                windowed=bool(windowed),
                due=due_at is not None and due_at <= now,
                done=due_at is None and not is_dialing,
                queued=queued,
                claimed=claimed,
                live=live,
                from_count=from_count,
            )
        )
    return out


def backlogs(session: Session, campaign_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """By campaign: (queued attempts, claimed ones not yet sent, live attempts that hold
    or may hold a call: the claimed ones included). One statement over the attempts in
    flight; a campaign with none is left out."""
    rows = session.execute(
        select(Attempt.campaign_id, Attempt.status, func.count())
        .where(
            dialects.of(session).among(Attempt.__table__.c.campaign_id, list(campaign_ids)),
            Attempt.status.in_([AttemptStatus.QUEUED, *LIVE_ATTEMPT]),
        )
        .group_by(Attempt.campaign_id, Attempt.status)
    ).all()
    by: dict[int, dict[str, int]] = {}
    for cid, status, n in rows:
        by.setdefault(cid, {})[status] = n
    return {
        cid: (
            got.get(AttemptStatus.QUEUED, 0),
            got.get(AttemptStatus.SENDING, 0),
            sum(got.get(s, 0) for s in LIVE_ATTEMPT),
        )
        for cid, got in by.items()
    }


def backlog(session: Session, campaign_id: int) -> tuple[int, int, int]:
    """``backlogs`` of one campaign."""
    return backlogs(session, [campaign_id]).get(campaign_id, (0, 0, 0))


def lock_running(session: Session, campaign_ids: Sequence[int]) -> dict[int, int]:
    """Lock those of the campaigns still running ``FOR SHARE``, in id order; return
    {campaign id: its run}. The lock order is campaign, then contacts, for everyone:
    pause and cancel lock the campaign ``FOR UPDATE`` before they touch contacts, and
    a campaign one of them holds right now is skipped (the next tick takes it), so a
    control never holds up the tick of every other campaign."""
    if not campaign_ids:
        return {}
    return dict(
        session.execute(
            select(Campaign.id, Campaign.run)
            .where(
                dialects.of(session).among(Campaign.__table__.c.id, sorted(campaign_ids)),
                Campaign.state == CampaignState.RUNNING,
            )
            .order_by(Campaign.id)
            .with_for_update(read=True, skip_locked=True)
        ).all()
    )
