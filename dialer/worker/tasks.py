"""Thin Celery tasks: take ids, load rows, check the work is still wanted, act.

- ``tick`` (every second, and right after ``campaign start``) releases as many due
  contacts of each running campaign as can be sent in the next moments, and publishes
  one ``dial`` per attempt after that transaction commits.
- ``dial`` takes its slot in the fleet-wide pace, claims the attempt in the database,
  creates the call, and records what the carrier said.
- callback events are applied in batches by the consumer threads of ``dialer.worker.applier``,
  which every worker runs beside these tasks; ``apply_event`` (one event per task) is
  kept for messages an older receiver left in the broker.
- ``sweep`` (every ten seconds) re-finds what a crash, a lost message or an ambiguous
  request left behind: expired leases, queued work nobody ran, ambiguous creates,
  events that arrived before their call id was stored.

Due times live in the database; countdowns are short (at most ``MAX_COUNTDOWN``),
because Redis redelivers long-ETA tasks (field-notes.md, "Celery on Redis").
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from dialer import clock, logs, metrics, settings
from dialer.callbacks.receiver import callback_urls
from dialer.carrier import events
from dialer.carrier.catapult import (
    Action,
    CallRequest,
    CarrierError,
    CatapultClient,
    InvalidCallRequest,
)
from dialer.policy import pacing, rules
from dialer.state import common, controls, runs, windows
from dialer.state import events as applying
from dialer.state import reconcile as reconciling
from dialer.state import release as releasing
from dialer.state import send as sending
from dialer.store import db, tally
from dialer.store.models import Attempt, AttemptStatus, Campaign, CampaignState, Contact
from dialer.worker import applier
from dialer.worker.app import app

log = logging.getLogger(__name__)

HORIZON = 2.0  # seconds of work a tick hands out at the campaign's pace
MAX_RELEASE = 2000  # attempts queued per campaign, at most (an unpaced one: ~5 s of work)
# Attempts per dial message, at most. Claim, record and the task's own handling are
# per batch; 50 rather than 20 took the workers from 1.50 to 1.31 ms CPU per call and
# 670 to 900 calls/s unpaced (throughput.py), and MAX_RELEASE still makes 40 batches
# for the threads to share. A paced campaign's batches hold at most MAX_WAIT of work.
DIAL_BATCH = 50
MAX_WAIT = 1.0  # a dial waits this long for its slot in a thread; longer, it comes back
MAX_COUNTDOWN = 30.0
LATE_SLOT = 0.02  # seconds past its slot a send may still go
RECORD_EVERY = 0.5  # seconds: a batch records the calls it created at least this often
STALE_QUEUED = timedelta(seconds=30)  # queued this long and nobody ran it: publish again
RECONCILE_MARGIN = common.GRACE
DEFAULT_CALL_TIMEOUT = common.DEFAULT_CALL_TIMEOUT
UNCONFIRMED_LIMIT = timedelta(minutes=10)  # a held hangup is settled without the carrier

_retry_db = {"autoretry_for": (DBAPIError,), "retry_backoff": True, "max_retries": 8}


# --------------------------------------------------------------- per-process clients

_lock = threading.Lock()
_client: CatapultClient | None = None
_pacer: pacing.Backend | None = None


def carrier() -> CatapultClient:
    global _client
    with _lock:
        if _client is None:
            _client = CatapultClient.from_settings(settings.get())
        return _client


def pacer() -> pacing.Backend:
    global _pacer
    with _lock:
        if _pacer is None:
            url = settings.get().redis_url
            if url.startswith("memory://"):
                _pacer = pacing.LocalBackend()
            else:
                import redis

                _pacer = pacing.RedisBackend(redis.Redis.from_url(url))
        return _pacer


def reset_clients() -> None:
    """Forget the process's carrier client and pacer (after a settings change)."""
    global _client, _pacer
    with _lock:
        if _client is not None:
            _client.close()
        _client, _pacer = None, None


def publish_dial(attempt_id: int, countdown: float | None = None) -> None:
    publish_dials([attempt_id], countdown)


def publish_dials(attempt_ids: list[int], countdown: float | None = None) -> None:
    """Publish dial batches of at most ``DIAL_BATCH`` ids (short countdowns only)."""
    later = min(countdown, MAX_COUNTDOWN) if countdown else None
    for i in range(0, len(attempt_ids), DIAL_BATCH):
        dial_batch.apply_async((attempt_ids[i : i + DIAL_BATCH],), countdown=later)


def batch_size(rate: float) -> int:
    """Attempts per dial message: as many as the pace lets one thread send within
    about MAX_WAIT, so a batch's last call does not wait long for its slot."""
    return max(1, min(DIAL_BATCH, int(rate * MAX_WAIT)))


