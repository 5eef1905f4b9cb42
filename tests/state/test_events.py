"""Applying carrier events: outcomes, any order, early events, batches (dialer.state.events)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.state import events, reconcile, send
from dialer.store.models import AttemptStatus, ContactStatus
from dialer.store.models import CallEvent as CallEventRow
from tests.state.helpers import (
    T0,
    apply,
    campaign_rows,
    event,
    make_campaign,
    rows,
    sent_attempt,
    statements,
)

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


# ---------------------------------------------------------- unknown calls and tags


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


# ------------------------------------------------------------- events in batches


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


def test_ten_campaigns_events_cost_as_many_statements_as_one_campaigns(session: Session) -> None:
    # With many campaigns running, a batch of events spans many of them: each is read
    # in the batch's one statement for campaigns, not one each.
    def apply_calls(n: int, first: int) -> int:
        calls = [f"c-{first + i}" for i in range(n)]
        for call_id in calls:
            sent_attempt(session, make_campaign(session, n=1), call_id)
        batch = [event(kind, c, cause) for c in calls for kind, cause in _ANSWERED]
        with statements() as seen:
            got = events.apply_events(session, batch, [T0] * len(batch), T0)
        assert got == ["applied"] * len(batch)
        return len(seen)

    assert apply_calls(10, 100) == apply_calls(1, 1)


_ANSWERED = [("answer", None), ("hangup", "NORMAL_CLEARING")]
