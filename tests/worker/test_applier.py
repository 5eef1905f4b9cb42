"""Callbacks through the event stream, with real Redis, PostgreSQL and processes.

Each test writes to a Redis database number of its own and commits (``clean_db``). The
rows the stream leaves are compared with a twin campaign whose events are applied one
by one by ``dialer.state.events.apply_event``, the reference.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select, text

from dialer import api, clock
from dialer.callbacks import eventstream
from dialer.callbacks.gate import PATH
from dialer.carrier import events
from dialer.dev.fleet import Fleet, RedisServer, free_port, wait_until
from dialer.state import common, release, send
from dialer.state import events as applying
from dialer.store import db
from dialer.store.models import Attempt, CallEvent, Campaign, CampaignState, Contact
from dialer.worker.applier import Applier
from tests.helpers import TEST_ENV

OUTCOMES = [
    [("answer", None), ("hangup", "NORMAL_CLEARING")],
    [("hangup", "USER_BUSY")],
    [("timeout", None), ("hangup", "NO_ANSWER")],
    [("hangup", "CALL_REJECTED")],
]
SECRET = TEST_ENV["DIALER_CALLBACK_SECRET"]


def campaign_of_calls(n: int, prefix: str) -> tuple[int, list[tuple[int, str]]]:
    """A running campaign of ``n`` contacts, each with a call on the wire:
    (campaign id, [(attempt id, call id)])."""
    area = {"a": 1, "b": 2, "c": 3}[prefix]
    report = api.create_campaign(
        prefix,
        "+19195550000",
        [{"phone": f"+1919{200 + area}{i:04d}"} for i in range(n)],
        max_attempts=2,
        retry_delay=60,
    )
    now = clock.now()
    calls = []
    with db.session_scope() as session:
        campaign = session.get(Campaign, report["id"])
        campaign.state = CampaignState.RUNNING
        session.flush()
        for i, attempt_id in enumerate(release.release_due(session, campaign, n, now)):
            assert send.claim_for_send(session, attempt_id, now, common.GRACE)
            send.record_created(session, attempt_id, f"{prefix}-{i}", now)
            calls.append((attempt_id, f"{prefix}-{i}"))
    return report["id"], calls


def payloads(calls: list[tuple[int, str]]) -> list[dict]:
    """Each call's callbacks, as the carrier sends them, calls interleaved."""
    out = []
    for i, (attempt_id, call_id) in enumerate(calls):
        for j, (kind, cause) in enumerate(OUTCOMES[i % len(OUTCOMES)]):
            payload = {
                "eventType": kind,
                "callId": call_id,
                "time": f"2026-11-27T10:00:{j:02d}.000Z",
                "tag": json.dumps({"attempt": attempt_id, "campaign": 0}),
            }
            if cause:
                payload["cause"] = cause
            out.append(payload)
    return out


def one_by_one(calls: list[tuple[int, str]]) -> None:
    for payload in payloads(calls):
        with db.session_scope() as session:
            applying.apply_event(session, events.parse(payload), clock.now(), clock.now())


def outcome(campaign_id: int) -> list[tuple]:
    """What the events decided, per call in order: the rows, without ids or clock times."""
    with db.session_scope() as session:
        rows = session.execute(
            select(Attempt, Contact)
            .join(Contact, Contact.id == Attempt.contact_id)
            .where(Attempt.campaign_id == campaign_id)
            .order_by(Attempt.id)
        ).all()
        return [
            (
                a.status, a.result, a.cause, a.answered_at, a.timed_out_at, a.ended_at,
                a.hangup_cause, a.lease_until is None, c.status, c.attempts, c.reason,
                c.due_at is None,
            )
            for a, c in rows
        ]  # fmt: skip


def stored(call_prefix: str) -> dict[str, int]:
    with db.session_scope() as session:
        return dict(
            session.execute(
                select(CallEvent.disposition, func.count())
                .where(CallEvent.call_id.like(call_prefix + "-%"))
                .group_by(CallEvent.disposition)
            ).all()
        )