# --------------------------------------------------------------------------- tick


@app.task(name="dialer.tick", **_retry_db)
def tick() -> None:
    now = clock.now()
    with db.session_scope() as session:
        # Recurring campaigns whose next occurrence has come start their next run.
        runs.start_due_runs(session, now)
    with db.session_scope() as session:
        running = session.execute(
            select(Campaign.id, Campaign.cps).where(Campaign.state == CampaignState.RUNNING)
        ).all()
        # Campaigns with work to send now share the account in proportion to --cps.
        busy = {cid: cps for cid, cps in running if releasing.has_due_work(session, cid, now)}
    shares = pacing.fair_shares(settings.get().account_cps, busy) if busy else {}
    if shares:
        pacer().set_shares(shares)
    for campaign_id, _ in running:
        with logs.bound(campaign=campaign_id):
            release(campaign_id, shares.get(campaign_id))


def release(campaign_id: int, share: float | None = None, limit: int | None = None) -> list[int]:
    """Hand the workers what this campaign can send in the next HORIZON seconds, at its
    share of the account (or its own --cps when no tick has set a share); at most
    ``limit`` (a command releasing the first calls at once, the tick the rest)."""
    s = settings.get()
    now = clock.now()
    with db.session_scope() as session:
        # The campaign row first, FOR SHARE: pause and cancel lock it FOR UPDATE before
        # they touch contacts, and attempts reference it, so taking it first keeps the
        # lock order campaign -> contacts for everyone (no deadlock with a cancel).
        campaign = session.scalars(
            select(Campaign).where(Campaign.id == campaign_id).with_for_update(read=True)
        ).one_or_none()
        if campaign is None or campaign.state != CampaignState.RUNNING:
            return []
        if controls.complete_if_done(session, campaign, now):
            log.info("campaign %s completed", campaign_id, extra={"campaign": campaign_id})
            return []
        # Due contacts whose calling window is shut wait (in the table) for it to open.
        windows.defer_closed(session, campaign, now)
        rate = min(s.account_cps, s.number_cps, share or campaign.cps or float("inf"))
        queued, claimed, live = releasing.backlog(session, campaign_id)
        # Queued attempts will be live calls soon: they take concurrency room too.
        room = campaign.max_concurrent - live - queued if campaign.max_concurrent else None
        # HORIZON seconds of work, capped before the backlog is counted, so an unpaced
        # campaign holds at most MAX_RELEASE queued, never the whole campaign. Claimed
        # attempts waiting in a thread for their slot are work not sent yet too: not
        # counting them released a paced campaign's work faster than its pace, and the
        # threads gave most of it back (each give-back a claim, an update, a message).
        budget = pacing.release_budget(
            min(rate, MAX_RELEASE / HORIZON), HORIZON, queued + claimed, room
        )
        if limit is not None:
            budget = min(budget, limit)
        ids = releasing.release_due(session, campaign, budget, now)
        if ids:
            size = batch_size(rate)
            db.after_commit(
                session,
                lambda: [
                    dial_batch.apply_async((ids[i : i + size],)) for i in range(0, len(ids), size)
                ],
            )
    return ids


# --------------------------------------------------------------------------- dial


@app.task(name="dialer.dial", **_retry_db)
def dial(attempt_id: int) -> None:
    """One attempt (a re-queued send, or a message from before batches)."""
    dial_batch(attempt_ids=[attempt_id])


