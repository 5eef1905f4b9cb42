"""Small factories over the public API and the tasks, shared by test modules that run
the real tasks on PostgreSQL (test modules never import from one another)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from dialer import api, clock
from dialer.callbacks.eventstream import Entry
from dialer.store import db
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    Campaign,
    CampaignState,
    Contact,
    ContactStatus,
)
from dialer.worker import applier, scheduling, tasks


def campaign_with(numbers: list[str], **options) -> int:
    report = api.create_campaign(
        "t", "+19195550000", [{"phone": n, "k": "v"} for n in numbers], **options
    )
    with db.session_scope() as session:
        session.get(Campaign, report["id"]).state = CampaignState.RUNNING
    return report["id"]


def attempt(attempt_id: int) -> Attempt:
    with db.session_scope() as session:
        return session.get(Attempt, attempt_id)


# --------------------------------------------- calling rules, on a controlled clock

# Friday 27 November 2026 is the test day: New York is UTC-5, Los Angeles UTC-8.
NY = [f"+1212555{i:04d}" for i in range(3)]
LA = [f"+1310555{i:04d}" for i in range(2)]


def at(*args: int) -> datetime:
    moment = datetime(*args, tzinfo=UTC)
    clock.set_source(lambda: moment)
    return moment


def dial_all(ids: list[int]) -> None:
    for aid in ids:
        tasks.dial.run(aid)


def queued(campaign_id: int) -> list[int]:
    """Attempts released (by a tick, or by a command that releases at once) and unsent."""
    with db.session_scope() as session:
        return list(
            session.scalars(
                select(Attempt.id).where(
                    Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED
                )
            )
        )


def finish_run(campaign_id: int) -> None:
    """Every contact of the current run final (answered), then the tick completes it."""
    with db.session_scope() as session:
        session.execute(
            update(Attempt)
            .where(Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED)
            .values(status=AttemptStatus.WITHDRAWN)
        )
        session.execute(
            update(Contact)
            .where(Contact.campaign_id == campaign_id, Contact.status.in_(["pending", "dialing"]))
            .values(status=ContactStatus.ANSWERED, due_at=None)
        )
    scheduling.release(campaign_id)
    assert api.status(campaign_id)["state"] == "completed"


def recurring(schedule: str = "0 10 * * *") -> int:
    report = api.create_campaign(
        "daily",
        "+19195550000",
        [{"phone": n} for n in [*NY, "not a number", NY[0]]],
        schedule=schedule,
        timezone="America/New_York",
    )
    api.start(report["id"])
    return report["id"]


def apply_callback(payload: dict[str, Any]) -> None:
    """A callback applied as the fleet applies it: a stream entry, through the event
    consumers' path (parse, the state machine, metrics), received now."""
    entry = Entry(id="0-1", payload=json.dumps(payload), received_at=clock.now().isoformat())
    assert applier.apply_entries([entry]) == ([entry.id], []), "the event was taken"