@pytest.fixture
def stream_url(redis_server: RedisServer, clean_db: None) -> Iterator[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/11"
    redis.Redis.from_url(url).flushdb()
    eventstream.reset()
    yield url
    eventstream.reset()


def worker_env(redis_url: str, broker_url: str, database_url: str) -> dict[str, str]:
    return {
        "DIALER_DATABASE_URL": database_url,
        "DIALER_REDIS_URL": redis_url,
        "DIALER_BROKER_URL": broker_url,
        "DIALER_WORKER_THREADS": "2",
    }


def start_worker(fleet: Fleet, name: str) -> None:
    fleet.start_worker(name)
    log = fleet.workdir / f"{name}.log"
    wait_until(
        lambda: log.exists() and "ready." in log.read_text(errors="replace"),
        60,
        what=f"worker {name} to be ready",
    )


def test_a_consumer_killed_mid_batch_leaves_its_events_to_be_reclaimed(
    stream_url: str, redis_server: RedisServer, test_settings, tmp_path: Path
) -> None:
    a, calls_a = campaign_of_calls(12, "a")
    b, calls_b = campaign_of_calls(12, "b")
    one_by_one(calls_b)  # the reference
    stream = eventstream.RedisStream(redis.Redis.from_url(stream_url))
    sent = payloads(calls_a)
    for payload in sent:  # before any worker ran: the group is created at 0
        stream.add(json.dumps(payload), clock.now().isoformat())
    # Hold the first call's contact, so the worker's batch stops half way: the other
    # contacts' events committed, this one's transaction waiting for the lock.
    held = db.engine().connect()
    tx = held.begin()
    held.execute(
        text("SELECT id FROM contact WHERE id = (SELECT contact_id FROM attempt WHERE id = :a)"
             " FOR UPDATE"),
        {"a": calls_a[0][0]},
    )  # fmt: skip
    env = worker_env(
        stream_url, f"redis://127.0.0.1:{redis_server.port}/12", test_settings.database_url
    )
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            start_worker(fleet, "w1")
            first_call = len(OUTCOMES[0])
            wait_until(
                lambda: sum(stored("a").values()) == len(sent) - first_call,
                30,
                what="the batch to apply every event but the held contact's",
            )
            waiting = db.engine().connect()
            wait_until(
                lambda: waiting.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ),
                30,
                what="the batch to wait for the held contact",
            )
            waiting.close()
            pending = stream.client.xpending(stream.key, stream.group)
            assert pending["pending"] == len(sent), "nothing is acknowledged before it all is"
            fleet.kill("w1")  # SIGKILL, mid-batch
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            tx.rollback()
            held.close()
    assert stream.backlog() == len(sent), "a dead consumer's entries stay in the stream"

    applier = Applier(stream, consumers=1, reclaim_idle=0.5, reclaim_every=0.2)
    applier.start()
    try:
        wait_until(lambda: stream.backlog() == 0, 30, what="the entries to be reclaimed")
    finally:
        applier.stop()
    assert outcome(a) == outcome(b), "the same rows as applying the events one by one"
    # Every event is stored; those applied before the kill come again as repeats.
    assert stored("a") == {
        "applied": len(sent),
        "repeat": len(sent) - first_call,
    }
    assert stream.client.xpending(stream.key, stream.group)["pending"] == 0


