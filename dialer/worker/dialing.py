"""Dialing a batch of attempts: claim them, send each in its slot of the fleet-wide pace,
record the calls created, and act on what the carrier refused.

Per call that is two short transactions' share instead of four, and a few statements
instead of two dozen. Safe to run twice (the claim is conditional) and safe never to run
(the sweep, ``dialer.worker.sweep``, re-publishes queued work). A worker that dies
between a send and its record leaves the attempt ``sending`` under its lease: it expires
into ``unknown`` and is reconciled with the carrier, never sent again blindly.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dialer import clock, logs, metrics, settings
from dialer.callbacks.gate import callback_urls
from dialer.carrier.errors import Action, CarrierError
from dialer.carrier.request import CallRequest, InvalidCallRequest
from dialer.policy import callerids, pacing, rules
from dialer.state import send as sending
from dialer.store import db
from dialer.store.models import Attempt
from dialer.worker import clients

log = logging.getLogger(__name__)

MAX_WAIT = 1.0  # a dial waits this long for its slot in a thread; longer, it comes back
RECORD_PATIENCE = 30.0  # seconds a batch keeps trying to record the calls it made
LATE_SLOT = 0.02  # seconds past its slot a send may still go
RECORD_EVERY = 0.5  # seconds: a batch records the calls it created at least this often
# The carrier out of reach (refused, DNS, no connection in time: nothing was sent): the
# whole fleet holds its sends (the pace's hold, as for a 429), for longer while it stays
# out of reach, and the attempts wait for the hold, not each for its own backoff. Every
# few seconds a send tries again, so dialing resumes within UNREACHABLE_HOLD[-1] seconds
# of the carrier's return. None of it is an attempt on anyone (record_not_sent).
UNREACHABLE_HOLD = (0.5, 1.0, 2.0, 5.0)
_unreachable = 0  # this process's failures to reach the carrier since its last success


def batch_size(rate: float) -> int:
    """Attempts per dial message: as many as the pace lets one thread send within
    about MAX_WAIT, so a batch's last call does not wait long for its slot."""
    return max(1, min(clients.DIAL_BATCH, int(rate * MAX_WAIT)))


def dial_batch(attempt_ids: list[int]) -> None:
    """Claim a batch of queued attempts at once, then send each in its slot of the pace,
    and record the calls created in one transaction (see the module's docstring)."""
    lease = timedelta(seconds=2 * settings.get().http_timeout + MAX_WAIT * 2 + 30)
    with db.session_scope() as session:
        # Re-checks campaign state, do-not-call lists and calling windows just before
        # sending (withdraws what may no longer go).
        claimed = sending.claim_batch(session, attempt_ids, clock.now(), lease)
    now = clock.now()
    for attempt_id, not_before in claimed.later:
        clients.publish_dial(attempt_id, (not_before - now).total_seconds())
    created: list[tuple[sending.SendOrder, str]] = []
    # The campaigns' shares of the account, read once for the batch (the tick renews
    # them every second).
    shares = clients.pacer().shares(sorted({o.campaign_id for o in claimed.orders}))
    # Per campaign, what goes back unsent and when to come back: a batch may hold
    # several campaigns' next calls in slot order (the tick's, dialer.worker.scheduling).
    back: dict[int, tuple[list[int], float]] = {}
    # In the order published: slot order.
    position = {aid: i for i, aid in enumerate(attempt_ids)}
    orders = sorted(claimed.orders, key=lambda o: position.get(o.attempt_id, 0))
    recorded_at = time.monotonic()
    try:
        for order in orders:
            if order.campaign_id in back:  # its campaign's earlier call was not due yet
                back[order.campaign_id][0].append(order.attempt_id)
                continue
            if created and time.monotonic() - recorded_at > RECORD_EVERY:
                # A paced batch takes up to MAX_WAIT: its calls are recorded as it
                # goes, not all at the end (their callbacks come first otherwise, and
                # a worker lost mid-batch would leave more of them to reconcile).
                _record_created(created)
                created, recorded_at = [], time.monotonic()
            with logs.bound(
                attempt=order.attempt_id, campaign=order.campaign_id, contact=order.contact_id
            ):
                # The pool number that can go soonest (one Redis read for them all),
                # then its slot, taken right before the request, so nothing slow stands
                # between slot and request: sends stay as evenly spaced as the slots.
                order = pick_number(order)
                wait = take_slot(order, shares)
                if wait is not None:
                    # Not its turn within MAX_WAIT: this and its campaign's later calls
                    # go back, to come near the slot, rather than hold a thread asleep.
                    back[order.campaign_id] = ([order.attempt_id], wait)
                    continue
                call_id = send(order, record=False)
                if call_id is not None:
                    created.append((order, call_id))
        for ids, wait in back.values():
            _give_back(ids, wait)
    finally:
        _record_created(created)


