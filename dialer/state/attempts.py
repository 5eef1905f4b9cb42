"""The state machine: the only code that writes a campaign, contact or attempt status.

    contact   pending -> dialing -> answered | unanswered | failed | cancelled
                  ^          |
                  +----------+   (a retry: pending again, due after --retry-delay)

    attempt   queued -> sending -> created -> answered -> ended
                 |         |  \\                  (created/answered) -> ended
                 |         |   -> unknown -> created | withdrawn     (reconciled)
                 |         -> failed | queued (nothing created: try again later)
                 -> withdrawn (paused or cancelled before it was sent)

Every transition is a conditional write on the row's current status (or made under a
row lock), so two workers, a repeated task or a repeated callback can never move a row
twice. Callbacks only move an attempt forward; their facts (answered, timed out, hung
up with a cause) accumulate, and the outcome is a function of the facts, so events in
any order end in the same rows (``rules.outcome``).

Functions take the caller's session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    TextClause,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from dialer import metrics
from dialer.carrier.events import STATUS_EVENTS, CallEvent
from dialer.policy import rules
from dialer.store import campaign_status, db
from dialer.store.campaign_status import WindowWait
from dialer.store.models import (
    LIVE_ATTEMPT,
    Attempt,
    AttemptStatus,
    Base,
    Campaign,
    CampaignRun,
    CampaignState,
    Contact,
    ContactStatus,
    Result,
    RunContact,
    Suppression,
)
from dialer.store.models import CallEvent as CallEventRow

log = logging.getLogger(__name__)

TAG_LIMIT = 256  # catapult-v1.md: stay at or under 256 characters
# ``lease_until`` is the time by which an attempt should have moved on; past it, the
# sweep looks. For ``sending``, the claim's lease. For ``created``, the call's ringing
# time (callTimeout) plus a grace; for ``answered``, the next time to ask the carrier
# whether the call is still up (after GRACE, then doubling up to LIVE_RECHECK, so a
# long conversation costs a few reads). Both catch calls whose callbacks were lost (a
# broker restart, a receiver outage longer than the carrier's retries).
DEFAULT_CALL_TIMEOUT = 60  # catapult-v1.md: callTimeout default
GRACE = timedelta(seconds=30)
LIVE_RECHECK = timedelta(minutes=15)
RESERVED_TAG_KEYS = frozenset({"attempt", "campaign"})


class CampaignStateError(ValueError):
    """A control that does not apply to the campaign's state (e.g. start a cancelled one)."""


# ---------------------------------------------------------------------------- the tag


def build_tag(attempt_id: int, campaign_id: int, context: dict[str, str], fields: list[str]) -> str:
    """The attempt's identity plus the --tag-field context, as compact JSON ≤ 256 chars.

    The identity always fits; context fields are added in the order given while the tag
    stays within the limit, and the ones that do not fit are left out (and logged).
    """
    tag: dict[str, object] = {"attempt": attempt_id, "campaign": campaign_id}
    text = json.dumps(tag, separators=(",", ":"), ensure_ascii=False)
    for name in fields:
        if name not in context:
            continue
        candidate = dict(tag, **{name: context[name]})
        encoded = json.dumps(candidate, separators=(",", ":"), ensure_ascii=False)
        if len(encoded) > TAG_LIMIT:
            log.warning(
                "tag field %r left out of attempt %s: tag would exceed %d characters",
                name,
                attempt_id,
                TAG_LIMIT,
                extra={"attempt": attempt_id, "campaign": campaign_id},
            )
            continue
        tag, text = candidate, encoded
    return text


# ------------------------------------------------------------------- releasing work