@app.task(name="dialer.dial_batch", **_retry_db)
def dial_batch(attempt_ids: list[int]) -> None:
    """Claim a batch of queued attempts at once, then send each in its slot of the pace,
    and record the calls created in one transaction.

    Per call that is two short transactions' share instead of four, and a few
    statements instead of two dozen. Safe to run twice (the claim is conditional) and
    safe never to run (the sweep re-publishes queued work). A worker that dies between
    a send and its record leaves the attempt ``sending`` under its lease: it expires
    into ``unknown`` and is reconciled with the carrier, never sent again blindly.
    """
    lease = timedelta(seconds=2 * settings.get().http_timeout + MAX_WAIT * 2 + 30)
    with db.session_scope() as session:
        # Re-checks campaign state, do-not-call lists and calling windows just before
        # sending (withdraws what may no longer go).
        claimed = sending.claim_batch(session, attempt_ids, clock.now(), lease)
    now = clock.now()
    for attempt_id, not_before in claimed.later:
        publish_dial(attempt_id, (not_before - now).total_seconds())
    created: list[tuple[sending.SendOrder, str]] = []
    shares: dict[int, float | None] = {}
    recorded_at = time.monotonic()
    try:
        for i, order in enumerate(claimed.orders):
            if created and time.monotonic() - recorded_at > RECORD_EVERY:
                # A paced batch takes up to MAX_WAIT: its calls are recorded as it
                # goes, not all at the end (their callbacks come first otherwise, and
                # a worker lost mid-batch would leave more of them to reconcile).
                _record_created(created)
                created, recorded_at = [], time.monotonic()
            with logs.bound(
                attempt=order.attempt_id, campaign=order.campaign_id, contact=order.contact_id
            ):
                # The slot is taken right before the request, so nothing slow stands
                # between slot and request: sends stay as evenly spaced as the slots.
                wait = take_slot(order, shares)
                if wait is not None:
                    # Not our turn within MAX_WAIT: give the rest back and come back
                    # near the slot instead of holding a thread asleep.
                    _give_back([o.attempt_id for o in claimed.orders[i:]], wait)
                    break
                call_id = send(order, record=False)
                if call_id is not None:
                    created.append((order, call_id))
    finally:
        _record_created(created)


def _give_back(attempt_ids: list[int], wait: float) -> None:
    with db.session_scope() as session:
        back = sending.unclaim(session, attempt_ids)
        if back:
            db.after_commit(session, lambda: publish_dials(back, wait))


def _record_created(created: list[tuple[sending.SendOrder, str]]) -> None:
    """One transaction for a batch's calls; a deadlock or a dropped connection is retried
    here, not by re-running the task (whose calls are already made)."""
    if not created:
        return
    for tries in range(5):
        try:
            with db.session_scope() as session:
                sending.record_created_many(session, created, clock.now())
            return
        except DBAPIError as exc:
            if tries == 4:
                # The leases expire into ``unknown``; reconciliation finds these calls.
                log.error("could not record %d created calls: %s", len(created), exc)
                return
            time.sleep(0.05 * 2**tries)


def take_slot(
    order: sending.SendOrder, shares: dict[int, float | None] | None = None
) -> float | None:
    """Wait for this call's slot in the fleet-wide pace; None when it is time to send,
    else how long to come back after. A slot missed by more than half an interval (at
    least LATE_SLOT: a starved thread) is not used late, where it would bunch calls: a
    new one is taken, twice at most; then the call goes, rather than churn.

    ``shares`` caches the campaigns' shares of the account for one batch (one Redis
    read per batch, not per call; the tick refreshes them every second).
    """
    s = settings.get()
    if shares is None:
        shares = {}
    if order.campaign_id not in shares:
        shares[order.campaign_id] = pacer().share(order.campaign_id)
    limits = pacing.limits_for(
        account_cps=s.account_cps,
        number_cps=s.number_cps,
        from_number=order.from_number,
        campaign_id=order.campaign_id,
        campaign_cps=shares[order.campaign_id] or order.campaign_cps,
    )
    tolerance = max(LATE_SLOT, 0.5 / min(lim.rate for lim in limits))
    for _ in range(3):
        slot = pacer().reserve(limits, MAX_WAIT)
        if not slot.reserved:
            back = max(0.05, slot.wait - MAX_WAIT / 2)
            metrics.rate_limit_wait("pace-requeue", back)
            return back
        due = time.monotonic() + slot.wait
        if slot.wait > 0:
            metrics.rate_limit_wait("pace-sleep", slot.wait)
            time.sleep(slot.wait)
        if time.monotonic() - due <= tolerance:
            return None
    return None


def send(order: sending.SendOrder, *, record: bool = True) -> str | None:
    """Create the call for a claimed attempt; return its id, recorded unless
    ``record`` is False (the caller records a batch at once). Refusals and errors are
    recorded here, each in its own transaction; they return None."""
    callback, fallback = _callback_urls(settings.get())
    request = CallRequest(
        from_=order.from_number,
        to=order.to,
        call_timeout=order.call_timeout,
        callback_url=callback,
        callback_http_method="POST",
        fallback_url=fallback,
        tag=order.tag,
    )
    try:
        call_id = carrier().create_call(request)
    except InvalidCallRequest as exc:
        with db.session_scope() as session:
            sending.record_refused(
                session, order.attempt_id, "invalid-request", str(exc), clock.now()
            )
        return None
    except CarrierError as exc:
        _record_error(order, exc)
        return None
    metrics.call_created()
    if record:
        with db.session_scope() as session:
            sending.record_created(session, order.attempt_id, call_id, clock.now())
    return call_id


_urls: tuple[settings.Settings, tuple[str, str]] | None = None


