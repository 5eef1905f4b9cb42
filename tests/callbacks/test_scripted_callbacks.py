"""Scripted calls' callbacks: events by GET with their fields in the query string, answered
with the call script's BXML (dialer.callbacks.gate, dialer.script), by ``dialer receiver``
as it runs in production, reading the test database."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import pytest
import redis
import requests

from dialer.callbacks import eventstream
from dialer.callbacks.gate import PATH
from dialer.dev.fleet import RedisServer, free_port, receiver_command, wait_for_port
from dialer.store import db
from dialer.store.models import Attempt
from dialer.worker import scheduling
from tests.factories import campaign_with
from tests.helpers import fresh_redis

SECRET = "test-callback-secret"  # tests/helpers.py TEST_ENV


@pytest.fixture
def receiver(redis_server: RedisServer, clean_db: None) -> Iterator[tuple[str, redis.Redis]]:
    url_ = fresh_redis(redis_server.port, 3)
    r = redis.Redis.from_url(url_)
    port = free_port()
    env = {**os.environ, "DIALER_REDIS_URL": url_, "DIALER_CALLBACK_SECRET": SECRET}
    proc = subprocess.Popen(receiver_command(port, 1), env=env)
    try:
        wait_for_port(port, 20)
        yield f"http://127.0.0.1:{port}", r
    finally:
        proc.terminate()
        proc.wait(10)


def auth() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"dialer:{SECRET}".encode()).decode()}


def released(campaign_id: int) -> list[int]:
    scheduling.release(campaign_id)
    with db.session_scope() as session:
        return sorted(
            session.scalars(
                Attempt.__table__.select()
                .with_only_columns(Attempt.id)
                .where(Attempt.campaign_id == campaign_id)
            )
        )


def get(url: str, **query: str) -> requests.Response:
    return requests.get(f"{url}{PATH}?{urlencode(query)}", headers=auth(), timeout=10)


def verbs(body: bytes) -> list[ET.Element]:
    root = ET.fromstring(body)
    assert root.tag == "Response"
    return list(root)


def test_answer_gets_the_rows_own_prompt_and_the_gather_result_its_ending(receiver) -> None:
    url, r = receiver
    cid = campaign_with(
        ["+19195551001"],
        say="Hello {k}, press 1 to confirm",
        keys="1=confirmed,9=opt-out",
        goodbye="Thank you",
    )
    [aid] = released(cid)
    tag = json.dumps({"attempt": aid, "campaign": cid})
    answer = get(url, eventType="answer", callId="c-1", tag=tag, time="2026-12-07T10:00:00Z")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    [gather] = verbs(answer.content)
    assert gather.tag == "Gather" and gather.attrib["maxDigits"] == "1"
    assert [el.text for el in gather] == ["Hello v, press 1 to confirm"]  # the row's k
    assert gather.attrib["requestUrl"].endswith(f"{PATH}?attempt={aid}&campaign={cid}")
    # The gather's result comes to the requestUrl: our identity is on it, not in a tag.
    got = requests.get(
        f"{url}{PATH}?eventType=gather&callId=c-1&digits=1&reason=max-digits"
        f"&attempt={aid}&campaign={cid}",
        headers=auth(),
        timeout=10,
    )
    assert got.status_code == 200
    assert [(el.tag, el.text) for el in verbs(got.content)] == [
        ("SpeakSentence", "Thank you"),
        ("Hangup", None),
    ]
    # Both events are in the stream, as a POSTed event would be, the gather with its tag.
    entries = [json.loads(fields[b"p"]) for _, fields in r.xrange(eventstream.STREAM)]
    assert [e["eventType"] for e in entries] == ["answer", "gather"]
    assert json.loads(entries[1]["tag"]) == {"attempt": aid, "campaign": cid}


def test_other_events_by_get_are_accepted_as_json(receiver) -> None:
    url, r = receiver
    got = get(url, eventType="hangup", callId="c-1", cause="NORMAL_CLEARING")
    assert got.status_code == 200 and got.json() == {"status": "accepted"}
    assert r.xlen(eventstream.STREAM) == 1


def test_an_answer_for_no_known_attempt_is_hung_up(receiver) -> None:
    url, _ = receiver
    got = get(url, eventType="answer", callId="c-1", tag='{"attempt":999,"campaign":999}')
    assert got.status_code == 200
    assert [el.tag for el in verbs(got.content)] == ["Hangup"]


def test_bad_queries_are_refused_and_change_nothing(receiver) -> None:
    url, r = receiver
    bad = [
        "",  # nothing
        "eventType=answer&callId=bad%20id%21",  # a call id that is not one
        "eventType=%ff%fe",  # not UTF-8
        "callId=c-1",  # no event type
        "eventType=hangup&cause=%00",  # NUL
    ]
    for query in bad:
        got = requests.get(f"{url}{PATH}?{query}", headers=auth(), timeout=10)
        assert got.status_code == 400, query
    assert requests.get(f"{url}{PATH}?eventType=hangup&callId=c-1", timeout=10).status_code == 401
    assert r.xlen(eventstream.STREAM) == 0
