"""Releasing due contacts (dialer.state.release)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.state import release
from dialer.store.models import Contact
from tests.state.helpers import T0, make_campaign


def test_release_takes_due_pending_contacts_once(session: Session) -> None:
    campaign = make_campaign(session, n=5)
    later = session.scalars(select(Contact).where(Contact.row == 5)).one()
    later.due_at = T0 + timedelta(hours=1)
    first = release.release_due(session, campaign, 3, T0)
    second = release.release_due(session, campaign, 10, T0)
    assert len(first) == 3 and len(second) == 1, "the contact due later is not released"
    contacts = session.scalars(select(Contact).order_by(Contact.row)).all()
    assert [c.status for c in contacts] == ["dialing"] * 4 + ["pending"]
    assert {c.last_attempt_id for c in contacts[:4]} == set(first + second)
    assert release.release_due(session, campaign, 10, T0) == []
