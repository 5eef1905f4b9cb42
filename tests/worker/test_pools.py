"""The dial path with caller-id pools against the simulator: the options every call
carries, a refused number leaving the pool without burning the attempt, and the
campaign pausing only when no number is left."""

from __future__ import annotations

from sqlalchemy import select

from dialer import api
from dialer.dev.simulator import Simulator
from dialer.store import db
from dialer.store.models import Attempt, AttemptStatus, CallerId, Campaign, CampaignState
from dialer.worker import scheduling, tasks

REFUSED, RALEIGH = "+13125559000", "+19195550101"


def running(numbers: list[str], from_number: str, **options: object) -> int:
    report = api.create_campaign("p", from_number, [{"phone": n} for n in numbers], **options)
    with db.session_scope() as session:
        session.get(Campaign, report["id"]).state = CampaignState.RUNNING
    return int(report["id"])


def dial(campaign_id: int) -> list[int]:
    ids = scheduling.release(campaign_id)
    for aid in ids:
        tasks.dial.run(aid)
    return ids


def attempts(campaign_id: int) -> list[Attempt]:
    with db.session_scope() as session:
        return list(
            session.scalars(select(Attempt).where(Attempt.campaign_id == campaign_id)).all()
        )


def test_every_call_carries_the_campaigns_options(sim: Simulator) -> None:
    cid = running(
        ["+19192000101"], from_number=RALEIGH, record=True, record_format="mp3",
        record_max=90, transcribe=True, sip_headers=["X-Account=7"], callback_timeout=2500,
    )  # fmt: skip
    dial(cid)
    [call] = sim.calls()
    assert call["from"] == RALEIGH
    assert call["options"] == {
        "recordingEnabled": True, "recordingMaxDuration": 90, "recordingFileFormat": "mp3",
        "transcriptionEnabled": True, "sipHeaders": {"X-Account": "7"}, "callbackTimeout": 2500,
    }  # fmt: skip
    [a] = attempts(cid)
    assert (a.status, a.from_number) == (AttemptStatus.CREATED, RALEIGH)


def test_a_refused_number_leaves_the_pool_and_the_attempt_goes_again(sim: Simulator) -> None:
    sim.configure(refused_numbers=(REFUSED,))
    # Local presence picks the 312 number first for a 312 callee.
    cid = running(["+13122000101"], from_number=f"{REFUSED},{RALEIGH}", local_presence=True)
    [aid] = dial(cid)
    [a] = attempts(cid)
    assert a.status == AttemptStatus.QUEUED and a.call_id is None, "not burned"
    assert sim.calls() == []
    with db.session_scope() as session:
        refused = session.scalars(select(CallerId).where(CallerId.e164 == REFUSED)).one()
        assert refused.state == "removed" and "number-access-denied" in (refused.reason or "")
        assert session.get(Campaign, cid).from_count == 1
    tasks.dial.run(aid)
    [call] = sim.calls()
    assert call["from"] == RALEIGH
    st = api.status(cid)
    assert st["state"] == "running"
    assert {c["number"]: c["state"] for c in st["caller_ids"]} == {
        REFUSED: "removed",
        RALEIGH: "active",
    }


def test_the_campaign_pauses_when_no_number_is_left(sim: Simulator) -> None:
    sim.configure(refused_numbers=(REFUSED,))
    cid = running(["+19192000102", "+19192000103"], from_number=REFUSED)
    dial(cid)
    st = api.status(cid)
    assert st["state"] == "paused" and "no caller id left" in st["state_reason"]
    assert st["contacts"]["pending"] == 2 and sim.calls() == []
