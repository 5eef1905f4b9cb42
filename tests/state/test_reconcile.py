"""Unknown calls resolved and expired leases (dialer.state.reconcile)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dialer.state import reconcile, release, send
from dialer.store.models import AttemptStatus, ContactStatus
from tests.state.helpers import LEASE, T0, make_campaign, rows, sent_attempt


def test_unknown_resolved_as_absent_is_dialed_again_uncounted(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    send.record_ambiguous(session, attempt.id, "read timeout")
    reconcile.resolve_unknown(session, attempt.id, None, T0)
    assert rows(session, attempt)[0] == AttemptStatus.WITHDRAWN
    assert rows(session, attempt)[7:10] == (ContactStatus.PENDING, T0, 0)
    assert len(release.release_due(session, campaign, 1, T0)) == 1


def test_unknown_resolved_as_found_adopts_the_call(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    send.record_ambiguous(session, attempt.id, "read timeout")
    reconcile.resolve_unknown(session, attempt.id, "c-found", T0)
    assert rows(session, attempt)[0:4:3] == (AttemptStatus.CREATED, "c-found")


def test_expired_lease_becomes_unknown_not_a_new_dial(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    assert reconcile.expire_leases(session, T0 + LEASE / 2) == 0
    assert reconcile.expire_leases(session, T0 + 2 * LEASE) == 1
    assert rows(session, attempt)[0] == AttemptStatus.UNKNOWN
    assert release.release_due(session, campaign, 1, T0 + 2 * LEASE) == []
