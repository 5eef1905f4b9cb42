"""Caller-id pools and the media events on both dialects: the pool and the call options
at claim, the number recorded with the call id (and counted by the tally on PostgreSQL),
a refused number leaving the pool, and recording/transcription events kept with the
attempt in any order without changing how the call counts."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dialer.carrier.events import parse
from dialer.state import release, send
from dialer.store import dialects
from dialer.store import tally as store_tally
from dialer.store.models import Attempt, AttemptStatus, CallerId, Campaign, Result
from tests.state.helpers import LEASE, T0, apply, event, make_campaign, sent_attempt

POOL = ("+19195550001", "+17045550002", "+12125550003")


def pooled(session: Session, n: int = 3, **options: object) -> Campaign:
    campaign = make_campaign(session, n=n, from_number=POOL[0], from_count=len(POOL), **options)
    session.add_all(
        CallerId(campaign_id=campaign.id, e164=e, label=f"l{i}", state="active")
        for i, e in enumerate(POOL)
    )
    session.flush()
    return campaign


def test_claim_gives_the_active_pool_and_the_call_options(session: Session) -> None:
    campaign = pooled(
        session,
        record=True,
        record_format="mp3",
        record_max=30,
        transcribe=True,
        sip_headers={"X-Account": "42"},
        callback_timeout=5000,
        local_presence=True,
    )
    [aid] = release.release_due(session, campaign, 1, T0)
    order = send.claim_for_send(session, aid, T0, LEASE)
    assert order is not None
    assert order.pool == POOL and order.from_number == POOL[0] and order.local_presence
    assert dict(order.options) == {
        "recording_enabled": True,
        "recording_file_format": "mp3",
        "recording_max_duration": 30,
        "transcription_enabled": True,
        "sip_headers": {"X-Account": "42"},
        "callback_timeout": 5000,
    }


def test_a_campaign_from_before_pools_calls_from_its_number(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    [aid] = release.release_due(session, campaign, 1, T0)
    order = send.claim_for_send(session, aid, T0, LEASE)
    assert order is not None and order.pool == ("+19195550000",) and order.options == ()


def test_the_number_is_recorded_with_the_call_and_counted(session: Session) -> None:
    campaign = pooled(session, n=3)
    ids = release.release_due(session, campaign, 3, T0)
    orders = send.claim_batch(session, ids, T0, LEASE).orders
    created = [
        (o.__class__(**{**o.__dict__, "from_number": POOL[i % 2]}), f"c-{i}")
        for i, o in enumerate(orders)
    ]
    send.record_created_many(session, created, T0)
    session.expire_all()
    got = sorted(session.scalars(select(Attempt.from_number).where(Attempt.id.in_(ids))))
    assert got == sorted([POOL[0], POOL[1], POOL[0]])
    if dialects.of(session).name == "postgresql":

        def tally() -> dict[str, int]:
            return dict(
                session.execute(
                    text(
                        "SELECT from_number, sum(n) FROM number_tally WHERE campaign_id = :c "
                        "GROUP BY from_number"
                    ),
                    {"c": campaign.id},
                ).all()
            )

        assert tally() == {POOL[0]: 2, POOL[1]: 1}
        # Compaction folds the rows and keeps the sums; a deleted attempt takes its call.
        store_tally.compact(session)
        rows = session.scalar(
            text("SELECT count(*) FROM number_tally WHERE campaign_id = :c"), {"c": campaign.id}
        )
        assert rows == 2 and tally() == {POOL[0]: 2, POOL[1]: 1}
        session.execute(text("DELETE FROM attempt WHERE id = :a"), {"a": ids[1]})
        assert tally() == {POOL[0]: 2, POOL[1]: 0}


def test_a_refused_number_leaves_the_pool_and_the_last_one_says_none_left(
    session: Session,
) -> None:
    campaign = pooled(session)
    assert send.remove_caller_id(session, campaign.id, POOL[1], "carrier: denied", T0) == (
        True,
        2,
    )
    # A second refusal of the same number (another worker's call) removes nothing.
    assert send.remove_caller_id(session, campaign.id, POOL[1], "again", T0) == (False, 2)
    row = session.scalars(select(CallerId).where(CallerId.e164 == POOL[1])).one()
    assert (row.state, row.reason, row.removed_at is not None) == (
        "removed",
        "carrier: denied",
        True,
    )
    session.refresh(campaign)
    assert campaign.from_count == 2
    assert send.active_pools(session, {campaign.id}) == {campaign.id: (POOL[0], POOL[2])}
    send.remove_caller_id(session, campaign.id, POOL[0], "x", T0)
    assert send.remove_caller_id(session, campaign.id, POOL[2], "x", T0) == (True, 0)


def _media(kind: str, call_id: str = "c-1", **fields: object) -> object:
    return parse({"eventType": kind, "callId": call_id, **fields})


RECORDING = {
    "recordingId": "r-1",
    "recordingUri": "https://api.example.com/v1/users/u/recordings/r-1",
    "state": "complete",
}


def test_recording_and_transcript_are_kept_in_any_order(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign)
    # Before the hangup, and a repeat.
    assert apply(session, _media("recording", **RECORDING)) == "applied"
    assert apply(session, _media("recording", **RECORDING)) == "repeat"
    assert apply(session, event("answer")) == "applied"
    assert apply(session, event("hangup", cause="NORMAL_CLEARING")) == "applied"
    # After the attempt ended: a transcript cut short keeps the URL of the whole.
    long = {"state": "completed", "text": "x" * 1026, "textSize": 5000, "textUrl": "https://t/1"}
    assert apply(session, _media("transcription", **long)) == "applied"
    assert apply(session, _media("transcription", **long)) == "repeat"
    session.flush()
    session.expire_all()
    a = session.get(Attempt, attempt.id)
    assert (a.status, a.result) == (AttemptStatus.ENDED, Result.ANSWERED)
    assert a.recording_url == RECORDING["recordingUri"]
    assert (len(a.transcript), a.transcript_url) == (1026, "https://t/1")


def test_media_events_never_change_how_the_call_counts(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign)
    apply(session, event("hangup", cause="USER_BUSY"))
    session.flush()
    before = session.get(Attempt, attempt.id)
    status, result = before.status, before.result
    short = {"state": "completed", "text": "hello", "textSize": 5, "textUrl": "https://t/2"}
    assert apply(session, _media("transcription", **short)) == "applied"
    assert apply(session, _media("recording", state="error")) == "ignored"
    session.flush()
    session.expire_all()
    a = session.get(Attempt, attempt.id)
    assert (a.status, a.result, a.transcript, a.transcript_url) == (status, result, "hello", None)
    assert a.recording_url is None


def test_a_recording_before_the_call_id_waits_and_is_applied(session: Session) -> None:
    campaign = make_campaign(session, n=1)
    attempt = sent_attempt(session, campaign, call_id=None)
    assert apply(session, _media("recording", call_id="c-9", **RECORDING)) == "orphan"
    send.record_created(session, attempt.id, "c-9", T0, "+19195550000")
    session.flush()
    session.expire_all()
    a = session.get(Attempt, attempt.id)
    assert (a.recording_url, a.from_number) == (RECORDING["recordingUri"], "+19195550000")
    n = session.scalar(select(func.count()).select_from(Attempt).where(Attempt.id == attempt.id))
    assert n == 1
