"""Do-not-call additions suppress waiting contacts (dialer.state.suppression)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.state import suppression
from dialer.store.models import Contact
from tests.state.helpers import T0, make_campaign


def test_dnc_addition_suppresses_waiting_contacts(session: Session) -> None:
    from dialer.store.models import Suppression

    make_campaign(session, n=2)
    session.add(Suppression(campaign_id=None, e164="+19195551001", added_at=T0))
    session.flush()
    assert suppression.suppress_listed(session) == 1
    statuses = [c.status for c in session.scalars(select(Contact).order_by(Contact.row))]
    assert statuses == ["pending", "suppressed"]
