"""Pause, cancel and completion (dialer.state.controls), and resume after a pause."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.state import controls, release
from dialer.store.models import Attempt, AttemptStatus, CampaignState, Contact, ContactStatus
from tests.state.helpers import T0, apply, event, make_campaign, rows, sent_attempt, start


def test_pause_withdraws_queued_work_and_resume_releases_it(session: Session) -> None:
    campaign = make_campaign(session, n=2)
    ids = release.release_due(session, campaign, 2, T0)
    controls.pause(session, campaign, T0)
    session.expire_all()
    assert {session.get(Attempt, i).status for i in ids} == {AttemptStatus.WITHDRAWN}
    start(session, campaign, resume=True)
    again = release.release_due(session, campaign, 5, T0)
    assert len(again) == 2


def test_cancel_cancels_waiting_contacts_and_unanswered_calls(session: Session) -> None:
    campaign = make_campaign(session, n=3)
    live = sent_attempt(session, campaign, "c-live")
    queued = release.release_due(session, campaign, 1, T0)
    controls.cancel(session, campaign, T0)
    statuses = [c.status for c in session.scalars(select(Contact).order_by(Contact.row))]
    assert statuses == ["dialing", "cancelled", "cancelled"]
    assert session.get(Attempt, queued[0]).status == AttemptStatus.WITHDRAWN
    apply(session, event("hangup", "c-live", "USER_BUSY"))
    assert rows(session, live)[7] == ContactStatus.CANCELLED


def test_completed_when_no_contact_waits(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    sent_attempt(session, campaign, "c-1")
    assert not controls.complete_if_done(session, campaign, T0)
    apply(session, event("answer"))
    apply(session, event("hangup", cause="NORMAL_CLEARING"))
    assert controls.complete_if_done(session, campaign, T0)
    assert campaign.state == CampaignState.COMPLETED
