"""Claiming and recording calls: created, not sent, refused, stop (dialer.state.send)."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.state import reconcile, release, send
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    Campaign,
    CampaignState,
    Contact,
    ContactStatus,
)
from tests.state.helpers import (
    LEASE,
    T0,
    apply,
    event,
    make_campaign,
    rows,
    sent_attempt,
    statements,
)

# ------------------------------------------------------------------------ claiming


def test_claim_is_exclusive(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    [aid] = release.release_due(session, campaign, 1, T0)
    order = send.claim_for_send(session, aid, T0, LEASE)
    assert order is not None and order.to == "+19195551000"
    assert json.loads(order.tag) == {"attempt": aid, "campaign": campaign.id, "name": "n0"}
    assert send.claim_for_send(session, aid, T0, LEASE) is None, "claimed twice"


def test_ten_campaigns_calls_are_claimed_in_as_many_statements_as_one(
    session: Session,
) -> None:
    # The tick batches many campaigns' next calls by slot (dialer.worker.scheduling).
    def claim(campaigns: list[Campaign]) -> int:
        ids = [aid for c in campaigns for aid in release.release_due(session, c, 1, T0)]
        with statements() as seen:
            claimed = send.claim_batch(session, ids, T0, LEASE)
        assert len(claimed.orders) == len(ids)
        return len(seen)

    one = claim([make_campaign(session, n=1)])
    assert claim([make_campaign(session, n=1) for _ in range(10)]) == one


def test_claim_on_paused_campaign_withdraws_and_contact_waits(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    [aid] = release.release_due(session, campaign, 1, T0)
    campaign.state = CampaignState.PAUSED
    session.flush()
    assert send.claim_for_send(session, aid, T0, LEASE) is None
    session.expire_all()
    assert session.get(Attempt, aid).status == AttemptStatus.WITHDRAWN
    contact = session.scalars(select(Contact)).one()
    assert contact.status == ContactStatus.PENDING and contact.attempts == 0


# ------------------------------------------------------------ recording created calls


def test_recording_a_batch_ends_as_recording_each_alone(session: Session) -> None:
    """record_created_many (one statement for the ordinary calls) leaves the rows
    record_created leaves one by one: calls whose claim lease ran out (unknown: the
    response came late), one of them adopted first by a tagged callback, one whose
    untagged hangup waits as an orphan."""

    def scenario(batched: bool) -> list[tuple]:
        nested = session.begin_nested()
        campaign = make_campaign(session, n=4)
        sent = [sent_attempt(session, campaign, call_id=None) for _ in range(4)]
        orders = {o.attempt_id: o for o in _orders(session, sent)}
        apply(session, event("answer", "c-b", attempt_id=sent[1].id))  # adopted first
        apply(session, event("hangup", "c-c", "USER_BUSY"))  # orphan until recorded
        reconcile.expire_leases(session, T0 + LEASE + timedelta(seconds=1))  # unknown
        created = [(orders[a.id], f"c-{k}") for a, k in zip(sent, "abcd", strict=True)]
        if batched:
            send.record_created_many(session, created, T0)
        else:
            for order, call_id in created:
                send.record_created(session, order.attempt_id, call_id, T0)
        got = [rows(session, a) for a in sent]
        nested.rollback()
        return got

    batched = scenario(batched=True)
    assert batched == scenario(batched=False)
    assert [(r[0], r[3], r[-2]) for r in batched] == [
        ("created", "c-a", 1),
        ("answered", "c-b", 1),
        ("ended", "c-c", 1),
        ("created", "c-d", 1),
    ]


def _orders(session: Session, sent: list[Attempt]) -> list[send.SendOrder]:
    """What the claim handed the worker for these (already claimed) attempts."""
    return [
        send.SendOrder(a.id, a.campaign_id, "+19195550000", "+19195551000", a.tag or "",
                           None, None, a.contact_id)
        for a in sent
    ]  # fmt: skip


# ----------------------------------------------------------------- carrier errors


def test_not_sent_requeues_without_counting(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    later = T0 + timedelta(seconds=5)
    assert send.record_not_sent(session, attempt.id, later, "503 unavailable")
    assert send.claim_for_send(session, attempt.id, T0, LEASE) is None, "not before its time"
    assert send.claim_for_send(session, attempt.id, later, LEASE) is not None
    assert rows(session, attempt)[9] == 0


def test_refused_destination_fails_the_contact(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    send.record_refused(session, attempt.id, "invalid-call-to-number", "403 forbidden", T0)
    assert rows(session, attempt)[7] == ContactStatus.FAILED


def test_stop_pauses_the_campaign_and_keeps_the_contact(session: Session) -> None:
    campaign = make_campaign(session, n=2)
    attempt = sent_attempt(session, campaign, call_id=None)
    other = release.release_due(session, campaign, 1, T0)
    send.record_stop(session, attempt.id, "carrier: 403 credit", T0)
    session.expire_all()
    assert session.get(Campaign, campaign.id).state == CampaignState.PAUSED
    assert session.get(Attempt, other[0]).status == AttemptStatus.WITHDRAWN
    assert {c.status for c in session.scalars(select(Contact))} == {ContactStatus.PENDING}
