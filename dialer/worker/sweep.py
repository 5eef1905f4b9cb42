"""The sweep (every ten seconds): re-find what a crash, a lost message or an ambiguous
request left behind: expired leases, queued work nobody ran, ambiguous creates, calls
whose callbacks were lost, events that arrived before their call id was stored.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from dialer import clock
from dialer.carrier import events
from dialer.carrier.errors import Action, CarrierError
from dialer.state import common
from dialer.state import events as applying
from dialer.state import reconcile as reconciling
from dialer.store import db, tally
from dialer.store.models import Attempt, AttemptStatus, Campaign, CampaignState, Contact
from dialer.worker import clients

log = logging.getLogger(__name__)

STALE_QUEUED = timedelta(seconds=30)  # queued this long and nobody ran it: publish again
RECONCILE_MARGIN = common.GRACE
DEFAULT_CALL_TIMEOUT = common.DEFAULT_CALL_TIMEOUT
UNCONFIRMED_LIMIT = timedelta(minutes=10)  # a held hangup is settled without the carrier
# Seconds one sweep spends reading calls from the carrier at most: its reads share the
# account's non-create budget (dialer.policy.requests, 1 a second by default) with call
# control, and what it leaves is found again by the next sweep.
READ_SECONDS = 8.0


def sweep(now: datetime) -> dict[str, int]:
    """One sweep; how many of each thing it found (all zero on a healthy fleet)."""
    report: dict[str, int] = {}
    with db.session_scope() as session:
        report["leases_expired"] = reconciling.expire_leases(session, now)
    report["republished"] = republish_stale(now)
    report["reconciled"] = reconcile(now)
    report["calls_recovered"] = recover_overdue(now)
    with db.session_scope() as session:
        report["orphans_adopted"] = applying.adopt_orphans(session, now, timedelta(seconds=5))
    with db.session_scope() as session:
        tally.compact(session)  # status counts: one row per key again (dialer.store.tally)
    if any(report.values()):
        log.info("sweep: %s", report)
    return report


def republish_stale(now: datetime, limit: int = 5000) -> int:
    """Queued attempts whose dial message was lost (crash, broker restart): publish again.

    A duplicate message is harmless: the claim is conditional.
    """
    with db.session_scope() as session:
        ids = session.scalars(
            select(Attempt.id)
            .join(Campaign, Campaign.id == Attempt.campaign_id)
            .where(
                Attempt.status == AttemptStatus.QUEUED,
                Attempt.queued_at < now - STALE_QUEUED,
                Campaign.state == CampaignState.RUNNING,
            )
            .limit(limit)
        ).all()
        if ids:
            session.execute(
                update(Attempt)
                .where(Attempt.id.in_(ids))
                .values(queued_at=now)
                .execution_options(synchronize_session=False)
            )
            db.after_commit(session, lambda: clients.publish_dials(list(ids)))
    return len(ids)


def reconcile(now: datetime, limit: int = 200) -> int:
    """Settle ambiguous creates from the carrier's own list of calls, matched by tag.

    Only once the call's whole ringing time (plus a margin) has passed: a callback with
    the tag would have settled it by then if the call existed and rang.
    """
    with db.session_scope() as session:
        rows = session.execute(
            select(
                Attempt.id,
                Attempt.tag,
                Attempt.sent_at,
                # The number it went from when known (a pool's: recorded with an
                # ambiguous answer); a pool's call whose worker died before it could
                # say is looked for by its destination alone.
                func.coalesce(
                    Attempt.from_number,
                    case(
                        (func.coalesce(Campaign.from_count, 1) > 1, None),
                        else_=Campaign.from_number,
                    ),
                ),
                Campaign.call_timeout,
                Contact.e164,
            )
            .join(Campaign, Campaign.id == Attempt.campaign_id)
            .join(Contact, Contact.id == Attempt.contact_id)
            .where(Attempt.status == AttemptStatus.UNKNOWN)
            .order_by(Attempt.sent_at)
            .limit(limit)
        ).all()
    settled = 0
    deadline = time.monotonic() + READ_SECONDS
    for attempt_id, tag, sent_at, from_number, call_timeout, to in rows:
        wait = timedelta(seconds=call_timeout or DEFAULT_CALL_TIMEOUT) + RECONCILE_MARGIN
        if sent_at is not None and sent_at + wait > now:
            continue
        if time.monotonic() > deadline:
            break
        try:
            call_id = _find_call(from_number, to, tag, sent_at)
        except CarrierError as exc:
            if exc.action is Action.RATE_LIMITED:
                break  # the budget is spent (or call control goes first): next sweep
            log.warning(
                "cannot reconcile attempt %s yet: %s",
                attempt_id,
                exc,
                extra={"attempt": attempt_id},
            )
            continue
        with db.session_scope() as session:
            reconciling.resolve_unknown(session, attempt_id, call_id, clock.now())
        settled += 1
    return settled


def recover_overdue(now: datetime, limit: int = 200) -> int:
    """Calls past their deadline with no ending recorded: their callbacks were lost
    (a broker restart, a receiver outage longer than the carrier's retries). Read each
    call from the carrier; a finished one is settled from the events it lists."""
    with db.session_scope() as session:
        overdue = reconciling.overdue_calls(session, now, limit)
    recovered = 0
    deadline = time.monotonic() + READ_SECONDS
    for attempt_id, call_id in overdue:
        if time.monotonic() > deadline:
            break
        try:
            call = clients.carrier().get_call(call_id)
            log_ = (
                clients.carrier().get_call_events(call_id)
                if call.get("state") in ("completed", "rejected")
                else []
            )
        except CarrierError as exc:
            if exc.action is Action.RATE_LIMITED:
                break  # the budget is spent (or call control goes first): next sweep
            log.warning(
                "cannot read call %s of attempt %s yet: %s",
                call_id,
                attempt_id,
                exc,
                extra={"attempt": attempt_id},
            )
            with db.session_scope() as session:
                reconciling.check_again(session, attempt_id, now)
                # A hangup held for confirmation is not held forever.
                if _held_since(session, attempt_id) < now - UNCONFIRMED_LIMIT:
                    applying.settle(session, attempt_id, now)
            continue
        with db.session_scope() as session:
            if call.get("state") in ("completed", "rejected"):
                for event in events.from_call(call, log_):
                    applying.apply_event(session, event, now, now)
                applying.settle(session, attempt_id, now)
                recovered += 1
            else:
                reconciling.check_again(session, attempt_id, now)
    return recovered


def _held_since(session: Session, attempt_id: int) -> datetime:
    ended = session.scalar(select(Attempt.ended_at).where(Attempt.id == attempt_id))
    return ended or clock.now()


def _find_call(
    from_number: str | None, to: str | None, tag: str | None, sent_at: datetime | None
) -> str | None:
    """The id of the carrier's call with this attempt's tag, if the carrier has one."""
    carrier = clients.carrier()
    for call in carrier.list_calls(from_=from_number, to=to, sort_order="desc", max_pages=5):
        started = events.parse_time(call.get("startTime"))
        # Older docs list `tag` on a call; where the list leaves it out, read the call.
        found = call["tag"] if "tag" in call else carrier.get_call(call["id"]).get("tag")
        if tag is not None and found == tag:
            return str(call["id"])
        if sent_at is not None and started is not None and started < sent_at - timedelta(minutes=5):
            break  # sorted newest first: everything further is older than the attempt
    return None