def _give_back(attempt_ids: list[int], wait: float) -> None:
    with db.session_scope() as session:
        back = sending.unclaim(session, attempt_ids)
        if back:
            db.after_commit(session, lambda: clients.publish_dials(back, wait))


def _record_created(created: list[tuple[sending.SendOrder, str]]) -> None:
    """One transaction for a batch's calls; a deadlock, a dropped connection or a
    database restart is retried here for RECORD_PATIENCE seconds, not by re-running the
    task (whose calls are already made): each call recorded now is one the sweep need
    not reconcile with the carrier later, a read on the account's small budget."""
    if not created:
        return
    deadline = time.monotonic() + RECORD_PATIENCE
    for tries in itertools.count():
        try:
            with db.session_scope() as session:
                sending.record_created_many(session, created, clock.now())
            return
        except DBAPIError as exc:
            if time.monotonic() > deadline:
                # The leases expire into ``unknown``; reconciliation finds these calls.
                log.error("could not record %d created calls: %s", len(created), exc)
                return
            log.warning("recording %d created calls failed (%s): again", len(created), exc)
            time.sleep(min(0.05 * 2**tries, 2.0))


# Pool numbers this process saw refused (campaign id, number): skipped by later calls
# of a batch claimed before the pool lost them. Bounded by the pools' sizes.
_refused: set[tuple[int, str]] = set()


