"""Tasks run in this process against real PostgreSQL, the private Redis and the simulator.

Each test commits (tasks own their transactions), so it takes ``clean_db``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from dialer import api, clock, settings
from dialer.carrier import events
from dialer.dev.fleet import wait_until
from dialer.dev.simulator import Simulator
from dialer.policy import pacing
from dialer.state import common
from dialer.state import events as applying
from dialer.store import db
from dialer.store.models import Attempt, AttemptStatus, Campaign, Contact
from dialer.worker import clients, scheduling, sweep, tasks
from tests.factories import apply_callback, attempt, campaign_with, queued


def release_and_dial(campaign_id: int) -> list[int]:
    ids = scheduling.release(campaign_id)
    for attempt_id in ids:
        tasks.dial.run(attempt_id)
    return ids


def queued_or_claimed(campaign_id: int) -> list[int]:
    with db.session_scope() as session:
        return list(session.scalars(select(Attempt.id).where(Attempt.campaign_id == campaign_id)))


def contact_of(attempt_id: int) -> Contact:
    with db.session_scope() as session:
        return session.get(Contact, session.get(Attempt, attempt_id).contact_id)


def test_dial_creates_one_call_with_the_tag_and_callback_urls(sim: Simulator) -> None:
    cid = campaign_with(["+19192000001"], tag_fields=["k"], call_timeout=20)
    [aid] = release_and_dial(cid)
    [call] = sim.calls()
    a = attempt(aid)
    assert a.status == AttemptStatus.CREATED and a.call_id == call["id"]
    assert json.loads(call["tag"]) == {"attempt": aid, "campaign": cid, "k": "v"}
    assert call["callback_url"].endswith("/callbacks/catapult")
    assert "test-callback-secret" not in call["callback_url"], "the record hides userinfo"
    assert contact_of(aid).attempts == 1
    tasks.dial.run(aid)  # a repeated message
    assert len(sim.calls()) == 1, "a repeated dial task must not dial again"


def test_temporary_carrier_error_requeues_without_counting(sim: Simulator) -> None:
    sim.configure(fault_503=1.0)
    cid = campaign_with(["+19192000002"])
    [aid] = release_and_dial(cid)
    a = attempt(aid)
    assert a.status == AttemptStatus.QUEUED and a.not_before is not None and a.sends == 1
    assert sim.calls() == [] and contact_of(aid).attempts == 0
    sim.configure(fault_503=0.0)
    clock.set_source(lambda: a.not_before + timedelta(seconds=1))
    tasks.dial.run(aid)
    assert attempt(aid).status == AttemptStatus.CREATED and len(sim.calls()) == 1


def test_rate_limit_holds_the_whole_fleet(sim: Simulator, test_settings) -> None:
    sim.configure(fault_429=1.0)
    cid = campaign_with(["+19192000003"])
    [aid] = release_and_dial(cid)
    assert attempt(aid).status == AttemptStatus.QUEUED
    hold = redis.Redis.from_url(test_settings.redis_url).get(pacing.HOLD_KEY)
    assert hold is not None, "a 429 must hold every worker, shared in Redis"


def test_an_unreachable_carrier_holds_the_fleet_burns_no_attempt_and_says_why(
    sim: Simulator, test_settings
) -> None:
    """Nothing listens at the carrier's address: every create is refused before it is
    sent. The attempt waits, uncounted, for a fleet-wide hold (growing while the carrier
    stays away), status says why, and the first send after the return goes through."""
    from dialer.dev.cutoff import Cutoff
    from dialer.worker import dialing

    relay = Cutoff(("127.0.0.1", int(sim.url.rsplit(":", 1)[1]))).start()
    settings.override(dataclasses.replace(settings.get(), catapult_api_url=relay.url))
    clients.reset_clients()
    relay.cut()
    dialing._unreachable = 0
    cid = campaign_with(["+19192000007", "+19192000008"])
    ids = release_and_dial(cid)
    r = redis.Redis.from_url(test_settings.redis_url)
    hold = float(r.get(pacing.HOLD_KEY) or 0)
    assert hold > time.time(), "the whole fleet holds while the carrier is out of reach"
    assert dialing._unreachable == 2
    for aid in ids:
        a = attempt(aid)
        assert a.status == AttemptStatus.QUEUED and a.sends == 0, "nothing was sent"
        assert "could not connect" in a.error and "nothing was sent" in a.error
        assert contact_of(aid).attempts == 0, "a create never sent is no attempt"
    st = api.status(cid)
    assert st["resend"]["waiting"] == 2
    assert "could not connect" in st["resend"]["reason"]
    relay.restore()
    r.delete(pacing.HOLD_KEY)
    later = clock.now() + timedelta(seconds=10)
    clock.set_source(lambda: later)
    for aid in ids:
        tasks.dial.run(aid)
    assert {attempt(aid).status for aid in ids} == {AttemptStatus.CREATED}
    assert dialing._unreachable == 0 and len(sim.calls()) == 2
    assert api.status(cid)["resend"] == {"waiting": 0, "reason": None}
    relay.close()


def test_refused_destination_fails_contact(sim: Simulator) -> None:
    sim.configure(refused_prefixes=("+1919200009",))
    cid = campaign_with(["+19192000091", "+19192000004"])
    ids = release_and_dial(cid)
    statuses = sorted(contact_of(i).status for i in ids)
    assert statuses == ["dialing", "failed"]


def test_out_of_credit_pauses_campaign(sim: Simulator) -> None:
    sim.configure(credit=0)
    cid = campaign_with(["+19192000005", "+19192000006"])
    release_and_dial(cid)
    st = api.status(cid)
    assert st["state"] == "paused" and "insufficient-available-balance" in st["state_reason"]
    assert st["contacts"]["pending"] == 2 and sim.calls() == []


def test_ambiguous_create_is_reconciled_not_redialed(sim: Simulator) -> None:
    sim.configure(fault_ambiguous=1.0)
    cid = campaign_with(["+19192000007"], call_timeout=10)
    [aid] = release_and_dial(cid)
    assert attempt(aid).status == AttemptStatus.UNKNOWN
    sim.configure(fault_ambiguous=0.0)
    assert sweep.reconcile(clock.now()) == 0, "too early: the call may still ring"
    later = clock.now() + timedelta(seconds=10) + sweep.RECONCILE_MARGIN + timedelta(seconds=1)
    assert sweep.reconcile(later) == 1
    [call] = sim.calls()
    a = attempt(aid)
    assert a.status in (AttemptStatus.CREATED, AttemptStatus.ANSWERED) and a.call_id == call["id"]
    assert scheduling.release(cid) == [], "nothing is dialed again"


def test_lost_claim_with_no_call_is_dialed_again(sim: Simulator) -> None:
    cid = campaign_with(["+19192000008"])
    [aid] = scheduling.release(cid)
    with db.session_scope() as session:  # a worker claimed it and died before sending
        from dialer.state import reconcile, send

        send.claim_for_send(session, aid, clock.now(), timedelta(seconds=1))
    later = clock.now() + timedelta(minutes=5)
    assert tasks.sweep.run() is not None
    with db.session_scope() as session:
        from dialer.state import reconcile, send

        assert reconcile.expire_leases(session, later) == 1
    assert sweep.reconcile(later) == 1
    assert attempt(aid).status == AttemptStatus.WITHDRAWN
    assert contact_of(aid).status == "pending" and contact_of(aid).attempts == 0
    assert len(release_and_dial(cid)) == 1 and len(sim.calls()) == 1


def test_tick_completes_a_finished_campaign(sim: Simulator) -> None:
    cid = campaign_with(["not a number"])
    tasks.tick.run()
    assert api.status(cid)["state"] == "completed"


def test_stale_queued_work_is_published_again(sim: Simulator) -> None:
    cid = campaign_with(["+19192000009"])
    [aid] = scheduling.release(cid)  # its message is "lost": nobody runs it
    assert sweep.republish_stale(clock.now()) == 0
    assert sweep.republish_stale(clock.now() + sweep.STALE_QUEUED * 2) == 1
    with db.session_scope() as session:
        assert session.scalars(select(Attempt.status).where(Attempt.id == aid)).one() == "queued"


@pytest.mark.parametrize(
    ("outcome", "result", "status"),
    [
        ("busy", "busy", "pending"),
        ("answered", "answered", "answered"),
        ("rejected", "rejected", "unanswered"),
    ],
)
def test_call_whose_callbacks_were_lost_is_read_back(
    sim: Simulator, outcome, result, status
) -> None:
    # DIALER_CALLBACK_URL points at a closed port here: no callback ever arrives.
    sim.configure(callback_retries=0, outcome_by_number={"+19192000010": [outcome]})
    cid = campaign_with(["+19192000010"], call_timeout=10)
    [aid] = release_and_dial(cid)
    wait_until(lambda: sim.calls()[0]["state"] in ("completed", "rejected"), 10)
    assert sweep.recover_overdue(clock.now()) == 0, "not overdue yet: it may still ring"
    later = clock.now() + timedelta(seconds=10) + sweep.RECONCILE_MARGIN + timedelta(seconds=1)
    assert sweep.recover_overdue(later) == 1
    a = attempt(aid)
    assert (a.status, a.result, contact_of(aid).status) == ("ended", result, status)


def test_call_still_ringing_is_checked_again_later(sim: Simulator) -> None:
    sim.configure(outcome_by_number={"+19192000011": ["silent"]})
    cid = campaign_with(["+19192000011"], call_timeout=10)
    [aid] = release_and_dial(cid)
    later = clock.now() + timedelta(minutes=5)
    assert sweep.recover_overdue(later) == 0
    a = attempt(aid)
    assert a.status == AttemptStatus.CREATED and a.lease_until >= later + common.GRACE


def test_lost_answer_is_found_before_dialing_again(sim: Simulator) -> None:
    # The answer callback never arrives (the callback URL is closed here); the hangup,
    # normal clearing, does: the carrier's record must decide, not a retry.
    sim.configure(callback_retries=0, outcome_by_number={"+19192000012": ["answered"]})
    cid = campaign_with(["+19192000012"])
    [aid] = release_and_dial(cid)
    call_id = attempt(aid).call_id
    wait_until(lambda: sim.calls()[0]["state"] == "completed", 10)
    apply_callback({"eventType": "hangup", "callId": call_id, "cause": "NORMAL_CLEARING"})
    assert contact_of(aid).status == "dialing"
    assert sweep.recover_overdue(clock.now() + timedelta(seconds=1)) == 1
    a = attempt(aid)
    assert (a.status, a.result, contact_of(aid).status) == ("ended", "answered", "answered")


def test_tick_shares_the_account_between_campaigns_by_cps(sim: Simulator, test_settings) -> None:
    settings.override(dataclasses.replace(settings.get(), account_cps=20.0))
    slow = campaign_with([f"+1919300{i:04d}" for i in range(50)], cps=10)
    fast = campaign_with([f"+1919400{i:04d}" for i in range(50)], cps=30)
    idle = campaign_with(["not a number"], cps=30)  # nothing to send: takes no share
    tasks.tick.run()
    assert clients.pacer().share(slow) == pytest.approx(5.0)
    assert clients.pacer().share(fast) == pytest.approx(15.0)
    assert clients.pacer().share(idle) is None
    queued = {cid: api.status(cid)["contacts"]["dialing"] for cid in (slow, fast)}
    assert queued == {slow: 10, fast: 30}, "each releases HORIZON seconds at its share"


def statements_of_a_tick() -> int:
    counted: list[str] = []

    def count(conn, cursor, statement, *_) -> None:  # type: ignore[no-untyped-def]
        counted.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        tasks.tick.run()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return len(counted)


def test_a_tick_runs_as_many_statements_for_30_campaigns_as_for_3(sim: Simulator) -> None:
    # Read at once, released at once: a statement per campaign per second was most of
    # the tick's cost with 1,000 campaigns (benchmarks/many_campaigns.py).
    first = [campaign_with([f"+1919700{i:02d}{n:02d}" for n in range(3)], cps=1) for i in range(3)]
    three = statements_of_a_tick()
    rest = [
        campaign_with([f"+1919700{i:02d}{n:02d}" for n in range(3)], cps=1) for i in range(3, 30)
    ]
    thirty = statements_of_a_tick()  # the first three have their work queued: 27 release
    assert thirty == three, f"{three} statements for 3 campaigns, {thirty} for 30"
    assert {cid: len(queued(cid)) for cid in first + rest} == dict.fromkeys(first + rest, 2)


def test_a_tick_leaves_the_work_to_a_tick_already_running(sim: Simulator) -> None:
    cid = campaign_with(["+19197300001", "+19197300002"], cps=1)
    token = clients.pacer().try_lock("tick", 5.0)  # another worker's tick, running
    assert token is not None
    tasks.tick.run()
    assert queued(cid) == [], "the running tick releases it: not twice"
    clients.pacer().unlock("tick", token)
    tasks.tick.run()
    assert len(queued(cid)) == 2


def test_the_tick_skips_a_campaign_a_control_holds_and_releases_the_others(
    sim: Simulator,
) -> None:
    held = campaign_with(["+19197100001", "+19197100002"], cps=1)
    free = campaign_with(["+19197200001", "+19197200002"], cps=1)
    with db.session_scope() as session:  # as pause, cancel and update hold it
        session.scalars(select(Campaign).where(Campaign.id == held).with_for_update()).one()
        tasks.tick.run()  # on another connection: it must not wait for this one
        assert (len(queued(free)), len(queued(held))) == (2, 0)
    tasks.tick.run()
    assert len(queued(held)) == 2, "the next tick releases it"


def dial_messages(test_settings) -> list[tuple[list[int], datetime | None]]:
    """The dial messages in the broker, oldest first: their attempt ids, and when each
    is due (None: at once)."""
    out = []
    raws = redis.Redis.from_url(test_settings.redis_url).lrange("dialer.dial", 0, -1)
    for raw in reversed(raws):  # kombu pushes to the head
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        eta = message["headers"].get("eta")
        out.append((args[0], datetime.fromisoformat(eta) if eta else None))
    return out


def test_a_small_share_is_released_for_its_slot_not_long_before(
    sim: Simulator, test_settings
) -> None:
    # Two campaigns share 1 call/s: a slot every 2 s each. The tick releases work for
    # the slots of the next two seconds only, and it comes to a worker just before.
    settings.override(dataclasses.replace(settings.get(), account_cps=1.0))
    cids = [campaign_with([f"+191981{c}{i:04d}" for i in range(5)], cps=5) for c in (0, 1)]
    pace = redis.Redis.from_url(test_settings.redis_url)
    pace.set(pacing.campaign_key(cids[0]), time.time() + 5.0)  # its next slot: in 5 s
    pace.set(pacing.campaign_key(cids[1]), time.time() + 1.5)  # in 1.5 s
    tasks.tick.run()
    assert queued(cids[0]) == [], "a slot 5 s away is not released yet"
    [aid] = queued(cids[1])
    [(ids, due)] = dial_messages(test_settings)
    assert ids == [aid] and due is not None
    lead = (due - clock.now()).total_seconds()
    assert 1.0 < lead < 1.5, f"delivered {lead:.2f} s from now, for a slot in 1.5 s"


def test_the_tick_sends_many_small_shares_in_batches_by_slot(sim: Simulator, test_settings) -> None:
    # 30 campaigns share 3 calls/s: each releases its next call, and the calls go in
    # messages of a second's worth of the account's slots, not a message each.
    settings.override(dataclasses.replace(settings.get(), account_cps=3.0))
    cids = [campaign_with([f"+19198{c:02d}{i:04d}" for i in range(2)], cps=1) for c in range(30)]
    tasks.tick.run()
    messages = dial_messages(test_settings)
    assert sorted(aid for ids, _ in messages for aid in ids) == sorted(
        aid for cid in cids for aid in queued(cid)
    )
    assert [len(ids) for ids, _ in messages] == [3] * 10, "3 slots a second"
    assert messages[0][1] is None, "the first second's calls go at once"
    leads = [(due - clock.now()).total_seconds() for _, due in messages[1:] if due]
    assert len(leads) == 9 and leads == sorted(leads) and 8.0 < leads[-1] < 9.5


def test_a_batch_gives_back_only_the_campaigns_whose_slot_is_far(
    sim: Simulator, test_settings
) -> None:
    later = campaign_with(["+19198500001", "+19198500002"], cps=1)
    now = campaign_with(["+19198600001"], cps=1)
    redis.Redis.from_url(test_settings.redis_url).set(
        pacing.campaign_key(later), time.time() + 5.0
    )  # its next slot, at its own --cps: in 5 s
    ids = scheduling.release(later) + scheduling.release(now)
    redis.Redis.from_url(test_settings.redis_url).delete("dialer.dial")
    tasks.dial_batch.run(ids)
    assert attempt(ids[-1]).status == AttemptStatus.CREATED, "the other campaign's call went"
    assert [attempt(a).status for a in ids[:-1]] == ["queued", "queued"]
    assert [attempt(a).sends for a in ids[:-1]] == [0, 0], "given back: not a send"
    [(back, due)] = dial_messages(test_settings)
    assert back == ids[:-1] and due is not None
    assert 3.5 < (due - clock.now()).total_seconds() < 5.0, "it comes back near its slot"


def test_max_concurrent_caps_calls_in_flight(sim: Simulator) -> None:
    sim.configure(outcome_by_number={f"+1919500{i:04d}": ["silent"] for i in range(10)})
    cid = campaign_with([f"+1919500{i:04d}" for i in range(10)], max_concurrent=3)
    first = release_and_dial(cid)
    assert len(first) == 3
    assert scheduling.release(cid) == [], "three calls are up: no room"
    with db.session_scope() as session:  # one call ends: its slot frees
        applying.apply_event(
            session,
            events.parse(
                {"eventType": "hangup", "callId": attempt(first[0]).call_id, "cause": "USER_BUSY"}
            ),
            clock.now(),
            clock.now(),
        )
    assert len(scheduling.release(cid)) == 1


def test_a_slow_campaign_keeps_the_queue_short(sim: Simulator) -> None:
    # 1 call/s: each tick hands out two seconds of work, whatever the campaign's size.
    cid = campaign_with([f"+1919600{i:04d}" for i in range(400)], cps=1)
    for _ in range(5):
        tasks.tick.run()
    assert api.status(cid)["contacts"]["dialing"] == 2


def test_release_after_a_start_dials_the_first_batch_in_its_own_thread(
    sim: Simulator, test_settings: settings.Settings
) -> None:
    """The task a ``campaign start`` nudges: one batch's worth, dialed by the thread that
    released it (at a slow pace, the rest of the release published for the other
    threads); a batch it cannot dial is published instead."""

    broker = redis.Redis.from_url(test_settings.broker_url)
    broker.delete("dialer.dial")
    cid = campaign_with([f"+1919300{i:04d}" for i in range(70)])
    tasks.release.run(cid)
    assert len(sim.calls()) == clients.DIAL_BATCH, "one batch, dialed here"
    assert broker.llen("dialer.dial") == 0, "the tick releases the rest"
    # At 10 calls/s a batch is 10 calls (a second of work): the rest of the release
    # (two seconds' worth) is published for the other threads.
    slow = campaign_with([f"+1919301{i:04d}" for i in range(70)], cps=10)
    tasks.release.run(slow)
    assert len(sim.calls()) == clients.DIAL_BATCH + 10
    [message] = broker.lrange("dialer.dial", 0, -1)
    rest = json.loads(base64.b64decode(json.loads(message)["body"]))[0][0]
    assert len(rest) == 10 and not set(rest) & {
        int(json.loads(c["tag"])["attempt"]) for c in sim.calls()
    }

    broker.delete("dialer.dial")
    other = campaign_with(["+19193009999"])
    current = settings.get()
    # A worker that cannot dial: it claims the batch, then fails building its client.
    settings.override(dataclasses.replace(current, catapult_api_token=None))
    clients.reset_clients()
    try:
        tasks.release.run(other)
    finally:
        settings.override(current)
        clients.reset_clients()
    [message] = broker.lrange("dialer.dial", 0, -1)
    assert json.loads(base64.b64decode(json.loads(message)["body"]))[0] == [
        queued_or_claimed(other)
    ]
    broker.delete("dialer.dial")
