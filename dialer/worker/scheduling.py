"""Releasing due contacts to the dialers: what each running campaign may send next.

Every tick (each second) hands the workers about HORIZON seconds of each running
campaign's work at its share of the account, as dial messages published after the
releasing transaction commits. Due times live in the database
(``dialer.state.release.release_due`` picks the contacts, ``dialer.policy.rules`` says
when a number may be called again). Right after ``campaign start`` or ``resume``,
``release`` hands out one campaign's first calls without waiting for the tick.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import select

from dialer import clock, settings
from dialer.policy import pacing
from dialer.state import controls, runs, windows
from dialer.state import release as releasing
from dialer.store import db
from dialer.store.models import Campaign, CampaignState
from dialer.worker import clients, dialing
from dialer.worker.dialing import MAX_WAIT, batch_size

log = logging.getLogger(__name__)

HORIZON = 2.0  # seconds of work a tick hands out at the campaign's pace
MAX_RELEASE = 2000  # attempts queued per campaign, at most (an unpaced one: ~5 s of work)
# Released by ``api.start`` and ``api.resume`` in their own process: a first batch or
# two, so the first call goes out at once; the tick (every second) releases the rest at
# the campaign's pace. (The command's nudge releases one batch, dialing.dial_batch's.)
FIRST_RELEASE = 2 * clients.DIAL_BATCH
SLOT_LEAD = 0.05  # seconds before its slot a dial released ahead of it is delivered
TICK_LOCK = 30.0  # seconds a tick holds the fleet's tick lock at most


def release_running(now: datetime) -> None:
    """The tick: start the recurring runs that are due, share the account among the
    campaigns with work to send, and release each running campaign's next moments.

    A handful of statements however many campaigns run: the campaigns with their work
    and backlog are read at once (``releasing.running``), and released at once, in one
    transaction (``_release_all``). Only a campaign that completes, or one with calling
    hours, costs statements of its own.

    One tick at a time in the fleet: a tick that finds another running (a busy one
    takes over a second; two beats) leaves the work to it. Overlapping ticks both read
    a campaign's backlog before either released, and released its next call twice;
    with small shares the second waited seconds for its slot and was given back. The
    lock is a lease (TICK_LOCK seconds): a tick lost with its worker holds no one up
    for longer, and a tick that never runs is harmless, as ever.
    """
    pacer = clients.pacer()
    token = pacer.try_lock("tick", TICK_LOCK)
    if token is None:
        return
    try:
        _tick(now)
    finally:
        pacer.unlock("tick", token)


def _tick(now: datetime) -> None:
    with db.session_scope() as session:
        # Recurring campaigns whose next occurrence has come start their next run.
        runs.start_due_runs(session, now)
    with db.session_scope() as session:
        campaigns = releasing.running(session, now)
    # Campaigns with work to send now share the account in proportion to --cps.
    busy = {c.id: c.cps for c in campaigns if c.has_work}
    shares = pacing.fair_shares(settings.get().account_cps, busy) if busy else {}
    if shares:
        clients.pacer().set_shares(shares)
    for c in campaigns:
        if c.done:
            _complete(c.id, now)
    _release_all([c for c in campaigns if not c.done], shares, now)


def _complete(campaign_id: int, now: datetime) -> None:
    """A running campaign with no contact left to dial completes (once in its life: a
    transaction of its own, the campaign row locked FOR UPDATE as every control does)."""
    with db.session_scope() as session:
        campaign = session.scalars(
            select(Campaign).where(Campaign.id == campaign_id).with_for_update()
        ).one_or_none()
        if campaign is not None and controls.complete_if_done(session, campaign, now):
            log.info("campaign %s completed", campaign_id, extra={"campaign": campaign_id})


def _release_all(
    campaigns: list[releasing.Running], shares: dict[int, float], now: datetime
) -> dict[int, list[int]]:
    """Release every campaign's next HORIZON seconds in one transaction: the campaigns
    locked FOR SHARE (the lock order campaign -> contacts, as in ``release``), calling
    windows applied to the ones with hours, then one release for all."""
    s = settings.get()
    # When each campaign's next slot is free: work is released for the slots within
    # HORIZON from then, and delivered just before its first slot (``_publish``).
    read_at = time.monotonic()
    waits = clients.pacer().waits([c.id for c in campaigns if c.due])
    plans = {c.id: _plan(s, shares.get(c.id), c, wait=waits.get(c.id, 0.0)) for c in campaigns}
    wanted = {c.id for c in campaigns if c.due and plans[c.id][1] > 0}
    windowed = {c.id for c in campaigns if c.windowed}
    if not wanted and not windowed:
        return {}
    with db.session_scope() as session:
        runs_of = releasing.lock_running(session, sorted(wanted | windowed))
        if windowed & set(runs_of):
            # Due contacts whose calling window is shut wait (in the table) for it to open.
            for campaign in session.scalars(
                select(Campaign).where(Campaign.id.in_(sorted(windowed & set(runs_of))))
            ):
                windows.defer_closed(session, campaign, now)
        made = releasing.release_due_many(
            session,
            [(cid, runs_of[cid], plans[cid][1]) for cid in sorted(wanted) if cid in runs_of],
            now,
        )
        if made:
            db.after_commit(session, lambda: _publish(made, plans, waits, read_at))
    return made


def _publish(
    made: dict[int, list[int]],
    plans: dict[int, tuple[float, int]],
    waits: dict[int, float],
    read_at: float,
) -> None:
    """Every campaign's dials, in the order of their slots, in batches that each span
    at most MAX_WAIT of slots, delivered SLOT_LEAD before their first.

    With a thousand small shares each campaign releases one call at a time: a message,
    a claim and a record each, and a worker thread asleep for its slot, cost more than
    the call. Batched by slot across campaigns, one thread claims a second's worth of
    them at once and sends each in its slot, as it does one fast campaign's calls."""
    since = time.monotonic() - read_at
    # Each call's slot: its campaign's next free one and then one per interval, and no
    # two closer than the account's interval (waits() counted the account's next slot).
    gap = 1.0 / (settings.get().account_cps * pacing.PACE_MARGIN)
    slots = sorted(
        (max(0.0, waits.get(cid, 0.0)) + k / plans[cid][0], aid)
        for cid, ids in made.items()
        for k, aid in enumerate(ids)
    )
    batch: list[int] = []
    first = at = -gap
    for own, aid in slots:
        at = max(own, at + gap)
        if batch and (len(batch) == clients.DIAL_BATCH or at - first > MAX_WAIT):
            _publish_batch(batch, first - since)
            batch = []
        if not batch:
            first = at
        batch.append(aid)
    if batch:
        _publish_batch(batch, first - since)


