"""Releasing due contacts (dialer.state.release)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from dialer.state import release, send
from dialer.store.models import Attempt, CampaignState, Contact, ContactStatus
from tests.helpers import rows_read
from tests.state.helpers import LEASE, T0, make_campaign, sent_attempt


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


def test_many_campaigns_release_at_once_each_up_to_its_limit(session: Session) -> None:
    a, b, c = make_campaign(session, n=5), make_campaign(session, n=3), make_campaign(session, n=2)
    late = session.scalars(select(Contact).where(Contact.campaign_id == b.id, Contact.row == 3))
    late.one().due_at = T0 + timedelta(hours=1)
    made = release.release_due_many(session, [(a.id, 1, 2), (b.id, 2, 10), (c.id, 1, 0)], T0)
    assert {cid: len(ids) for cid, ids in made.items()} == {a.id: 2, b.id: 2}
    session.expire_all()
    for cid, ids in made.items():
        attempts = session.scalars(select(Attempt).where(Attempt.id.in_(ids))).all()
        assert {(x.campaign_id, x.status, x.number) for x in attempts} == {(cid, "queued", 1)}
        contacts = session.scalars(
            select(Contact).where(Contact.campaign_id == cid).order_by(Contact.row)
        ).all()
        # In due order (the rows share a due_at: then by id), each pointing at its attempt.
        assert [x.last_attempt_id for x in contacts[: len(ids)]] == ids
        assert {x.status for x in contacts[: len(ids)]} == {"dialing"}
    assert {x.run for x in session.scalars(select(Attempt).where(Attempt.campaign_id == b.id))} == {
        2
    }
    assert release.release_due_many(session, [(b.id, 2, 10)], T0) == {}, "b's last is not due"


def test_running_reads_every_running_campaigns_work_and_backlog(session: Session) -> None:
    busy = make_campaign(session, n=4, cps=2.0, max_concurrent=3)
    sent_attempt(session, busy)  # created: live
    [claimed] = release.release_due(session, busy, 1, T0)
    send.claim_for_send(session, claimed, T0, LEASE)  # sending: claimed and live
    release.release_due(session, busy, 1, T0)  # queued
    dialing = make_campaign(session, n=1)
    release.release_due(session, dialing, 1, T0)  # its one contact is being dialed
    finished = make_campaign(session, n=1, window="09:00-17:00")
    for x in session.scalars(select(Contact).where(Contact.campaign_id == finished.id)):
        x.status, x.due_at = ContactStatus.ANSWERED, None
    make_campaign(session, n=2).state = CampaignState.PAUSED
    session.flush()
    seen = {r.id: r for r in release.running(session, T0)}
    assert set(seen) == {busy.id, dialing.id, finished.id}, "running campaigns only"
    assert seen[busy.id] == release.Running(
        busy.id, 2.0, 3, windowed=False, due=True, done=False, queued=1, claimed=1, live=2
    )
    assert (seen[dialing.id].due, seen[dialing.id].done, seen[dialing.id].queued) == (
        False,
        False,
        1,
    )
    assert seen[dialing.id].has_work, "a queued attempt is work to send"
    assert (seen[finished.id].windowed, seen[finished.id].done) == (True, True)
    assert not seen[finished.id].has_work
    assert release.backlog(session, busy.id) == (1, 1, 2)


def test_lock_running_leaves_out_campaigns_no_longer_running(session: Session) -> None:
    a, b = make_campaign(session, n=1, run=3), make_campaign(session, n=1)
    b.state = CampaignState.PAUSED
    session.flush()
    assert release.lock_running(session, [b.id, a.id]) == {a.id: 3}
    assert release.lock_running(session, []) == {}


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_the_tick_reads_a_few_rows_per_campaign_not_their_contacts(session: Session) -> None:
    # 40 running campaigns of 500 due contacts, each campaign's together in the table as
    # an import writes them: the tick's reads and its release must touch a few index
    # entries per campaign and the rows released, not the 20,000.
    campaigns = [make_campaign(session, n=1) for _ in range(40)]
    session.execute(
        text(
            'INSERT INTO contact (campaign_id, "row", phone, e164, status, context, attempts,'
            " due_at) SELECT c, g, '+1212' || lpad(g::text, 7, '0'),"
            " '+1212' || lpad(g::text, 7, '0'), 'pending', '{}', 0, :due"
            " FROM unnest(CAST(:cs AS integer[])) AS c CROSS JOIN LATERAL generate_series(2, 500)"
            " AS g ORDER BY c, g"
        ),
        {"cs": [c.id for c in campaigns], "due": T0 - timedelta(minutes=1)},
    )
    session.execute(text("ANALYZE contact"))
    session.execute(text("ANALYZE campaign"))
    before = rows_read(session, "contact")
    seen = release.running(session, T0)
    assert len(seen) == 40 and all(r.due and not r.done for r in seen)
    read = rows_read(session, "contact") - before
    assert read <= 3 * 40, f"reading 40 campaigns' work read {read} contact rows"
    before = rows_read(session, "contact")
    made = release.release_due_many(session, [(c.id, 1, 2) for c in campaigns], T0)
    assert sum(map(len, made.values())) == 80
    read = rows_read(session, "contact") - before
    # As for one campaign: the pick, the new attempt's foreign-key check, the update.
    assert read <= 3 * 80, f"releasing 80 contacts of 40 campaigns read {read} contact rows"