def test_with_redis_down_the_receiver_answers_503_and_loses_nothing(
    redis_server: RedisServer, clean_db: None, test_settings, tmp_path: Path
) -> None:
    a, calls_a = campaign_of_calls(8, "a")
    b, calls_b = campaign_of_calls(8, "b")
    one_by_one(calls_b)
    sent = payloads(calls_a)
    first, second = sent[: len(sent) // 2], sent[len(sent) // 2 :]
    own = RedisServer(free_port())  # the stream's Redis, to stop and start
    own.start()
    env = {
        **worker_env(
            own.url, f"redis://127.0.0.1:{redis_server.port}/13", test_settings.database_url
        ),
        "DIALER_CALLBACK_SECRET": SECRET,
    }
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            url = fleet.start_receiver(workers=2) + PATH

            def post(payload: dict) -> int:
                return requests.post(
                    url, json=payload, auth=("dialer", SECRET), timeout=30
                ).status_code

            start_worker(fleet, "w1")
            assert [post(p) for p in first] == [200] * len(first)
            wait_until(lambda: sum(stored("a").values()) == len(first), 30, what="first half")
            own.stop()
            assert [post(p) for p in second] == [503] * len(second), "no 2xx without Redis"
            own.start()  # empty: no persistence, as after a failover that lost data
            # The carrier retries what was refused; the worker finds the stream again.
            assert [post(p) for p in second] == [200] * len(second)
            wait_until(lambda: sum(stored("a").values()) == len(sent), 60, what="second half")
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            own.stop()
    assert stored("a") == {"applied": len(sent)}, "each acknowledged event applied once"
    assert outcome(a) == outcome(b)


def apply_all(stream: eventstream.RedisStream, consumers: int) -> Applier:
    """Run an Applier in this process until the stream is empty; stop it."""
    applier = Applier(stream, consumers=consumers)
    applier.start()
    try:
        wait_until(lambda: stream.backlog() == 0, 30, what="the stream to be applied")
    finally:
        applier.stop()
    return applier


def test_a_malformed_entry_is_dropped_and_the_rest_applied(stream_url: str) -> None:
    a, calls_a = campaign_of_calls(4, "a")
    b, calls_b = campaign_of_calls(4, "b")
    one_by_one(calls_b)
    stream = eventstream.RedisStream(redis.Redis.from_url(stream_url))
    stream.add("{not json", clock.now().isoformat())
    stream.add(json.dumps({"eventType": "hangup"}), clock.now().isoformat())  # no callId
    for k, payload in enumerate(payloads(calls_a)):
        if k == 0:
            # A tag whose attempt id is past BIGINT: no attempt of ours, so the event is
            # found by its call id (it failed its batch's lookup, then was dropped).
            payload["tag"] = json.dumps({"attempt": 10**20, "campaign": 0})
        stream.add(json.dumps(payload), clock.now().isoformat())
    stream.add(json.dumps(payloads(calls_a)[0]), "not a time")
    # Deeper than json can decode (RecursionError, not a ValueError): dropped too, not
    # retried for ever with its batch. Older receivers let it in.
    stream.add("[" * 100_000 + "]" * 100_000, clock.now().isoformat())
    # A time that parses but overflows in UTC: the time received stands in for it.
    late = dict(payloads(calls_b)[0], time="9999-12-31T23:59:59-01:00")
    stream.add(json.dumps(late), clock.now().isoformat())
    applier = apply_all(stream, consumers=2)
    assert outcome(a) == outcome(b)
    assert stored("a") == {"applied": len(payloads(calls_a))}
    assert not applier._threads, "stopped and joined"


def test_stored_events_keep_the_body_the_receiver_put_in_the_stream(stream_url: str) -> None:
    """call_event.payload is the entry's JSON as it came (stored by COPY from its text),
    with text that needs escaping in COPY's format and outside ASCII."""
    _, calls = campaign_of_calls(2, "a")
    sent = payloads(calls)
    sent[0]["note"] = "tab\there, newline\nthere, back\\slash, \u00e9t\u00e9 \u2603"
    sent[0]["nested"] = {"list": [1, 2.5, None, True], "empty": {}}
    stream = eventstream.RedisStream(redis.Redis.from_url(stream_url))
    for payload in sent:
        stream.add(json.dumps(payload, ensure_ascii=False), clock.now().isoformat())
    apply_all(stream, consumers=1)
    with db.session_scope() as session:
        kept = session.scalars(
            select(CallEvent.payload).where(CallEvent.call_id.like("a-%")).order_by(CallEvent.id)
        ).all()
    assert kept == sent


def test_events_wait_while_the_database_is_unreachable(stream_url: str, test_settings) -> None:
    """A database outage keeps the events in the stream; they are applied once it is back."""
    import dataclasses

    from dialer import settings

    a, calls_a = campaign_of_calls(4, "a")
    b, calls_b = campaign_of_calls(4, "b")
    one_by_one(calls_b)
    stream = eventstream.RedisStream(redis.Redis.from_url(stream_url))
    for payload in payloads(calls_a):
        stream.add(json.dumps(payload), clock.now().isoformat())
    # A database nobody listens for: every transaction fails to connect.
    settings.override(
        dataclasses.replace(
            test_settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"
        )
    )
    applier = Applier(stream, consumers=1)
    applier.start()
    try:
        time.sleep(2.5)
        assert stream.backlog() == len(payloads(calls_a)), "nothing dropped"
        settings.override(test_settings)
        wait_until(lambda: stream.backlog() == 0, 30, what="the events, once the database is back")
    finally:
        settings.override(test_settings)
        applier.stop()
    assert outcome(a) == outcome(b)
    assert stored("a") == {"applied": len(payloads(calls_a))}