def _publish_batch(ids: list[int], first_slot: float) -> None:
    countdown = first_slot - SLOT_LEAD
    clients.publish_dials(ids, countdown if countdown > 0 else None, size=len(ids))


def _plan(
    s: settings.Settings,
    share: float | None,
    c: releasing.Running,
    limit: int | None = None,
    wait: float = 0.0,
) -> tuple[float, int]:
    """(the campaign's pace, how many attempts to release now): its slots in the next
    HORIZON seconds, the first free in ``wait`` seconds, at its share of the account (or
    its own --cps when no tick has set a share), less what is queued or claimed, within
    its concurrency room; at most ``limit``."""
    # Each pool number is paced at DIALER_NUMBER_CPS: a pool of N goes N times as fast.
    rate = min(s.account_cps, s.number_cps * (c.from_count or 1), share or c.cps or float("inf"))
    # Queued attempts will be live calls soon: they take concurrency room too.
    room = c.max_concurrent - c.live - c.queued if c.max_concurrent else None
    # HORIZON seconds of work, capped before the backlog is counted, so an unpaced
    # campaign holds at most MAX_RELEASE queued, never the whole campaign. Claimed
    # attempts waiting in a thread for their slot are work not sent yet too: not
    # counting them released a paced campaign's work faster than its pace, and the
    # threads gave most of it back (each give-back a claim, an update, a message).
    budget = pacing.release_budget(
        min(rate, MAX_RELEASE / HORIZON), HORIZON, c.queued + c.claimed, room, wait
    )
    return rate, budget if limit is None else min(budget, limit)


def release(
    campaign_id: int,
    share: float | None = None,
    limit: int | None = None,
    dial_here: bool = False,
) -> list[int]:
    """Hand the workers what one campaign can send in the next HORIZON seconds, at its
    share of the account (or its own --cps when no tick has set a share); at most
    ``limit``. For a command releasing the first calls at once (``api.start``,
    ``resume``, ``update``, the start's nudge); the tick releases every campaign together.

    ``dial_here`` (a worker, right after a start): this thread dials the first batch
    itself rather than publishing it for another one (``_dial_here``)."""
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
        queued, claimed, live = releasing.backlog(session, campaign_id)
        seen = releasing.Running(
            id=campaign_id,
            cps=campaign.cps,
            max_concurrent=campaign.max_concurrent,
            windowed=False,
            due=True,
            done=False,
            queued=queued,
            claimed=claimed,
            live=live,
            from_count=campaign.from_count,
        )
        rate, budget = _plan(s, share, seen, limit)
        ids = releasing.release_due(session, campaign, budget, now)
        size = batch_size(rate)
        if ids and not dial_here:
            db.after_commit(session, lambda: clients.publish_dials(ids, size=size))
    if ids and dial_here:
        _dial_here(ids, size)
    return ids


def _dial_here(attempt_ids: list[int], size: int) -> None:
    """Dial the first batch of work just released in this thread, then publish the rest.

    A message to another thread costs a publish and a delivery before the first call
    (10 ms idle, up to 90 ms on a busy machine, measured); publishing the rest first
    would put another publish before it. The rest loses nothing by waiting: a batch
    holds about ``dialing.MAX_WAIT`` of work at the pace, so the rest's slots come after
    this batch's anyway. A batch that fails here is published as any other would be
    (its claim is conditional: what was already sent is not sent again); a process that
    dies meanwhile leaves the rest queued for the sweep, as one dying before its
    after-commit publish does."""
    here, rest = attempt_ids[:size], attempt_ids[size:]
    try:
        dialing.dial_batch(here)
    except Exception as exc:
        log.warning("could not dial the first batch here (%s); published instead", exc)
        rest = attempt_ids
    clients.publish_dials(rest, size=size)
