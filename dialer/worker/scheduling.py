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
from datetime import datetime

from sqlalchemy import select

from dialer import clock, logs, settings
from dialer.policy import pacing
from dialer.state import controls, runs, windows
from dialer.state import release as releasing
from dialer.store import db
from dialer.store.models import Campaign, CampaignState
from dialer.worker import clients, dialing
from dialer.worker.dialing import batch_size

log = logging.getLogger(__name__)

HORIZON = 2.0  # seconds of work a tick hands out at the campaign's pace
MAX_RELEASE = 2000  # attempts queued per campaign, at most (an unpaced one: ~5 s of work)
# Released by ``api.start`` and ``api.resume`` in their own process: a first batch or
# two, so the first call goes out at once; the tick (every second) releases the rest at
# the campaign's pace. (The command's nudge releases one batch, dialing.dial_batch's.)
FIRST_RELEASE = 2 * clients.DIAL_BATCH


def release_running(now: datetime) -> None:
    """The tick: start the recurring runs that are due, share the account among the
    campaigns with work to send, and release each running campaign's next moments."""
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
        clients.pacer().set_shares(shares)
    for campaign_id, _ in running:
        with logs.bound(campaign=campaign_id):
            release(campaign_id, shares.get(campaign_id))


def release(
    campaign_id: int,
    share: float | None = None,
    limit: int | None = None,
    dial_here: bool = False,
) -> list[int]:
    """Hand the workers what this campaign can send in the next HORIZON seconds, at its
    share of the account (or its own --cps when no tick has set a share); at most
    ``limit`` (a command releasing the first calls at once, the tick the rest).

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