def pick_number(order: sending.SendOrder) -> sending.SendOrder:
    """The order with its ``from`` number chosen from its campaign's pool
    (dialer.policy.callerids): with --local-presence the callee's area code first, then
    its state, then any; within that, the number whose pace slot is free soonest."""
    pool = tuple(n for n in order.pool if (order.campaign_id, n) not in _refused) or order.pool
    if not pool:
        return order
    if len(pool) == 1:
        chosen = pool[0]
    else:
        tier = callerids.tiers(pool, order.to, order.local_presence)[0]
        waits = clients.pacer().number_waits(tier) if len(tier) > 1 else {}
        chosen = callerids.choose(tier, order.to, False, waits)
    if chosen == order.from_number:
        return order
    return dataclasses.replace(order, from_number=chosen)


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
        shares[order.campaign_id] = clients.pacer().share(order.campaign_id)
    limits = pacing.limits_for(
        account_cps=s.account_cps,
        number_cps=s.number_cps,
        from_number=order.from_number,
        campaign_id=order.campaign_id,
        campaign_cps=order.campaign_cps,
        share=shares[order.campaign_id],
    )
    tolerance = max(LATE_SLOT, 0.5 / min(lim.rate for lim in limits))
    number = limits[1]  # the ``from`` number's limit (pacing.limits_for)
    # When the number sets the pace (a pool's call), a late send must not crowd the
    # number's next call: beyond NUMBER_LATE it checks first (pacing.Backend.late).
    strict = number.rate <= min(lim.rate for lim in limits)
    on_time = min(tolerance, pacing.NUMBER_LATE) if strict else tolerance
    for _ in range(3):
        slot = clients.pacer().reserve(limits, MAX_WAIT)
        if not slot.reserved:
            back = max(0.05, slot.wait - MAX_WAIT / 2)
            metrics.rate_limit_wait("pace-requeue", back)
            return back
        due = time.monotonic() + slot.wait
        if slot.wait > 0:
            metrics.rate_limit_wait("pace-sleep", slot.wait)
            time.sleep(slot.wait)
        late = time.monotonic() - due
        if late <= on_time:
            return None
        # Late: go only if the number's next call was not booked meanwhile (it would
        # come less than an interval after this one), pushing it back if it was not.
        if strict and late <= tolerance and clients.pacer().late(number, slot.at):
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
        callback_http_method=order.callback_method,
        fallback_url=fallback,
        tag=order.tag,
        **dict(order.options),
    )
    try:
        call_id = clients.carrier().create_call(request)
    except InvalidCallRequest as exc:
        with db.session_scope() as session:
            sending.record_refused(
                session, order.attempt_id, "invalid-request", str(exc), clock.now()
            )
        return None
    except CarrierError as exc:
        _record_error(order, exc)
        return None
    global _unreachable
    _unreachable = 0
    metrics.call_created()
    if record:
        with db.session_scope() as session:
            sending.record_created(
                session, order.attempt_id, call_id, clock.now(), order.from_number
            )
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
    """The carrier-error policy: what each Action does to the attempt (and the fleet)."""
    global _unreachable
    now = clock.now()
    metrics.carrier_error(exc)
    log.warning(
        "attempt %s (campaign %s): carrier said %s", order.attempt_id, order.campaign_id, exc
    )
    with db.session_scope() as session:
        if exc.action in (Action.RETRY, Action.RATE_LIMITED):
            if exc.action is Action.RATE_LIMITED:
                until = exc.retry_at or time.time() + 1.0
                clients.pacer().hold(until)  # the whole fleet backs off, not just this worker
                metrics.rate_limit_wait("pushback", until - time.time())
                delay = max(0.05, until - time.time())
            elif exc.unreachable:
                _unreachable += 1
                hold = UNREACHABLE_HOLD[min(_unreachable, len(UNREACHABLE_HOLD)) - 1]
                clients.pacer().hold(time.time() + hold)
                delay = hold
            else:
                sends = session.scalar(select(Attempt.sends).where(Attempt.id == order.attempt_id))
                delay = rules.resend_delay(sends or 1)
            if sending.record_not_sent(
                session,
                order.attempt_id,
                now + timedelta(seconds=delay),
                str(exc),
                reached=not exc.unreachable,
            ):
                db.after_commit(session, lambda: clients.publish_dial(order.attempt_id, delay))
        elif exc.action is Action.PERMANENT:
            sending.record_refused(
                session, order.attempt_id, exc.code or str(exc.status), str(exc), now
            )
        elif exc.action is Action.STOP:
            log.error(
                "campaign %s paused: the carrier refuses the account (%s)", order.campaign_id, exc
            )
            sending.record_stop(session, order.attempt_id, f"carrier: {exc}", now)
        elif exc.action is Action.FROM_REFUSED:
            _from_refused(session, order, exc, now)
        else:  # AMBIGUOUS, DUPLICATE: the call may exist
            sending.record_ambiguous(session, order.attempt_id, str(exc), order.from_number)


def _from_refused(
    session: Session, order: sending.SendOrder, exc: CarrierError, now: datetime
) -> None:
    """The carrier refuses this ``from`` number (number-access-denied): it leaves the
    campaign's pool and the attempt goes again, from another number; nothing was
    created, so it is not an attempt on the person. Only when no number is left does
    the campaign pause, with the reason."""
    _refused.add((order.campaign_id, order.from_number))
    reason = f"carrier: {exc.code or exc.status}: {exc}"
    removed, left = sending.remove_caller_id(
        session, order.campaign_id, order.from_number, reason, now
    )
    if removed:
        metrics.caller_id_removed(exc.code)
        log.error(
            "campaign %s: caller id %s left the pool (%s); %s active left",
            order.campaign_id,
            order.from_number,
            reason,
            left,
        )
    if not left:
        log.error("campaign %s paused: no caller id left (%s)", order.campaign_id, exc)
        sending.record_stop(session, order.attempt_id, f"no caller id left: {reason}", now)
    elif sending.record_not_sent(session, order.attempt_id, now, reason):
        db.after_commit(session, lambda: clients.publish_dial(order.attempt_id, 0.0))
