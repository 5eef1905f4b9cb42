"""Sending: claim queued attempts, then record what the carrier made of each request
(created, not sent, refused, ambiguous, or stop the campaign)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dialer.carrier import options as call_options
from dialer.policy import rules
from dialer.state.common import (
    DEFAULT_CALL_TIMEOUT,
    GRACE,
    adopt,
    count_finished,
    is_current,
    lock,
    lock_in,
    log_ids,
)
from dialer.state.events import apply_orphans
from dialer.state.tags import build_tag
from dialer.state.withdraw import withdraw_all_queued, withdraw_for, withdraw_queued
from dialer.store import db, dialects
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    CallerId,
    Campaign,
    CampaignState,
    Contact,
    ContactStatus,
    Result,
    Suppression,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOrder:
    """Everything a worker needs to create one call, read at claim time."""

    attempt_id: int
    campaign_id: int
    from_number: str
    to: str
    tag: str
    call_timeout: int | None
    campaign_cps: float | None
    contact_id: int | None = None
    # GET: a scripted campaign's call, driven with BXML (dialer.script); POST otherwise.
    callback_method: str = "POST"
    # The campaign's active caller ids (``from_number`` is the one chosen once a slot is
    # taken: dialer.worker.dialing), whether the callee's area picks one, and the
    # CallRequest fields of its create-call options (dialer.carrier.options).
    pool: tuple[str, ...] = ()
    local_presence: bool = False
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Claimed:
    """What ``claim_batch`` made of the ids it was given."""

    orders: list[SendOrder]  # claimed under a lease: send these
    later: list[tuple[int, datetime]]  # still queued, held back by the carrier until then


def claim_for_send(
    session: Session, attempt_id: int, now: datetime, lease: timedelta
) -> SendOrder | None:
    """Claim one queued attempt for sending (``claim_batch`` of one)."""
    orders = claim_batch(session, [attempt_id], now, lease).orders
    return orders[0] if orders else None


def claim_batch(
    session: Session, attempt_ids: list[int], now: datetime, lease: timedelta
) -> Claimed:
    """Claim queued attempts for sending, under a lease; the ones not ours are left out.

    The campaign rows are read ``FOR SHARE``: a pause or cancel (which updates that row)
    waits for claims in flight, and a claim made after it sees the new state. So once
    ``pause`` returns and the claims it waited for are sent, nothing new is sent.

    The rules are checked once more, right before sending: a number put on a
    do-not-call list, or whose calling window has shut since it was released, is
    withdrawn without counting. A batch costs a handful of statements, not a handful
    per attempt: the dial path's cost is mostly per statement and per transaction.
    """
    if not attempt_ids:
        return Claimed([], [])
    # Every campaign of the batch in one statement (a batch may hold many campaigns'
    # calls: dialer.worker.scheduling), read whole for the rules checked below.
    campaigns = {
        c.id: c
        for c in session.scalars(
            select(Campaign)
            .where(
                Campaign.id.in_(
                    select(Attempt.campaign_id).where(Attempt.id.in_(attempt_ids)).distinct()
                )
            )
            .order_by(Campaign.id)
            .with_for_update(read=True, of=Campaign)
        )
    }
    states = {cid: c.state for cid, c in campaigns.items()}
    rows = session.execute(
        select(
            Attempt.id,
            Attempt.not_before,
            Attempt.campaign_id,
            Contact.id,
            Contact.e164,
            Contact.context,
            Contact.zones,
        )
        .join(Contact, Contact.id == Attempt.contact_id)
        .where(Attempt.id.in_(attempt_ids), Attempt.status == AttemptStatus.QUEUED)
        .order_by(Attempt.id)
    ).all()
    for state in (CampaignState.CANCELLED, CampaignState.PAUSED, CampaignState.COMPLETED):
        stopped = [r[0] for r in rows if states.get(r[2]) == state]
        withdraw_queued(session, stopped, now, cancelled=state == CampaignState.CANCELLED)
    rows = [r for r in rows if states.get(r[2]) == CampaignState.RUNNING]
    if not rows:
        return Claimed([], [])
    # The lists that apply, named: each is an index of its own (a partial unique index
    # for the global list, (campaign_id, e164) for campaigns'), so the look-up is a probe
    # per number. By e164 alone it read the whole do-not-call table every batch.
    listed: set[tuple[str, int | None]] = set(
        session.execute(
            select(Suppression.e164, Suppression.campaign_id).where(
                Suppression.e164.in_({r[4] for r in rows if r[4]}),
                Suppression.campaign_id.is_(None) | Suppression.campaign_id.in_(campaigns),
            )
        ).all()
    )
    later: list[tuple[int, datetime]] = []
    ready = []
    for aid, not_before, cid, contact_id, e164, context, zones in rows:
        campaign = campaigns[cid]
        assert campaign is not None
        if not_before is not None and not_before > now:
            later.append((aid, not_before))
        elif (e164, None) in listed or (e164, cid) in listed:
            withdraw_for(session, aid, now, ContactStatus.SUPPRESSED, None)
        elif (hours := rules.campaign_hours(campaign)) is not None and not rules.is_open(
            hours, rules.contact_zones(campaign, zones), now
        ):
            withdraw_for(
                session, aid, now, ContactStatus.PENDING, rules.when_due(campaign, zones, now)
            )
        else:
            ready.append((aid, cid, contact_id, e164, context))
    if not ready:
        return Claimed([], later)
    tags = {}
    for aid, cid, _, _, context in ready:
        c = campaigns[cid]
        assert c is not None
        tags[aid] = build_tag(aid, cid, context or {}, c.tag_fields or [])
    claimed = dialects.of(session).claim(session, tags, now + lease, now)
    pools = active_pools(session, {cid for aid, cid, *_ in ready if aid in claimed})
    orders = []
    for aid, cid, contact_id, to, _ in ready:
        if aid not in claimed:
            continue
        c = campaigns[cid]
        assert c is not None
        assert to is not None  # a contact without a valid number is never released
        pool = pools.get(cid) or (c.from_number,)
        orders.append(
            SendOrder(
                aid,
                cid,
                pool[0],
                to,
                tags[aid],
                c.call_timeout,
                c.cps,
                contact_id,
                "GET" if c.say is not None or c.play is not None else "POST",
                pool=pool,
                local_presence=bool(c.local_presence),
                options=tuple(call_options.request_fields(c).items()),
            )
        )
    return Claimed(orders, later)


def active_pools(session: Session, campaign_ids: set[int]) -> dict[int, tuple[str, ...]]:
    """Each campaign's active caller ids, in pool order (one statement for a batch). A
    campaign from before pools has none: it calls from ``Campaign.from_number``."""
    pools: dict[int, list[str]] = {}
    if campaign_ids:
        for cid, e164 in session.execute(
            select(CallerId.campaign_id, CallerId.e164)
            .where(CallerId.campaign_id.in_(sorted(campaign_ids)), CallerId.state == "active")
            .order_by(CallerId.campaign_id, CallerId.id)
        ):
            pools.setdefault(cid, []).append(e164)
    return {cid: tuple(numbers) for cid, numbers in pools.items()}


def remove_caller_id(
    session: Session, campaign_id: int, e164: str, reason: str, now: datetime
) -> tuple[bool, int]:
    """Take a refused number out of a campaign's pool: (whether this call removed it, the
    active numbers left). The campaign's ``from_count`` follows (the tick's pace). A
    campaign from before pools (no caller_id rows) has none left."""
    removed = (
        db.rowcount(
            session.execute(
                update(CallerId)
                .where(
                    CallerId.campaign_id == campaign_id,
                    CallerId.e164 == e164,
                    CallerId.state == "active",
                )
                .values(state="removed", reason=reason[:500], removed_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )
    left = len(active_pools(session, {campaign_id}).get(campaign_id, ()))
    if removed:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(from_count=max(1, left))
            .execution_options(synchronize_session=False)
        )
    return removed, left


def record_created(
    session: Session,
    attempt_id: int,
    call_id: str,
    now: datetime,
    from_number: str | None = None,
) -> None:
    """The carrier created the call: store its id (and the number it went from), then
    apply any events that beat it here."""
    locked = lock(session, attempt_id)
    if locked is None:
        return
    contact, attempt = locked
    if from_number is not None and attempt.from_number is None:
        attempt.from_number = from_number
    if attempt.call_id == call_id:
        return  # a callback carrying the tag got here first and adopted the call
    if attempt.call_id is not None:
        log.error(
            "attempt %s has call %s and the carrier also created %s",
            attempt_id,
            attempt.call_id,
            call_id,
            extra=log_ids(attempt),
        )
        return
    adopt(session, contact, attempt, call_id, now)
    apply_orphans(session, contact, attempt, now)


def record_created_many(
    session: Session, created: list[tuple[SendOrder, str]], now: datetime
) -> None:
    """Record a batch's created calls in one transaction: a conditional UPDATE each,
    one for the contacts' counts (on PostgreSQL three statements for the batch). The
    contacts are locked first (the lock order is contact, then attempt, everywhere);
    anything unusual (a callback adopted the call first, orphan events wait for it, the
    attempt was reconciled meanwhile) goes the careful way, through ``record_created``."""
    if not created:
        return
    queries = dialects.of(session)
    rows = []
    for order, call_id in created:
        assert order.contact_id is not None  # claim_batch names each order's contact
        ring = timedelta(seconds=order.call_timeout or DEFAULT_CALL_TIMEOUT)
        rows.append(
            (order.attempt_id, order.contact_id, call_id, now + ring + GRACE, order.from_number)
        )
    done = queries.record_created(session, rows, now)
    rest = [(o, c) for o, c in created if o.attempt_id not in done]
    if not rest:
        return
    # A callback carrying the tag may have adopted the call first (a paced batch's
    # early calls are answered before the batch ends): nothing left to record.
    adopted = set(
        session.execute(
            select(Attempt.id, Attempt.call_id).where(
                queries.among(Attempt.__table__.c.id, [o.attempt_id for o, _ in rest])
            )
        ).all()
    )
    for order, call_id in rest:
        if (order.attempt_id, call_id) not in adopted:
            record_created(session, order.attempt_id, call_id, now, order.from_number)
        else:  # adopted by a callback: the number it went from is still ours to say
            session.execute(
                update(Attempt)
                .where(Attempt.id == order.attempt_id, Attempt.from_number.is_(None))
                .values(from_number=order.from_number)
                .execution_options(synchronize_session=False)
            )


def unclaim(session: Session, attempt_ids: list[int]) -> list[int]:
    """Give claims back unsent (their slots in the pace were too far off): queued again.
    Returns the ids given back (those still sending)."""
    if not attempt_ids:
        return []
    return list(
        session.scalars(
            update(Attempt)
            .where(Attempt.id.in_(attempt_ids), Attempt.status == AttemptStatus.SENDING)
            .values(status=AttemptStatus.QUEUED, lease_until=None, sends=Attempt.sends - 1)
            .returning(Attempt.id)
            .execution_options(synchronize_session=False)
        ).all()
    )


def record_not_sent(
    session: Session, attempt_id: int, not_before: datetime, error: str, *, reached: bool = True
) -> bool:
    """Nothing was created (rate limit, 5xx, refused connection): queue it again.

    Not an attempt on the person: it does not count against --max-attempts. When the
    carrier was not ``reached`` at all, not a send either: the attempt's own backoff
    (``rules.resend_delay`` of its sends) does not grow through a carrier outage, during
    which the fleet's hold paces the tries (dialer.worker.dialing).
    """
    return (
        db.rowcount(
            session.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id, Attempt.status == AttemptStatus.SENDING)
                .values(
                    status=AttemptStatus.QUEUED,
                    not_before=not_before,
                    lease_until=None,
                    queued_at=not_before,
                    error=error,
                    **({} if reached else {"sends": Attempt.sends - 1}),
                )
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )


def record_refused(
    session: Session, attempt_id: int, cause: str, reason: str, now: datetime
) -> None:
    """The carrier refused this destination for good: the contact fails, no retry."""
    locked = lock_in(session, attempt_id, AttemptStatus.SENDING)
    if locked is None:
        return
    contact, attempt = locked
    attempt.status = AttemptStatus.FAILED
    attempt.result, attempt.cause, attempt.error = Result.ERROR, cause, reason
    attempt.ended_at, attempt.lease_until = now, None
    count_finished(session, AttemptStatus.FAILED, Result.ERROR)
    if is_current(contact, attempt):
        contact.status, contact.reason, contact.due_at = ContactStatus.FAILED, reason, None


def record_ambiguous(
    session: Session, attempt_id: int, error: str, from_number: str | None = None
) -> None:
    """The request may have created a call: never resend blindly, reconcile instead
    (the sweep looks for it among the calls from ``from_number``, the number it used)."""
    values: dict[str, Any] = {"status": AttemptStatus.UNKNOWN, "error": error, "lease_until": None}
    if from_number is not None:
        values["from_number"] = from_number
    session.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.status == AttemptStatus.SENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def record_stop(session: Session, attempt_id: int, reason: str, now: datetime) -> None:
    """The carrier refuses the account (credentials, credit): pause the campaign, alert."""
    locked = lock(session, attempt_id)
    if locked is None:
        return
    contact, attempt = locked
    if attempt.status == AttemptStatus.SENDING:
        attempt.status, attempt.error, attempt.lease_until = AttemptStatus.WITHDRAWN, reason, None
        count_finished(session, AttemptStatus.WITHDRAWN, None)
        if is_current(contact, attempt):
            contact.status, contact.due_at = ContactStatus.PENDING, now
    session.execute(
        update(Campaign)
        .where(Campaign.id == attempt.campaign_id, Campaign.state == CampaignState.RUNNING)
        .values(state=CampaignState.PAUSED, state_reason=reason)
        .execution_options(synchronize_session=False)
    )
    withdraw_all_queued(session, attempt.campaign_id, now, cancelled=False)