def release_due(session: Session, campaign: Campaign, limit: int, now: datetime) -> list[int]:
    """Turn up to ``limit`` due pending contacts into queued attempts; return their ids.

    ``FOR UPDATE SKIP LOCKED`` lets two ticks run at once without taking the same
    contact; the conditional UPDATE on ``status = 'pending'`` makes it safe on SQLite
    (which has neither, and serialises writers instead).
    """
    if limit <= 0:
        return []
    if _postgres(session):
        # One statement: lock, insert the attempts, point the contacts at them.
        made = session.scalars(
            _RELEASE,
            {"c": campaign.id, "now": now, "n": limit, "run": campaign.run or 1},
        ).all()
        return sorted(made)  # ids in insertion order, which is due order
    ids = session.scalars(
        select(Contact.id)
        .where(
            Contact.campaign_id == campaign.id,
            Contact.status == ContactStatus.PENDING,
            Contact.due_at <= now,
        )
        .order_by(Contact.due_at, Contact.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        return []
    claimed = session.execute(
        update(Contact)
        .where(Contact.id.in_(ids), Contact.status == ContactStatus.PENDING)
        .values(status=ContactStatus.DIALING, due_at=None, ready_at=None)
        .returning(Contact.id, Contact.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return []
    created = session.execute(
        insert(Attempt).returning(Attempt.id, Attempt.contact_id),
        [
            {
                "contact_id": cid,
                "campaign_id": campaign.id,
                "number": made + 1,
                "run": campaign.run or 1,
                "status": AttemptStatus.QUEUED,
                "queued_at": now,
                "sends": 0,
            }
            for cid, made in claimed
        ],
    ).all()
    session.execute(update(Contact), [{"id": cid, "last_attempt_id": aid} for aid, cid in created])
    return [aid for aid, _ in created]


_RELEASE = text(
    """
    WITH picked AS (
        SELECT id, attempts, due_at FROM contact
         WHERE campaign_id = :c AND status = 'pending' AND due_at <= :now
         ORDER BY due_at, id
         LIMIT :n
           FOR UPDATE SKIP LOCKED
    ), made AS (
        INSERT INTO attempt (contact_id, campaign_id, number, run, status, queued_at, sends)
        SELECT id, :c, attempts + 1, :run, 'queued', :now, 0 FROM picked ORDER BY due_at, id
        RETURNING id, contact_id
    )
    UPDATE contact AS c
       SET status = 'dialing', due_at = NULL, ready_at = NULL, last_attempt_id = made.id
      FROM made
     WHERE c.id = made.contact_id
    RETURNING made.id
    """
)


def has_due_work(session: Session, campaign_id: int, now: datetime) -> bool:
    """Whether the campaign has something to send now: queued attempts or due contacts."""
    queued = select(Attempt.id).where(
        Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED
    )
    due = select(Contact.id).where(
        Contact.campaign_id == campaign_id,
        Contact.status == ContactStatus.PENDING,
        Contact.due_at <= now,
    )
    return bool(session.scalar(select(queued.exists() | due.exists())))


def backlog(session: Session, campaign_id: int) -> tuple[int, int, int]:
    """(queued attempts, claimed ones not yet sent, live attempts that hold or may
    hold a call: the claimed ones included)."""
    rows = dict(
        session.execute(
            select(Attempt.status, func.count())
            .where(
                Attempt.campaign_id == campaign_id,
                Attempt.status.in_([AttemptStatus.QUEUED, *LIVE_ATTEMPT]),
            )
            .group_by(Attempt.status)
        ).all()
    )
    return (
        rows.get(AttemptStatus.QUEUED, 0),
        rows.get(AttemptStatus.SENDING, 0),
        sum(rows.get(s, 0) for s in LIVE_ATTEMPT),
    )


# --------------------------------------------------------------------------- sending


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
    states = dict(
        session.execute(
            select(Campaign.id, Campaign.state)
            .where(
                Campaign.id.in_(
                    select(Attempt.campaign_id).where(Attempt.id.in_(attempt_ids)).distinct()
                )
            )
            .order_by(Campaign.id)
            .with_for_update(read=True, of=Campaign)
        ).all()
    )
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
        _withdraw_queued(session, stopped, now, cancelled=state == CampaignState.CANCELLED)
    rows = [r for r in rows if states.get(r[2]) == CampaignState.RUNNING]
    if not rows:
        return Claimed([], [])
    campaigns = {cid: session.get(Campaign, cid) for cid in {r[2] for r in rows}}
    listed: set[tuple[str, int | None]] = set(
        session.execute(
            select(Suppression.e164, Suppression.campaign_id).where(
                Suppression.e164.in_({r[4] for r in rows if r[4]})
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
            _withdraw_for(session, aid, now, ContactStatus.SUPPRESSED, None)
        elif (hours := rules.campaign_hours(campaign)) is not None and not rules.is_open(
            hours, rules.contact_zones(campaign, zones), now
        ):
            _withdraw_for(
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
    claimed = _claim(session, tags, now + lease, now)
    orders = []
    for aid, cid, contact_id, to, _ in ready:
        if aid not in claimed:
            continue
        c = campaigns[cid]
        assert c is not None
        orders.append(
            SendOrder(aid, cid, c.from_number, to, tags[aid], c.call_timeout, c.cps, contact_id)
        )
    return Claimed(orders, later)


_CLAIM = text(
    """
    UPDATE attempt AS a
       SET status = 'sending', lease_until = :lease, sends = a.sends + 1, sent_at = :now,
           not_before = NULL, tag = v.tag
      FROM unnest(CAST(:ids AS bigint[]), CAST(:tags AS text[])) AS v(id, tag)
     WHERE a.id = v.id AND a.status = 'queued'
    RETURNING a.id
    """
)


def _claim(session: Session, tags: dict[int, str], lease: datetime, now: datetime) -> set[int]:
    """Move the queued ones of these attempts to sending, each with its tag; return the
    ids moved (a conditional write: an attempt another claim took is left out)."""
    if _postgres(session):
        return set(
            session.scalars(
                _CLAIM, {"ids": list(tags), "tags": list(tags.values()), "lease": lease, "now": now}
            ).all()
        )
    claimed = set(
        session.scalars(
            update(Attempt)
            .where(Attempt.id.in_(list(tags)), Attempt.status == AttemptStatus.QUEUED)
            .values(
                status=AttemptStatus.SENDING,
                lease_until=lease,
                sends=Attempt.sends + 1,
                sent_at=now,
                not_before=None,
            )
            .returning(Attempt.id)
            .execution_options(synchronize_session=False)
        ).all()
    )
    if claimed:
        session.execute(
            update(Attempt).execution_options(synchronize_session=False),
            [{"id": aid, "tag": tags[aid]} for aid in claimed],
        )
    return claimed


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


def _withdraw_for(
    session: Session,
    attempt_id: int,
    now: datetime,
    status: ContactStatus,
    due: rules.Due | None,
) -> None:
    """A queued attempt the rules now forbid is never sent and does not count: its
    contact is suppressed (do-not-call) or waits for its window to open again."""
    locked = _lock_in(session, attempt_id, AttemptStatus.QUEUED)
    if locked is None:
        return
    contact, attempt = locked
    suppressed = status == ContactStatus.SUPPRESSED
    attempt.status, attempt.ended_at = AttemptStatus.WITHDRAWN, now
    attempt.error = "on the do-not-call list" if suppressed else "outside calling hours"
    _count_finished(session, AttemptStatus.WITHDRAWN, None)
    if not _is_current(contact, attempt):
        return
    if suppressed:
        contact.status, contact.due_at, contact.reason = status, None, "on the do-not-call list"
    else:
        assert due is not None
        contact.status, contact.due_at, contact.ready_at = status, due.due_at, due.ready_at
        contact.reason = _NEVER_OPEN if due.never else None
    log.info(
        "attempt %s withdrawn before sending: %s",
        attempt_id,
        attempt.error,
        extra={"attempt": attempt_id, "contact": contact.id, "campaign": attempt.campaign_id},
    )


_NEVER_OPEN = "the calling window never holds in all of this number's time zones"


def _lock(session: Session, attempt_id: int) -> tuple[Contact, Attempt] | None:
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


def _lock_in(
    session: Session, attempt_id: int, *statuses: str
) -> tuple[Contact, Attempt] | None:
    """``_lock``, but None unless the attempt is (still) in one of ``statuses``."""
    locked = _lock(session, attempt_id)
    if locked is None or locked[1].status not in statuses:
        return None
    return locked


def _ids(attempt: Attempt) -> dict[str, int]:
    """The ids a log line about this attempt carries (dialer.logs)."""
    return {"attempt": attempt.id, "campaign": attempt.campaign_id, "contact": attempt.contact_id}


def _count_finished(session: Session, status: str, result: str | None, n: int = 1) -> None:
    """Count attempts reaching a final status once the transaction that put them there
    commits (a rolled-back one counts nothing). Counted, not read from the table at
    scrape time: see dialer.metrics."""
    if n:
        db.after_commit(session, lambda: metrics.attempts_finished(status, result, n))


def record_created(session: Session, attempt_id: int, call_id: str, now: datetime) -> None:
    """The carrier created the call: store its id, then apply any events that beat it here."""
    locked = _lock(session, attempt_id)
    if locked is None:
        return
    contact, attempt = locked
    if attempt.call_id == call_id:
        return  # a callback carrying the tag got here first and adopted the call
    if attempt.call_id is not None:
        log.error(
            "attempt %s has call %s and the carrier also created %s",
            attempt_id,
            attempt.call_id,
            call_id,
            extra=_ids(attempt),
        )
        return
    _adopt(session, contact, attempt, call_id, now)
    _apply_orphans(session, contact, attempt, now)


def record_created_many(
    session: Session, created: list[tuple[SendOrder, str]], now: datetime
) -> None:
    """Record a batch's created calls in one transaction: a conditional UPDATE each,
    one for the contacts' counts. The contacts are locked first (the lock order is
    contact, then attempt, everywhere); anything unusual (a callback adopted the call
    first, orphan events wait for it, the attempt was reconciled meanwhile) goes the
    careful way, through ``record_created``."""
    if not created:
        return
    if _postgres(session):
        _record_created_pg(session, created, now)
        return
    session.execute(
        select(Contact.id)
        .where(Contact.id.in_(sorted({o.contact_id for o, _ in created})))
        .order_by(Contact.id)
        .with_for_update()
    ).all()
    orphaned = set(
        session.scalars(
            select(CallEventRow.call_id).where(
                CallEventRow.disposition == "orphan",
                CallEventRow.call_id.in_([c for _, c in created]),
            )
        ).all()
    )
    counted = []
    for order, call_id in created:
        ring = timedelta(seconds=order.call_timeout or DEFAULT_CALL_TIMEOUT)
        done = call_id not in orphaned and (
            session.execute(
                update(Attempt)
                .where(
                    Attempt.id == order.attempt_id,
                    Attempt.call_id.is_(None),
                    Attempt.status.in_([AttemptStatus.SENDING, AttemptStatus.UNKNOWN]),
                )
                .values(
                    call_id=call_id,
                    status=AttemptStatus.CREATED,
                    created_at=now,
                    lease_until=now + ring + GRACE,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )
        if done:
            counted.append(order.contact_id)
        else:
            record_created(session, order.attempt_id, call_id, now)
    if counted:
        session.execute(
            update(Contact)
            .where(Contact.id.in_(counted))
            .values(attempts=Contact.attempts + 1)
            .execution_options(synchronize_session=False)
        )


def _postgres(session: Session) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "postgresql"


# The common case of record_created_many in one statement: every created call whose
# attempt is still ours (sending, or unknown after a timeout) and has no call id yet,
# and for which no event is waiting as an orphan. The rest go the careful way.
_RECORD_CREATED = text(
    """
    UPDATE attempt AS a
       SET call_id = v.call_id, status = 'created', created_at = :now, lease_until = v.lease
      FROM unnest(CAST(:ids AS bigint[]), CAST(:calls AS varchar[]),
                  CAST(:leases AS timestamptz[])) AS v(id, call_id, lease)
     WHERE a.id = v.id AND a.call_id IS NULL AND a.status IN ('sending', 'unknown')
       AND NOT EXISTS (SELECT 1 FROM call_event AS e
                        WHERE e.call_id = v.call_id AND e.disposition = 'orphan')
    RETURNING a.id, a.contact_id
    """
)
_LOCK_CONTACTS = text("SELECT id FROM contact WHERE id = ANY(:ids) ORDER BY id FOR UPDATE")
_COUNT_ATTEMPT = text("UPDATE contact SET attempts = attempts + 1 WHERE id = ANY(:ids)")


def _record_created_pg(
    session: Session, created: list[tuple[SendOrder, str]], now: datetime
) -> None:
    """record_created_many on PostgreSQL: three statements for the whole batch."""
    session.execute(_LOCK_CONTACTS, {"ids": sorted({o.contact_id for o, _ in created})}).all()
    ids, calls, leases = [], [], []
    for order, call_id in created:
        ring = timedelta(seconds=order.call_timeout or DEFAULT_CALL_TIMEOUT)
        ids.append(order.attempt_id)
        calls.append(call_id)
        leases.append(now + ring + GRACE)
    done = dict(
        session.execute(
            _RECORD_CREATED, {"now": now, "ids": ids, "calls": calls, "leases": leases}
        ).all()
    )
    if done:
        session.execute(_COUNT_ATTEMPT, {"ids": list(done.values())})
    rest = [(o, c) for o, c in created if o.attempt_id not in done]
    if not rest:
        return
    # A callback carrying the tag may have adopted the call first (a paced batch's
    # early calls are answered before the batch ends): nothing left to record.
    adopted = set(
        session.execute(
            text("SELECT id, call_id FROM attempt WHERE id = ANY(:ids)"),
            {"ids": [o.attempt_id for o, _ in rest]},
        ).all()
    )
    for order, call_id in rest:
        if (order.attempt_id, call_id) not in adopted:
            record_created(session, order.attempt_id, call_id, now)


def _adopt(
    session: Session,
    contact: Contact,
    attempt: Attempt,
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
            extra=_ids(attempt),
        )
    attempt.call_id = call_id
    attempt.created_at = attempt.created_at or now
    campaign = _campaign(session, attempt.campaign_id, campaigns)
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


def record_not_sent(session: Session, attempt_id: int, not_before: datetime, error: str) -> bool:
    """Nothing was created (rate limit, 5xx, refused connection): queue it again.

    Not an attempt on the person: it does not count against --max-attempts.
    """
    return (
        session.execute(
            update(Attempt)
            .where(Attempt.id == attempt_id, Attempt.status == AttemptStatus.SENDING)
            .values(
                status=AttemptStatus.QUEUED,
                not_before=not_before,
                lease_until=None,
                queued_at=not_before,
                error=error,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def record_refused(
    session: Session, attempt_id: int, cause: str, reason: str, now: datetime
) -> None:
    """The carrier refused this destination for good: the contact fails, no retry."""
    locked = _lock_in(session, attempt_id, AttemptStatus.SENDING)
    if locked is None:
        return
    contact, attempt = locked
    attempt.status = AttemptStatus.FAILED
    attempt.result, attempt.cause, attempt.error = Result.ERROR, cause, reason
    attempt.ended_at, attempt.lease_until = now, None
    _count_finished(session, AttemptStatus.FAILED, Result.ERROR)
    if _is_current(contact, attempt):
        contact.status, contact.reason, contact.due_at = ContactStatus.FAILED, reason, None


def record_ambiguous(session: Session, attempt_id: int, error: str) -> None:
    """The request may have created a call: never resend blindly, reconcile instead."""
    session.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.status == AttemptStatus.SENDING)
        .values(status=AttemptStatus.UNKNOWN, error=error, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def record_stop(session: Session, attempt_id: int, reason: str, now: datetime) -> None:
    """The carrier refuses the account (credentials, credit): pause the campaign, alert."""
    locked = _lock(session, attempt_id)
    if locked is None:
        return
    contact, attempt = locked
    if attempt.status == AttemptStatus.SENDING:
        attempt.status, attempt.error, attempt.lease_until = AttemptStatus.WITHDRAWN, reason, None
        _count_finished(session, AttemptStatus.WITHDRAWN, None)
        if _is_current(contact, attempt):
            contact.status, contact.due_at = ContactStatus.PENDING, now
    session.execute(
        update(Campaign)
        .where(Campaign.id == attempt.campaign_id, Campaign.state == CampaignState.RUNNING)
        .values(state=CampaignState.PAUSED, state_reason=reason)
        .execution_options(synchronize_session=False)
    )
    _withdraw_all_queued(session, attempt.campaign_id, now, cancelled=False)


def _is_current(contact: Contact, attempt: Attempt) -> bool:
    return contact.last_attempt_id == attempt.id and contact.status == ContactStatus.DIALING


# ---------------------------------------------------------------------- reconciling


def expire_leases(session: Session, now: datetime) -> int:
    """A claim whose worker vanished may or may not have sent: treat it as ambiguous."""
    return session.execute(
        update(Attempt)
        .where(Attempt.status == AttemptStatus.SENDING, Attempt.lease_until < now)
        .values(status=AttemptStatus.UNKNOWN, error="lease expired", lease_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount


def overdue_calls(session: Session, now: datetime, limit: int) -> list[tuple[int, str]]:
    """Created or answered attempts past their deadline: (attempt id, call id)."""
    return [
        (aid, call_id)
        for aid, call_id in session.execute(
            select(Attempt.id, Attempt.call_id)
            .where(
                Attempt.status.in_([AttemptStatus.CREATED, AttemptStatus.ANSWERED]),
                Attempt.lease_until < now,
            )
            .order_by(Attempt.lease_until)
            .limit(limit)
        ).all()
        if call_id is not None
    ]


def check_again(session: Session, attempt_id: int, now: datetime) -> None:
    """The carrier says the call is still up: look again later, backing off."""
    since = session.scalar(
        select(func.coalesce(Attempt.answered_at, Attempt.created_at)).where(
            Attempt.id == attempt_id
        )
    )
    age = (now - since) if since is not None else GRACE
    at = now + min(LIVE_RECHECK, max(GRACE, age))
    session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id,
            Attempt.status.in_([AttemptStatus.CREATED, AttemptStatus.ANSWERED]),
        )
        .values(lease_until=at)
        .execution_options(synchronize_session=False)
    )


def resolve_unknown(session: Session, attempt_id: int, call_id: str | None, now: datetime) -> None:
    """Settle an ambiguous attempt from what the carrier shows.

    Found: the call exists, adopt it. Not found after the call's whole ringing time: it
    was never created, so the contact is due again, and the attempt does not count.
    """
    locked = _lock_in(session, attempt_id, AttemptStatus.UNKNOWN)
    if locked is None:
        return
    contact, attempt = locked
    if call_id is not None:
        _adopt(session, contact, attempt, call_id, now)
        _apply_orphans(session, contact, attempt, now)
        return
    attempt.status, attempt.error = AttemptStatus.WITHDRAWN, "no such call at the carrier"
    _count_finished(session, AttemptStatus.WITHDRAWN, None)
    if _is_current(contact, attempt):
        contact.status, contact.due_at = ContactStatus.PENDING, now


# ------------------------------------------------------------------------- callbacks


def apply_event(session: Session, event: CallEvent, received_at: datetime, now: datetime) -> str:
    """Apply one callback event; return what became of it (stored with the raw event).

    ``applied``: it moved the attempt. ``repeat``: its fact was already known.
    ``ignored``: not a status event. ``orphan``: no attempt matches its call id or tag
    (yet: an event can beat the create response here; ``record_created`` adopts it).
    """
    [disposition] = apply_events(session, [event], [received_at], now)
    assert disposition is not None  # only skip_locked defers
    return disposition


DEFERRED = None  # apply_events(skip_locked=True): the event was left for a later batch


def apply_events(
    session: Session,
    events: Sequence[CallEvent],
    received_ats: Sequence[datetime],
    now: datetime,
    *,
    skip_locked: bool = False,
) -> list[str | None]:
    """Apply a batch of callback events in arrival order; return each one's disposition.

    The rows end exactly as applying the events one at a time (``apply_event``, a batch
    of one) would leave them (a property test checks it), at a handful of statements per batch instead of ~8 per event: the batch's
    call ids and tag attempt ids are resolved in one query; its contacts, then its
    attempts, are locked in one ordered ``SELECT … FOR UPDATE`` each (id order, and
    contacts before attempts, as everywhere: campaign -> contact -> attempt, so two
    batches, or a batch and a dial, never deadlock); each event then goes through the
    same ``_apply`` as one alone, on the loaded rows; the ``call_event`` rows go in as
    one bulk insert; each campaign is read once.

    ``skip_locked``: contacts another transaction holds are skipped rather than waited
    for, and their events (with every later event of the batch about the same call or
    attempt, so each call's events keep their order) come back as ``DEFERRED``, applied
    and stored not at all: the caller applies them in a later batch. Concurrent
    consumers whose batches share contacts (a call's answer in one, its hangup in the
    next) then never queue behind each other's transactions.
    """
    if len(events) != len(received_ats):
        raise ValueError("one received_at per event")
    if not events:
        return []
    if session.new or session.dirty or session.deleted:
        session.flush()  # the rows are read below with Core, which does not autoflush
    call_ids = sorted({e.call_id for e in events if e.call_id})
    tagged = sorted({e.attempt_id for e in events if e.attempt_id is not None})
    a_table, c_table = Attempt.__table__, Contact.__table__
    among = _among if _postgres(session) else _in_list
    found = session.execute(
        select(a_table.c.id, a_table.c.contact_id, a_table.c.call_id).where(
            among(a_table.c.call_id, call_ids) | among(a_table.c.id, tagged)
        )
    ).all()
    contacts: dict[int, _Row] = {}
    rows: dict[int, _Row] = {}
    if found:
        contacts = {
            r.id: _Row(dict(zip(_CONTACT_COLUMNS, r, strict=True)))
            for r in session.execute(
                select(*(c_table.c[name] for name in _CONTACT_COLUMNS))
                .where(among(c_table.c.id, sorted({contact_id for _, contact_id, _ in found})))
                .order_by(c_table.c.id)
                .with_for_update(skip_locked=skip_locked)
            )
        }
        mine = sorted({a for a, contact_id, _ in found if contact_id in contacts})
        if mine:
            rows = {
                r.id: _Row(dict(zip(_ATTEMPT_COLUMNS, r, strict=True)))
                for r in session.execute(
                    select(*(a_table.c[name] for name in _ATTEMPT_COLUMNS))
                    .where(among(a_table.c.id, mine))
                    .order_by(a_table.c.id)
                    .with_for_update()
                )
            }
    # Attempts whose contact another transaction holds (skip_locked only), by id and call.
    busy = {a for a, contact_id, _ in found if contact_id not in contacts}
    busy_calls = {call for a, _, call in found if a in busy and call is not None}
    # As the rows are now, kept current as events adopt calls: a later event of the
    # batch finds its attempt by a call id an earlier one recorded, as it would alone.
    by_call = {a.call_id: a for a in rows.values() if a.call_id is not None}
    campaigns: dict[int, Campaign | None] = {}
    stored: list[dict[str, object]] = []
    dispositions: list[str | None] = []
    for event, received_at in zip(events, received_ats, strict=True):
        if (event.call_id is not None and event.call_id in busy_calls) or (
            event.attempt_id is not None and event.attempt_id in busy
        ):
            # Its attempt is another transaction's now, or an earlier event about the
            # same call was deferred: later, in order.
            if event.call_id is not None:
                busy_calls.add(event.call_id)
            if event.attempt_id is not None:
                busy.add(event.attempt_id)
            dispositions.append(DEFERRED)
            continue
        attempt = by_call.get(event.call_id) if event.call_id else None
        if attempt is None and event.attempt_id is not None:
            attempt = rows.get(event.attempt_id)
        if attempt is None:
            disposition, attempt_id, applied_at = "orphan", None, None
            log.info("event %s for unknown call %s kept as orphan", event.event_type, event.call_id)
        elif event.call_id and attempt.call_id not in (None, event.call_id):
            disposition, attempt_id, applied_at = "ignored", attempt.id, None
            log.error(
                "event for call %s carries the tag of attempt %s, which has call %s",
                event.call_id,
                attempt.id,
                attempt.call_id,
                extra=_ids(attempt),
            )
        else:
            contact = contacts[attempt.contact_id]
            disposition = _apply(session, contact, attempt, event, now, campaigns)
            attempt_id, applied_at = attempt.id, now
            if attempt.call_id is not None:
                by_call[attempt.call_id] = attempt
        dispositions.append(disposition)
        stored.append(_event_row(event, attempt_id, disposition, received_at, applied_at))
    _write_back(session, Attempt, rows.values())
    _write_back(session, Contact, contacts.values())
    _insert_events(session, stored)
    return dispositions


def _among(column: ColumnElement[Any], values: Sequence[object]) -> ColumnElement[bool]:
    """``column = ANY(array)``: one parameter however many values, so the statement's
    text is the same for every batch (an IN list of N values is a new statement for
    psycopg to parse each time: 12% of apply_events)."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def _in_list(column: ColumnElement[Any], values: Sequence[object]) -> ColumnElement[bool]:
    return column.in_(values)


_EVENT_COLUMNS = (
    "attempt_id", "call_id", "event_type", "event_time", "received_at", "applied_at",
    "disposition", "payload",
)  # fmt: skip


def _insert_events(session: Session, stored: list[dict[str, object]]) -> None:
    """The batch's call_event rows: COPY on PostgreSQL (the payload as the JSON text
    the receiver stored, when known), else a bulk insert."""
    if not stored:
        return
    if not _postgres(session):
        for row in stored:
            row.pop("raw", None)
        session.execute(insert(CallEventRow.__table__), stored)
        return
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY call_event ({', '.join(_EVENT_COLUMNS)}) FROM STDIN") as copy:
        for row in stored:
            raw = row.pop("raw", None)
            row["payload"] = raw if raw is not None else json.dumps(row["payload"])
            copy.write_row(tuple(row[c] for c in _EVENT_COLUMNS))


# What apply_events reads and may change of a contact and an attempt (what _apply,
# _adopt, _finish and _revise touch).
_CONTACT_COLUMNS = (
    "id", "status", "attempts", "due_at", "ready_at", "reason", "zones", "last_attempt_id",
)  # fmt: skip
_ATTEMPT_COLUMNS = (
    "id", "contact_id", "campaign_id", "call_id", "status", "created_at", "lease_until",
    "answered_at", "timed_out_at", "hangup_cause", "ended_at", "result", "cause",
)  # fmt: skip


class _Row:
    """A locked row's columns as attributes, for the state machine's functions (which
    read and set attributes, as on a mapped object), remembering what it was: a batch
    is applied to these and written back in one statement per shape of change, without
    the ORM's per-object bookkeeping (half of apply_events' cost, PROFILE.md)."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)
        self._was = values

    def changes(self) -> dict[str, object]:
        return {
            k: v for k, v in self.__dict__.items() if k != "_was" and self._was.get(k, v) != v
        }


# The columns apply_events may change, written back by _write_back.
_WRITTEN = {
    "contact": ("status", "attempts", "due_at", "ready_at", "reason"),
    "attempt": (
        "call_id", "status", "created_at", "lease_until", "answered_at", "timed_out_at",
        "hangup_cause", "ended_at", "result", "cause",
    ),
}  # fmt: skip


@lru_cache(maxsize=4)
def _write_back_sql(table_name: str) -> TextClause:
    """One UPDATE of every changed row of the batch, from arrays (PostgreSQL)."""
    from sqlalchemy.dialects import postgresql

    table = Base.metadata.tables[table_name]
    columns = _WRITTEN[table_name]
    dialect = postgresql.dialect()
    arrays = ", ".join(
        f"CAST(:{c} AS {table.c[c].type.compile(dialect)}[])" for c in ("id", *columns)
    )
    sets = ", ".join(f"{c} = v.{c}" for c in columns)
    return text(
        f"UPDATE {table_name} AS t SET {sets} FROM unnest({arrays}) "
        f"AS v(id, {', '.join(columns)}) WHERE t.id = v.id"
    )


def _write_back(
    session: Session, model: type[Contact] | type[Attempt], rows: Iterable[_Row]
) -> None:
    """UPDATE the changed rows by primary key: on PostgreSQL in one statement over
    arrays; elsewhere grouped by which columns changed, an executemany each."""
    changed = [(row, diff) for row in rows if (diff := row.changes())]
    for row, _ in changed:
        if (obj := session.identity_map.get(identity_key(model, row.id))) is not None:
            session.expire(obj)  # a mapped copy in this session is stale now
    if not changed:
        return
    table = model.__table__
    if _postgres(session):
        columns = _WRITTEN[table.name]
        params = {c: [getattr(r, c) for r, _ in changed] for c in ("id", *columns)}
        session.execute(_write_back_sql(table.name), params)
        return
    shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for row, diff in changed:
        shapes.setdefault(tuple(sorted(diff)), []).append(
            {"_id": row.id, **{f"_{k}": v for k, v in diff.items()}}
        )
    for columns, params in shapes.items():
        session.execute(
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values({c: bindparam(f"_{c}") for c in columns}),
            params,
        )


def _event_row(
    event: CallEvent,
    attempt_id: int | None,
    disposition: str,
    received_at: datetime,
    applied_at: datetime | None,
) -> dict[str, object]:
    return {
        "attempt_id": attempt_id,
        "call_id": event.call_id,
        "event_type": event.event_type,
        "event_time": event.time,
        "received_at": received_at,
        "applied_at": applied_at,
        "disposition": disposition,
        "payload": event.payload,
        "raw": event.raw,
    }


def _apply(
    session: Session,
    contact: Contact,
    attempt: Attempt,
    event: CallEvent,
    now: datetime,
    campaigns: dict[int, Campaign | None] | None = None,
) -> str:
    if event.event_type not in STATUS_EVENTS:
        return "ignored"
    if attempt.call_id is None and event.call_id:
        _adopt(session, contact, attempt, event.call_id, now, campaigns)
    at = event.time or now
    if event.event_type == "answer":
        if attempt.answered_at is not None:
            return "repeat"
        attempt.answered_at = at
    elif event.event_type == "timeout":
        if attempt.timed_out_at is not None:
            return "repeat"
        attempt.timed_out_at = at
    else:  # hangup
        if attempt.hangup_cause is not None:
            return "repeat"
        attempt.hangup_cause = event.cause or "UNSPECIFIED"
        attempt.ended_at = at
    if attempt.status == AttemptStatus.CREATED and attempt.answered_at is not None:
        attempt.status = AttemptStatus.ANSWERED
        attempt.lease_until = now + GRACE
    if attempt.status in (AttemptStatus.CREATED, AttemptStatus.ANSWERED):
        if _unconfirmed(attempt):
            # Normal clearing with no answer seen: the answer may have been lost on the
            # way (a broker restart). Dialing again now could call someone who already
            # answered, so the sweep reads the call from the carrier first.
            attempt.lease_until = now
        elif attempt.hangup_cause is not None or attempt.timed_out_at is not None:
            _finish(session, contact, attempt, now, campaigns)
    elif attempt.status == AttemptStatus.ENDED:
        _revise(contact, attempt)
    return "applied"


def _unconfirmed(attempt: Attempt) -> bool:
    return (
        attempt.hangup_cause == "NORMAL_CLEARING"
        and attempt.answered_at is None
        and attempt.timed_out_at is None
    )


def settle(session: Session, attempt_id: int, now: datetime) -> bool:
    """End a call whose hangup is known, once the carrier's record has been read (or
    could not be, for long): whatever facts are in by now decide the outcome."""
    locked = _lock_in(session, attempt_id, AttemptStatus.CREATED, AttemptStatus.ANSWERED)
    if locked is None:
        return False
    contact, attempt = locked
    if attempt.hangup_cause is None and attempt.timed_out_at is None:
        return False
    _finish(session, contact, attempt, now)
    return True


def _outcome(attempt: Attempt) -> rules.Outcome:
    return rules.outcome(
        answered=attempt.answered_at is not None,
        timed_out=attempt.timed_out_at is not None,
        hangup_cause=attempt.hangup_cause,
    )


def _finish(
    session: Session,
    contact: Contact,
    attempt: Attempt,
    now: datetime,
    campaigns: dict[int, Campaign | None] | None = None,
) -> None:
    result = _outcome(attempt)
    attempt.status = AttemptStatus.ENDED
    attempt.result, attempt.cause = result.result, result.cause
    _count_finished(session, AttemptStatus.ENDED, result.result)
    attempt.ended_at = attempt.ended_at or attempt.timed_out_at or now
    attempt.lease_until = None
    if not _is_current(contact, attempt):
        return
    campaign = _campaign(session, attempt.campaign_id, campaigns)
    assert campaign is not None
    step = rules.after_attempt(
        campaign,
        contact.attempts,
        result,
        now,
        cancelled=campaign.state == CampaignState.CANCELLED,
        zones=contact.zones,
    )
    contact.status, contact.due_at, contact.reason = step.status, step.due_at, step.reason
    contact.ready_at = step.ready_at


def _campaign(
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


_CAMPAIGN_COLUMNS = (
    "id", "state", "run", "max_attempts", "retry_delay", "window", "days", "timezone",
    "call_timeout",
)  # fmt: skip


def _revise(contact: Contact, attempt: Attempt) -> None:
    """A late fact about an ended call: refresh its result; an answer upgrades the contact.

    Only ever forward: an answer that arrives after its hangup turns a scheduled retry (or
    an unanswered contact) into answered, and nothing turns answered back.
    """
    result = _outcome(attempt)
    attempt.result, attempt.cause = result.result, result.cause
    if (
        result.result is Result.ANSWERED
        and contact.last_attempt_id == attempt.id
        and contact.status
        in (ContactStatus.PENDING, ContactStatus.UNANSWERED, ContactStatus.CANCELLED)
    ):
        contact.status, contact.due_at, contact.reason = ContactStatus.ANSWERED, None, None


def _apply_orphans(session: Session, contact: Contact, attempt: Attempt, now: datetime) -> None:
    if attempt.call_id is None:
        return
    orphans = session.scalars(
        select(CallEventRow)
        .where(CallEventRow.call_id == attempt.call_id, CallEventRow.disposition == "orphan")
        .order_by(CallEventRow.id)
        .with_for_update(skip_locked=True)
    ).all()
    for row in orphans:
        from dialer.carrier.events import parse

        row.attempt_id = attempt.id
        row.disposition = _apply(session, contact, attempt, parse(row.payload), now)
        row.applied_at = now


def adopt_orphans(session: Session, now: datetime, older_than: timedelta, limit: int = 500) -> int:
    """Sweep: apply orphan events whose call id has since been recorded on an attempt."""
    pairs = (
        session.execute(
            select(Attempt.id)
            .distinct()
            .join(CallEventRow, CallEventRow.call_id == Attempt.call_id)
            .where(
                CallEventRow.disposition == "orphan", CallEventRow.received_at < now - older_than
            )
            .limit(limit)
        )
        .scalars()
        .all()
    )
    for attempt_id in pairs:
        locked = _lock(session, attempt_id)
        if locked:
            _apply_orphans(session, *locked, now)
    return len(pairs)


# ------------------------------------------------------------------- the campaign


def start(session: Session, campaign: Campaign, now: datetime) -> None:
    """Start a draft campaign (its first run) or resume a paused one."""
    if campaign.state == CampaignState.RUNNING:
        return
    if campaign.state not in (CampaignState.DRAFT, CampaignState.PAUSED):
        raise CampaignStateError(f"campaign {campaign.id} is {campaign.state}: it cannot start")
    first = campaign.state == CampaignState.DRAFT
    campaign.state, campaign.state_reason = CampaignState.RUNNING, None
    campaign.started_at = campaign.started_at or now
    if first:
        _begin_run(session, campaign, now, scheduled_for=None)


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
    # outage, a long previous run) are not started one by one later.
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


def _finish_run(session: Session, campaign: Campaign, now: datetime) -> None:
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


# --------------------------------------------------------------- calling windows


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
        moved += session.execute(
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
                reason=_NEVER_OPEN if due.never else None,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
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


# -------------------------------------------------------------- changing the rules

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
    changed = [k for k, v in changes.items() if k in RULE_FIELDS and getattr(campaign, k) != v]
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
    _withdraw_all_queued(session, campaign.id, now, cancelled=False)


def resume(session: Session, campaign: Campaign, now: datetime) -> None:
    if campaign.state != CampaignState.PAUSED:
        raise CampaignStateError(
            f"campaign {campaign.id} is {campaign.state}: only a paused campaign can be resumed"
        )
    start(session, campaign, now)


def cancel(session: Session, campaign: Campaign, now: datetime) -> None:
    if campaign.state == CampaignState.CANCELLED:
        return
    if campaign.state == CampaignState.COMPLETED and not campaign.schedule:
        raise CampaignStateError(f"campaign {campaign.id} is completed: nothing to cancel")
    # Cancelling a recurring campaign between runs stops its schedule.
    campaign.state, campaign.finished_at = CampaignState.CANCELLED, now
    campaign.next_run_at = None
    session.flush()
    _withdraw_all_queued(session, campaign.id, now, cancelled=True)
    session.execute(
        update(Contact)
        .where(Contact.campaign_id == campaign.id, Contact.status == ContactStatus.PENDING)
        .values(status=ContactStatus.CANCELLED, due_at=None, reason="campaign cancelled")
        .execution_options(synchronize_session=False)
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
    return session.execute(stmt).rowcount


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
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign.id, Campaign.state == CampaignState.RUNNING)
            .values(state=CampaignState.COMPLETED, finished_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
    if done:
        campaign.state, campaign.finished_at = CampaignState.COMPLETED, now
        _finish_run(session, campaign, now)
    return done


def _withdraw_all_queued(
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
    withdrawn = session.execute(
        update(Attempt)
        .where(Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED)
        .values(**_withdrawn(now, cancelled))
        .execution_options(synchronize_session=False)
    ).rowcount
    _count_finished(session, AttemptStatus.WITHDRAWN, None, withdrawn)


def _withdraw_queued(
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
    _count_finished(session, AttemptStatus.WITHDRAWN, None, len(withdrawn))
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
