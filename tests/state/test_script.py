"""What the person answered to the call script: the gather event applied (dialer.state.events,
dialer.script), and --max-duration's look-up (dialer.state.duration)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.carrier.events import parse
from dialer.state import duration, send
from dialer.store.models import Attempt, Contact, ContactStatus, Suppression
from tests.state.helpers import LEASE, T0, apply, event, make_campaign, sent_attempt

KEYS = [["1", "confirmed"], ["2", "cancelled"], ["9", "opt-out"]]


def gather(digits: str, call_id: str = "c-1", reason: str = "max-digits", **extra: str):
    payload = {
        "eventType": "gather",
        "callId": call_id,
        "digits": digits,
        "reason": reason,
        "state": "completed",
        "time": T0.isoformat(),
        **extra,
    }
    return parse(payload)


def scripted(session: Session, n: int = 3):
    return make_campaign(session, n=n, say="Hello {name}, press 1", keys=KEYS)


def test_a_key_is_stored_with_its_label_and_the_call_still_counts_as_answered(
    session: Session,
) -> None:
    campaign = scripted(session)
    attempt = sent_attempt(session, campaign)
    assert apply(session, event("answer")) == "applied"
    assert apply(session, gather("1")) == "applied"
    assert apply(session, event("hangup", cause="NORMAL_CLEARING")) == "applied"
    session.expire_all()
    a = session.get(Attempt, attempt.id)
    assert (a.digits, a.response, a.result) == ("1", "confirmed", "answered")
    assert session.get(Contact, a.contact_id).status == ContactStatus.ANSWERED


def test_a_second_gather_event_is_a_repeat_and_changes_nothing(session: Session) -> None:
    campaign = scripted(session)
    attempt = sent_attempt(session, campaign)
    apply(session, event("answer"))
    assert apply(session, gather("2")) == "applied"
    assert apply(session, gather("1")) == "repeat"
    session.expire_all()
    assert session.get(Attempt, attempt.id).response == "cancelled"


def test_no_key_or_a_key_not_listed_leaves_the_response_empty(session: Session) -> None:
    campaign = scripted(session)
    first = sent_attempt(session, campaign, "c-1")
    second = sent_attempt(session, campaign, "c-2")
    apply(session, gather("", "c-1", reason="inter-digit-timeout"))
    apply(session, gather("7", "c-2"))
    session.expire_all()
    a, b = session.get(Attempt, first.id), session.get(Attempt, second.id)
    assert (a.digits, a.response) == ("", None)
    assert (b.digits, b.response) == ("7", None)


def test_the_terminating_digit_counts_when_it_is_a_listed_key(session: Session) -> None:
    campaign = make_campaign(session, say="Press #", keys=[["#", "confirmed"]])
    attempt = sent_attempt(session, campaign)
    apply(session, gather("", reason="terminating-digit", terminatingDigit="#"))
    session.expire_all()
    assert session.get(Attempt, attempt.id).response == "confirmed"


def test_opt_out_lists_the_number_globally_and_suppresses_it_everywhere(
    session: Session,
) -> None:
    campaign = scripted(session, n=2)
    other = make_campaign(session, n=2)  # the same numbers, another campaign
    attempt = sent_attempt(session, campaign)
    number = session.get(Contact, attempt.contact_id).e164
    assert apply(session, gather("9")) == "applied"
    session.expire_all()
    assert session.get(Attempt, attempt.id).response == "opt-out"
    listed = session.scalars(select(Suppression).where(Suppression.e164 == number)).all()
    assert [(s.campaign_id, s.e164) for s in listed] == [(None, number)]
    theirs = session.scalars(
        select(Contact.status).where(Contact.campaign_id == other.id, Contact.e164 == number)
    ).all()
    assert theirs == [ContactStatus.SUPPRESSED]
    # The rest of the other campaign is untouched, and the number is never claimed again.
    rest = session.scalars(
        select(Contact.status).where(Contact.campaign_id == other.id, Contact.e164 != number)
    ).all()
    assert rest == [ContactStatus.PENDING]
    # An opt-out pressed again (a second call to a number listed since) changes nothing.
    again = sent_attempt(session, campaign, "c-2")
    assert apply(session, gather("9", "c-2")) == "applied"
    assert session.get(Attempt, again.id).response == "opt-out"
    count = session.scalars(select(Suppression).where(Suppression.e164 == number)).all()
    assert len(count) == 1


def test_calls_past_max_duration_are_found_once_and_again_only_later(session: Session) -> None:
    campaign = make_campaign(session, n=2, max_duration=30)
    attempt = sent_attempt(session, campaign)
    apply(session, event("answer", at=T0))
    assert duration.calls_to_end(session, T0 + timedelta(seconds=29)) == []
    due = duration.calls_to_end(session, T0 + timedelta(seconds=31))
    assert due == [(attempt.id, "c-1")]
    duration.hangup_sent(session, [attempt.id], T0 + timedelta(seconds=31))
    session.expire_all()
    assert duration.calls_to_end(session, T0 + timedelta(seconds=40)) == []
    assert duration.calls_to_end(session, T0 + timedelta(seconds=62)) == [(attempt.id, "c-1")]
    apply(session, event("hangup", cause="NORMAL_CLEARING"))
    assert duration.calls_to_end(session, T0 + timedelta(seconds=99)) == []


def test_a_campaign_without_max_duration_is_never_hung_up(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    sent_attempt(session, campaign)
    apply(session, event("answer", at=T0))
    assert duration.calls_to_end(session, T0 + timedelta(days=1)) == []


def test_a_scripted_campaign_sends_its_calls_for_bxml(session: Session) -> None:
    plain = make_campaign(session, n=1)
    speaking = scripted(session, n=1)
    from dialer.state import release

    [a] = release.release_due(session, plain, 1, T0)
    [b] = release.release_due(session, speaking, 1, T0)
    orders = {o.attempt_id: o for o in send.claim_batch(session, [a, b], T0, LEASE).orders}
    assert (orders[a].callback_method, orders[b].callback_method) == ("POST", "GET")