def _callback_urls(s: settings.Settings) -> tuple[str, str]:
    """callback_urls of the process's settings, built once per settings object."""
    global _urls
    urls = _urls
    if urls is None or urls[0] is not s:
        urls = _urls = (s, callback_urls(s))
    return urls[1]


def _record_error(order: sending.SendOrder, exc: CarrierError) -> None:
    now = clock.now()
    metrics.carrier_error(exc)
    log.warning(
        "attempt %s (campaign %s): carrier said %s", order.attempt_id, order.campaign_id, exc
    )
    with db.session_scope() as session:
        if exc.action in (Action.RETRY, Action.RATE_LIMITED):
            if exc.action is Action.RATE_LIMITED:
                until = exc.retry_at or time.time() + 1.0
                pacer().hold(until)  # the whole fleet backs off, not just this worker
                metrics.rate_limit_wait("pushback", until - time.time())
                delay = max(0.05, until - time.time())
            else:
                sends = session.scalar(select(Attempt.sends).where(Attempt.id == order.attempt_id))
                delay = rules.resend_delay(sends or 1)
            if sending.record_not_sent(
                session, order.attempt_id, now + timedelta(seconds=delay), str(exc)
            ):
                db.after_commit(session, lambda: publish_dial(order.attempt_id, delay))
        elif exc.action is Action.PERMANENT:
            sending.record_refused(
                session, order.attempt_id, exc.code or str(exc.status), str(exc), now
            )
        elif exc.action is Action.STOP:
            log.error(
                "campaign %s paused: the carrier refuses the account (%s)", order.campaign_id, exc
            )
            sending.record_stop(session, order.attempt_id, f"carrier: {exc}", now)
        else:  # AMBIGUOUS, DUPLICATE: the call may exist
            sending.record_ambiguous(session, order.attempt_id, str(exc))


# ------------------------------------------------------------------------ callbacks

# Callbacks arrive on the event stream and are applied in batches by consumer threads
# that every worker runs beside its task pool (dialer.worker.applier), not by a task per event.
applier.install(app)


@app.task(name="dialer.apply_event", **_retry_db)
def apply_event(payload: dict[str, Any], received_at: str) -> str:
    """One event as a task: how receivers before the event stream handed events over.
    Kept for the messages such a receiver left in the broker at an upgrade."""
    try:
        event = events.parse(payload)
    except events.BadEvent as exc:  # the receiver validated it; never loop on a bad one
        log.error("dropping malformed event: %s", exc)
        metrics.event_applied("malformed", None)
        return "malformed"
    with logs.bound(attempt=event.attempt_id), db.session_scope() as session:
        disposition = applying.apply_event(
            session, event, datetime.fromisoformat(received_at), clock.now()
        )
    metrics.event_applied(disposition, received_at)  # committed: the lag ends here
    return disposition


# -------------------------------------------------------------------------- sweep


@app.task(name="dialer.sweep", **_retry_db)
def sweep() -> dict[str, int]:
    now = clock.now()
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
            db.after_commit(session, lambda: publish_dials(list(ids)))
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
                Campaign.from_number,
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
    for attempt_id, tag, sent_at, from_number, call_timeout, to in rows:
        wait = timedelta(seconds=call_timeout or DEFAULT_CALL_TIMEOUT) + RECONCILE_MARGIN
        if sent_at is not None and sent_at + wait > now:
            continue
        try:
            call_id = _find_call(from_number, to, tag, sent_at)
        except CarrierError as exc:
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
    for attempt_id, call_id in overdue:
        try:
            call = carrier().get_call(call_id)
            log_ = (
                carrier().get_call_events(call_id)
                if call.get("state") in ("completed", "rejected")
                else []
            )
        except CarrierError as exc:
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


def _held_since(session: Any, attempt_id: int) -> datetime:
    ended = session.scalar(select(Attempt.ended_at).where(Attempt.id == attempt_id))
    return ended or clock.now()


def _find_call(
    from_number: str, to: str | None, tag: str | None, sent_at: datetime | None
) -> str | None:
    """The id of the carrier's call with this attempt's tag, if the carrier has one."""
    for call in carrier().list_calls(from_=from_number, to=to, sort_order="desc", max_pages=5):
        started = events.parse_time(call.get("startTime"))
        # Older docs list `tag` on a call; where the list leaves it out, read the call.
        found = call["tag"] if "tag" in call else carrier().get_call(call["id"]).get("tag")
        if tag is not None and found == tag:
            return str(call["id"])
        if sent_at is not None and started is not None and started < sent_at - timedelta(minutes=5):
            break  # sorted newest first: everything further is older than the attempt
    return None
