"""Start and resume (dialer.state.starting): the transition ``dialer campaign start`` runs
with the database driver alone and ``api.start`` over a pooled connection, on both
dialects, inside the test's transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.errors import ApiError, CampaignStateError
from dialer.policy import rules
from dialer.state import controls, starting
from dialer.store import dialects
from dialer.store.models import CampaignRun, CampaignState
from tests.state.helpers import T0, make_campaign, start


def runs_of(session: Session, campaign_id: int) -> list[tuple[int, object, object]]:
    return [
        (r.number, r.started_at, r.scheduled_for)
        for r in session.scalars(
            select(CampaignRun).where(CampaignRun.campaign_id == campaign_id).order_by("number")
        )
    ]


def test_start_begins_run_one_once(session: Session) -> None:
    campaign = make_campaign(session, state=CampaignState.DRAFT, started_at=None)
    start(session, campaign)
    assert (campaign.state, campaign.run, campaign.started_at) == ("running", 1, T0)
    assert campaign.next_run_at is None and campaign.state_reason is None
    assert runs_of(session, campaign.id) == [(1, T0, None)]
    start(session, campaign, T0 + timedelta(minutes=1))  # already running: nothing changes
    assert (campaign.run, campaign.started_at) == (1, T0)
    assert runs_of(session, campaign.id) == [(1, T0, None)]


def test_a_recurring_campaign_is_due_again_at_its_next_occurrence(session: Session) -> None:
    campaign = make_campaign(
        session,
        state=CampaignState.DRAFT,
        started_at=None,
        schedule="0 10 * * *",
        timezone="America/New_York",
    )
    start(session, campaign)
    assert campaign.next_run_at == rules.next_run("0 10 * * *", "America/New_York", T0)
    assert campaign.next_run_at > T0


def test_resume_carries_on_the_run_and_clears_the_reason(session: Session) -> None:
    campaign = make_campaign(session, state=CampaignState.DRAFT, started_at=None)
    start(session, campaign)
    controls.pause(session, campaign, T0)
    campaign.state_reason = "carrier: out of credit"
    session.flush()
    later = T0 + timedelta(hours=1)
    start(session, campaign, later, resume=True)
    assert (campaign.state, campaign.state_reason) == ("running", None)
    assert (campaign.run, campaign.started_at) == (1, T0), "the first start's time is kept"
    assert runs_of(session, campaign.id) == [(1, T0, None)]
    controls.pause(session, campaign, later)
    start(session, campaign, later)  # start resumes a paused campaign too
    assert campaign.state == "running" and campaign.run == 1


@pytest.mark.parametrize(
    ("state", "resume", "message"),
    [
        ("draft", True, "is draft: only a paused campaign can be resumed"),
        ("running", True, "is running: only a paused campaign can be resumed"),
        ("cancelled", False, "is cancelled: it cannot start"),
        ("completed", False, "is completed: it cannot start"),
    ],
)
def test_a_state_that_forbids_it_is_named_and_nothing_changes(
    session: Session, state: str, resume: bool, message: str
) -> None:
    campaign = make_campaign(session, state=state, started_at=None)
    with pytest.raises(CampaignStateError, match=f"campaign {campaign.id} {message}"):
        start(session, campaign, resume=resume)
    session.refresh(campaign)
    assert (campaign.state, campaign.run, campaign.started_at) == (state, 0, None)
    assert runs_of(session, campaign.id) == []


def test_an_unknown_campaign_is_named(session: Session) -> None:
    conn = session.connection().connection.dbapi_connection
    with pytest.raises(ApiError, match="no campaign with id 99999"):
        starting.start(conn, dialects.of(session).driver, 99999, T0)
