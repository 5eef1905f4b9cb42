"""Starting and resuming a campaign, with the database driver alone.

``dialer campaign start`` and ``resume`` run this in a process that has imported the
driver and nothing heavy (no SQLAlchemy, no models, no Celery: issue 13, the first call
within 500 ms of typing the command), and ``api.start`` and ``api.resume`` run the same
code over a pooled connection, so the transition has one implementation. The
statements are the dialect's (``dialer.store.dialects.drivers``).

What it writes, in one transaction under the campaign's row lock (the first lock of
every transition, ``dialer.state``): the campaign ``running``, its reason cleared,
``started_at`` kept from its first start; from ``draft``, run 1 begins (its
``campaign_run`` row, and the next occurrence of ``--schedule``), as
``dialer.state.runs`` begins the later runs of a recurring campaign.

It releases nothing. The database says the campaign runs, and the tick (every second)
releases its work whatever else happens; the caller only hands out the first calls
sooner (``api``: in its own process; the command: a message to the workers,
``dialer.worker.nudge``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dialer.errors import ApiError, CampaignStateError
from dialer.store.dialects.drivers import Driver
from dialer.store.enums import CampaignState


def start(conn: Any, driver: Driver, campaign_id: int, now: datetime) -> None:
    """Start a draft campaign (its first run) or resume a paused one; a running one is
    left as it is. ``conn`` is a DB-API connection of ``driver`` not in a transaction
    (or in one, of which this becomes a savepoint)."""
    _to_running(conn, driver, campaign_id, now, resume=False)


def resume(conn: Any, driver: Driver, campaign_id: int, now: datetime) -> None:
    """Resume a paused campaign."""
    _to_running(conn, driver, campaign_id, now, resume=True)


def _to_running(conn: Any, driver: Driver, campaign_id: int, now: datetime, resume: bool) -> None:
    with driver.transaction(conn) as cursor:
        found = driver.lock_campaign(cursor, campaign_id)
        if found is None:
            raise ApiError(f"no campaign with id {campaign_id}")
        state, run, schedule, timezone = found
        if resume and state != CampaignState.PAUSED:
            raise CampaignStateError(
                f"campaign {campaign_id} is {state}: only a paused campaign can be resumed"
            )
        if state == CampaignState.RUNNING:
            return
        if state not in (CampaignState.DRAFT, CampaignState.PAUSED):
            raise CampaignStateError(f"campaign {campaign_id} is {state}: it cannot start")
        if state == CampaignState.PAUSED:
            driver.set_running(cursor, campaign_id, CampaignState.RUNNING, now)
            return
        number = (run or 0) + 1
        # The next occurrence after now: occurrences missed meanwhile are not run one by one.
        next_run_at = _next_run(schedule, timezone, now) if schedule else None
        driver.set_running(cursor, campaign_id, CampaignState.RUNNING, now, (number, next_run_at))
        driver.insert_run(cursor, campaign_id, number, now)


def _next_run(schedule: str, timezone: str, now: datetime) -> datetime:
    # Only for recurring campaigns: the rules (and cronsim) are ~25 ms of a command's start.
    from dialer.policy import rules

    return rules.next_run(schedule, timezone, now)
