"""The state machine on PostgreSQL and SQLite (tests/state/conftest.py), each test in a
rolled-back transaction."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.carrier.events import CallEvent, parse
from dialer.state import controls, events, reconcile, release, send, suppression, tags
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    Campaign,
    CampaignState,
    Contact,
    ContactStatus,
)
from dialer.store.models import CallEvent as CallEventRow

T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def make_campaign(session: Session, n: int = 3, **options) -> Campaign:
    campaign = Campaign(
        name="t",
        from_number="+19195550000",
        state=CampaignState.RUNNING,
        created_at=T0,
        started_at=T0,
        columns=["name"],
        tag_fields=["name"],
        **options,
    )
    session.add(campaign)
    session.flush()
    session.add_all(
        Contact(
            campaign_id=campaign.id,
            row=i + 1,
            phone=f"919555{1000 + i}",
            e164=f"+1919555{1000 + i}",
            status=ContactStatus.PENDING,
            due_at=T0,
            context={"name": f"n{i}"},
            attempts=0,
        )
        for i in range(n)
    )
    session.flush()
    return campaign


def sent_attempt(session: Session, campaign: Campaign, call_id: str | None = "c-1") -> Attempt:
    """Release, claim and (unless call_id is None) record one created call."""
    [aid] = release.release_due(session, campaign, 1, T0)
    order = send.claim_for_send(session, aid, T0, LEASE)
    assert order is not None
    if call_id is not None:
        send.record_created(session, aid, call_id, T0)
    return session.get(Attempt, aid)


def event(
    kind: str,
    call_id: str = "c-1",
    cause: str | None = None,
    attempt_id: int | None = None,
    at: datetime | None = None,
) -> CallEvent:
    payload = {
        "eventType": kind,
        "callId": call_id,
        "from": "+19195550000",
        "to": "+19195551000",
        "time": (at or T0).isoformat().replace("+00:00", "Z"),
    }
    if cause:
        payload["cause"] = cause
    if attempt_id is not None:
        payload["tag"] = json.dumps({"attempt": attempt_id, "campaign": 1})
    return parse(payload)


def apply(session: Session, ev: CallEvent, now: datetime = T0) -> str:
    return events.apply_event(session, ev, now, now)


def rows(session: Session, attempt: Attempt) -> tuple:
    session.flush()
    session.expire_all()
    a = session.get(Attempt, attempt.id)
    c = session.get(Contact, a.contact_id)
    return (
        a.status,
        a.result,
        a.cause,
        a.call_id,
        a.answered_at,
        a.timed_out_at,
        a.hangup_cause,
        c.status,
        c.due_at,
        c.attempts,
        c.reason,
    )


# ------------------------------------------------------------------- releasing work


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


def test_claim_is_exclusive(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    [aid] = release.release_due(session, campaign, 1, T0)
    order = send.claim_for_send(session, aid, T0, LEASE)
    assert order is not None and order.to == "+19195551000"
    assert json.loads(order.tag) == {"attempt": aid, "campaign": campaign.id, "name": "n0"}
    assert send.claim_for_send(session, aid, T0, LEASE) is None, "claimed twice"


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


def test_pause_withdraws_queued_work_and_resume_releases_it(session: Session) -> None:
    campaign = make_campaign(session, n=2)
    ids = release.release_due(session, campaign, 2, T0)
    controls.pause(session, campaign, T0)
    session.expire_all()
    assert {session.get(Attempt, i).status for i in ids} == {AttemptStatus.WITHDRAWN}
    controls.resume(session, campaign, T0)
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


# ------------------------------------------------------------------------ outcomes


@pytest.mark.parametrize(
    ("events", "result", "contact_status", "retry"),
    [
        ([("answer", None), ("hangup", "NORMAL_CLEARING")], "answered", "answered", False),
        ([("hangup", "USER_BUSY")], "busy", "pending", True),
        ([("timeout", None), ("hangup", "NO_ANSWER")], "no-answer", "pending", True),
        ([("hangup", "CALL_REJECTED")], "rejected", "unanswered", False),
        ([("hangup", "NORMAL_CIRCUIT_CONGESTION")], "error", "pending", True),
        ([("hangup", "UNALLOCATED_NUMBER")], "error", "failed", False),
        ([("hangup", "SOMETHING_NEW")], "error", "pending", True),
    ],
)
def test_outcomes_follow_the_retry_policy(
    session: Session, events, result, contact_status, retry
) -> None:
    campaign = make_campaign(session, n=1, retry_delay=600, max_attempts=3)
    attempt = sent_attempt(session, campaign)
    for kind, cause in events:
        assert apply(session, event(kind, cause=cause)) == "applied"
    a_status, a_result, *_, c_status, due, made, _reason = rows(session, attempt)
    assert (a_status, a_result, c_status, made) == ("ended", result, contact_status, 1)
    assert due == (T0 + timedelta(seconds=600) if retry else None)


def test_last_attempt_exhausts_retries(session: Session) -> None:
    campaign = make_campaign(session, n=1, max_attempts=2, retry_delay=0)
    first = sent_attempt(session, campaign, "c-1")
    apply(session, event("hangup", "c-1", "USER_BUSY"))
    assert rows(session, first)[7] == ContactStatus.PENDING
    second = sent_attempt(session, campaign, "c-2")
    assert second.number == 2
    apply(session, event("hangup", "c-2", "USER_BUSY"))
    assert rows(session, second)[7:10] == (ContactStatus.UNANSWERED, None, 2)


# ------------------------------------------------------- callbacks in any order


CLEAN = {
    "answered": [("answer", None), ("hangup", "NORMAL_CLEARING")],
    "no-answer": [("timeout", None), ("hangup", "NO_ANSWER")],
    "busy": [("hangup", "USER_BUSY")],
    "rejected": [("hangup", "CALL_REJECTED")],
}


def run_sequence(session: Session, outcome_events, order, tagged: bool) -> tuple:
    campaign = make_campaign(session, n=1, max_attempts=3)
    attempt = sent_attempt(session, campaign, None if tagged else "c-1")
    for i in order:
        kind, cause = outcome_events[i]
        apply(
            session, event(kind, "c-1", cause, attempt_id=attempt.id, at=T0 + timedelta(seconds=i))
        )
    return rows(session, attempt)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), outcome=st.sampled_from(sorted(CLEAN)), tagged=st.booleans())
def test_any_order_and_repeats_end_in_the_clean_rows(
    session: Session, data, outcome, tagged
) -> None:
    events_ = CLEAN[outcome]
    order = data.draw(
        st.lists(
            st.sampled_from(range(len(events_))), min_size=len(events_), max_size=3 * len(events_)
        ).filter(lambda xs: set(xs) == set(range(len(events_))))
    )
    nested = session.begin_nested()
    clean = run_sequence(session, events_, list(range(len(events_))), tagged)
    nested.rollback()
    nested = session.begin_nested()
    shuffled = run_sequence(session, events_, order, tagged)
    nested.rollback()
    assert shuffled == clean


def test_every_permutation_of_answered_call_is_answered(session: Session) -> None:
    full = [("answer", None), ("timeout", None), ("hangup", "NORMAL_CLEARING")][::2]
    results = set()
    for perm in itertools.permutations(range(len(full))):
        nested = session.begin_nested()
        results.add(run_sequence(session, full, list(perm), tagged=False)[7])
        nested.rollback()
    assert results == {ContactStatus.ANSWERED}


# --------------------------------------------------- events before the call id


def test_tagged_event_before_create_response_adopts_the_call(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    assert apply(session, event("answer", "c-early", attempt_id=attempt.id)) == "applied"
    send.record_created(session, attempt.id, "c-early", T0)  # the response, late
    apply(session, event("hangup", "c-early", "NORMAL_CLEARING"))
    status, result, _, call_id, *_, c_status, _, made, _ = rows(session, attempt)
    assert (status, result, call_id, c_status, made) == (
        "ended",
        "answered",
        "c-early",
        "answered",
        1,
    )


def test_untagged_event_before_create_response_waits_as_orphan(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    assert apply(session, event("hangup", "c-x", "USER_BUSY")) == "orphan"
    assert rows(session, attempt)[0] == AttemptStatus.SENDING, "an orphan changes no row"
    send.record_created(session, attempt.id, "c-x", T0)
    assert rows(session, attempt)[:2] == ("ended", "busy")
    dispositions = session.scalars(select(CallEventRow.disposition)).all()
    assert dispositions == ["applied"]


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


def test_event_for_unknown_call_changes_no_status(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, "c-1")
    before = rows(session, attempt)
    assert apply(session, event("hangup", "c-nobody", "USER_BUSY")) == "orphan"
    assert apply(session, event("hangup", "c-nobody", "USER_BUSY", attempt_id=999999)) == "orphan"
    assert rows(session, attempt) == before


def test_tag_of_another_call_is_ignored(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, "c-1")
    before = rows(session, attempt)
    assert apply(session, event("hangup", "c-2", "USER_BUSY", attempt_id=attempt.id)) == "ignored"
    assert rows(session, attempt) == before


# ----------------------------------------------------- carrier errors, ambiguity


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


def test_completed_when_no_contact_waits(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    sent_attempt(session, campaign, "c-1")
    assert not controls.complete_if_done(session, campaign, T0)
    apply(session, event("answer"))
    apply(session, event("hangup", cause="NORMAL_CLEARING"))
    assert controls.complete_if_done(session, campaign, T0)
    assert campaign.state == CampaignState.COMPLETED


def test_dnc_addition_suppresses_waiting_contacts(session: Session) -> None:
    from dialer.store.models import Suppression

    make_campaign(session, n=2)
    session.add(Suppression(campaign_id=None, e164="+19195551001", added_at=T0))
    session.flush()
    assert suppression.suppress_listed(session) == 1
    statuses = [c.status for c in session.scalars(select(Contact).order_by(Contact.row))]
    assert statuses == ["pending", "suppressed"]


def test_tag_stays_within_256_characters() -> None:
    tag = tags.build_tag(123, 4, {"a": "x" * 100, "b": "y" * 200, "c": "z"}, ["a", "b", "c"])
    decoded = json.loads(tag)
    assert len(tag) <= 256
    assert decoded == {"attempt": 123, "campaign": 4, "a": "x" * 100, "c": "z"}


def test_normal_clearing_without_answer_waits_for_the_carriers_record(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, "c-1")
    apply(session, event("hangup", cause="NORMAL_CLEARING"), now=T0)
    a_status, *_, c_status, due, made, _ = rows(session, attempt)
    assert (a_status, c_status) == ("created", "dialing"), "no retry before confirmation"
    assert reconcile.overdue_calls(session, T0 + timedelta(seconds=1), 10) == [(attempt.id, "c-1")]
    assert events.settle(session, attempt.id, T0)
    assert rows(session, attempt)[1] == "no-answer"
    assert rows(session, attempt)[7] == ContactStatus.PENDING


# ------------------------------------------------------------- events in batches


def campaign_rows(session: Session, campaign_id: int) -> tuple:
    """Every row a campaign's events can touch, with ids as positions (two runs in
    rolled-back savepoints get different ids from the sequences)."""
    session.flush()
    session.expire_all()
    attempts_ = session.scalars(
        select(Attempt).where(Attempt.campaign_id == campaign_id).order_by(Attempt.id)
    ).all()
    position = {a.id: i for i, a in enumerate(attempts_)}
    contacts = session.scalars(
        select(Contact).where(Contact.campaign_id == campaign_id).order_by(Contact.id)
    ).all()
    calls = {a.call_id for a in attempts_} | {"c-nobody"}
    stored = session.scalars(
        select(CallEventRow)
        .where(
            CallEventRow.call_id.in_([c for c in calls if c])
            | CallEventRow.attempt_id.in_(list(position))
        )
        .order_by(CallEventRow.id)
    ).all()
    return (
        [
            (
                a.status, a.result, a.cause, a.call_id, a.created_at, a.answered_at,
                a.timed_out_at, a.ended_at, a.hangup_cause, a.lease_until,
            )
            for a in attempts_
        ],
        [
            (c.status, c.due_at, c.ready_at, c.attempts, c.reason, position.get(c.last_attempt_id))
            for c in contacts
        ],
        [
            (position.get(e.attempt_id), e.call_id, e.event_type, e.disposition, e.received_at,
             e.applied_at, {k: v for k, v in e.payload.items() if k != "tag"},
             "tag" in e.payload)  # the tag names the attempt by its id
            for e in stored
        ],
    )  # fmt: skip


def calls_for_batches(session: Session, outcomes: list[str]) -> tuple[int, list[tuple]]:
    """One sent attempt per outcome: even ones with their call id recorded, odd ones
    still waiting for the create response (their events carry the tag). Returns the
    campaign and each call's events as (kind, call id, cause, attempt id, time)."""
    campaign = make_campaign(session, n=len(outcomes), max_attempts=2, retry_delay=60)
    calls = []
    for i, outcome in enumerate(outcomes):
        call_id = f"c-{i}"
        attempt = sent_attempt(session, campaign, call_id if i % 2 == 0 else None)
        for j, (kind, cause) in enumerate(CLEAN[outcome]):
            calls.append((kind, call_id, cause, attempt.id, T0 + timedelta(seconds=10 * i + j)))
        calls.append(("speak", call_id, None, attempt.id, T0))  # stored, never applied
    calls.append(("hangup", "c-nobody", "USER_BUSY", None, T0))  # an orphan
    return campaign.id, calls


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    outcomes=st.lists(st.sampled_from(sorted(CLEAN)), min_size=1, max_size=4),
)
def test_events_in_batches_end_in_the_rows_one_by_one_gives(
    session: Session, data, outcomes
) -> None:
    nested = session.begin_nested()
    _, calls = calls_for_batches(session, outcomes)
    nested.rollback()
    # Every event at least once, some repeated, in any order; tags on some of them only
    # (an untagged event of a call whose id is not recorded yet is an orphan, unless an
    # earlier event of the same batch adopted the call).
    picks = data.draw(st.lists(st.integers(0, len(calls) - 1), max_size=len(calls)))
    order = data.draw(st.permutations(list(range(len(calls))) + picks))
    tagged = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(order)), max_size=6))))
    now = T0 + timedelta(minutes=1)

    def run(batched: bool) -> tuple:
        nested = session.begin_nested()
        campaign_id, calls = calls_for_batches(session, outcomes)
        evs = []
        for i, tag in zip(order, tagged, strict=True):
            kind, call_id, cause, attempt_id, at = calls[i]
            evs.append(event(kind, call_id, cause, attempt_id if tag else None, at))
        if batched:
            for a, b in zip([0, *cuts], [*cuts, len(evs)], strict=True):
                chunk = evs[a:b]
                got = events.apply_events(session, chunk, [now] * len(chunk), now)
                assert len(got) == len(chunk)
        else:
            for ev in evs:
                events.apply_event(session, ev, now, now)
        rows_ = campaign_rows(session, campaign_id)
        nested.rollback()
        return rows_

    assert run(batched=True) == run(batched=False)


def test_a_batch_returns_each_events_disposition(session: Session) -> None:
    campaign = make_campaign(session, n=2)
    first = sent_attempt(session, campaign, "c-1")
    waiting = sent_attempt(session, campaign, None)
    batch = [
        event("answer", "c-1"),
        event("answer", "c-1"),
        event("speak", "c-1"),
        event("hangup", "c-2", "USER_BUSY"),  # not known yet: orphan
        event("answer", "c-2", attempt_id=waiting.id),  # the tag adopts c-2
        event("hangup", "c-2", "NORMAL_CLEARING"),  # now found by its call id
        event("hangup", "c-3", "USER_BUSY", attempt_id=first.id),  # first has c-1
    ]
    got = events.apply_events(session, batch, [T0] * len(batch), T0)
    assert got == ["applied", "repeat", "ignored", "orphan", "applied", "applied", "ignored"]
    assert rows(session, waiting)[:4] == ("ended", "answered", "NORMAL_CLEARING", "c-2")
    assert events.apply_events(session, [], [], T0) == []
