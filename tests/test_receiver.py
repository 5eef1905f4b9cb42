"""The callback receiver as it runs in production: ``dialer receiver`` (gunicorn).

Each refused request must change nothing: no entry reaches the event stream and no row
is written. An accepted event is in the stream before the 200 goes out.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
import requests

from dialer import eventstream, settings
from dialer.fleet import RedisServer, free_port, wait_for_port
from dialer.receiver import PATH, callback_urls

SECRET = "s3cret/with:odd chars"
EVENT = {
    "eventType": "hangup",
    "callId": "c-abc",
    "cause": "USER_BUSY",
    "time": "2026-11-27T10:00:00.000Z",
    "tag": '{"attempt":1,"campaign":1}',
}


def start_receiver(redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DIALER_REDIS_URL": redis_url, "DIALER_CALLBACK_SECRET": SECRET}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dialer.cli",
            "receiver",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
    )
    wait_for_port(port, 20)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def receiver(redis_server: RedisServer) -> Iterator[tuple[str, redis.Redis]]:
    url_ = f"redis://127.0.0.1:{redis_server.port}/2"
    redis.Redis.from_url(url_).delete(eventstream.STREAM)
    proc, url = start_receiver(url_)
    yield url, redis.Redis.from_url(url_)
    proc.terminate()
    proc.wait(10)


def queued(r: redis.Redis) -> int:
    return int(r.xlen(eventstream.STREAM))


def basic(password: str, user: str = "dialer") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_valid_event_is_put_in_the_stream_before_the_answer(receiver) -> None:
    url, r = receiver
    before = queued(r)
    sent = datetime.now(UTC)
    resp = requests.post(url + PATH, json=EVENT, headers=basic(SECRET), timeout=5)
    assert resp.status_code == 200, resp.text
    assert queued(r) == before + 1
    [(_, fields)] = r.xrevrange(eventstream.STREAM, count=1)
    assert json.loads(fields[b"p"]) == EVENT, "the event as the carrier sent it"
    received = datetime.fromisoformat(fields[b"r"].decode())
    assert sent - timedelta(seconds=1) <= received <= datetime.now(UTC)


def test_fallback_path_and_path_token_are_accepted(receiver) -> None:
    url, r = receiver
    before = queued(r)
    assert (
        requests.post(
            url + PATH + "/fallback", json=EVENT, headers=basic(SECRET), timeout=5
        ).status_code
        == 200
    )
    token = requests.utils.quote(SECRET, safe="")
    assert requests.post(f"{url}{PATH}/t/{token}", json=EVENT, timeout=5).status_code == 200
    assert queued(r) == before + 2


def test_credentials_in_the_callback_url_work_as_the_carrier_sends_them(receiver) -> None:
    url, r = receiver
    s = dataclasses_replace(callback_url=url, callback_secret=SECRET)
    callback, fallback = callback_urls(s)
    assert SECRET not in callback, "the secret is percent-encoded in the URL"
    before = queued(r)
    assert requests.post(callback, json=EVENT, timeout=5).status_code == 200  # userinfo → Basic
    assert requests.post(fallback, json=EVENT, timeout=5).status_code == 200
    assert queued(r) == before + 2


def dataclasses_replace(**changes: str) -> settings.Settings:
    import dataclasses

    return dataclasses.replace(settings.get(), **changes)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer x"}, 401),
        ({"Authorization": "Basic !!!notbase64"}, 401),
        (basic("wrong"), 403),
        (basic(SECRET[:-1]), 403),
    ],
)
def test_missing_or_wrong_credentials_are_refused(receiver, headers, status) -> None:
    url, r = receiver
    before = queued(r)
    resp = requests.post(url + PATH, json=EVENT, headers=headers, timeout=5)
    assert resp.status_code == status and "error" in resp.json()
    assert queued(r) == before


def test_wrong_path_token_is_refused(receiver) -> None:
    url, r = receiver
    before = queued(r)
    assert requests.post(f"{url}{PATH}/t/nope", json=EVENT, timeout=5).status_code == 403
    assert queued(r) == before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"callId": "c-1"}', "eventType"),
        (b'{"eventType": "hangup"}', "without callId"),
        (b'{"eventType": "hangup", "callId": "c 1; drop"}', "callId"),
        (b'{"eventType": "hangup", "callId": "c-1", "cause": 12}', "cause"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_events_get_400_with_a_reason(receiver, body, reason) -> None:
    url, r = receiver
    before = queued(r)
    resp = requests.post(
        url + PATH,
        data=body,
        headers={**basic(SECRET), "Content-Type": "application/json"},
        timeout=5,
    )
    assert resp.status_code == 400 and reason in resp.json()["error"]
    assert queued(r) == before


def test_oversized_body_gets_413(receiver) -> None:
    url, r = receiver
    before = queued(r)
    body = b'{"eventType": "hangup", "callId": "c-1", "x": "' + b"a" * 70_000 + b'"}'
    resp = requests.post(url + PATH, data=body, headers=basic(SECRET), timeout=5)
    assert resp.status_code == 413
    assert queued(r) == before


def test_other_events_are_accepted_and_kept(receiver) -> None:
    url, r = receiver
    before = queued(r)
    resp = requests.post(
        url + PATH,
        json={"eventType": "speak", "callId": "c-1", "state": "PLAYBACK_STOP"},
        headers=basic(SECRET),
        timeout=5,
    )
    assert resp.status_code == 200 and queued(r) == before + 1


def test_wrong_method_and_path(receiver) -> None:
    url, _ = receiver
    assert requests.get(url + PATH, headers=basic(SECRET), timeout=5).status_code == 405
    assert requests.post(url + "/elsewhere", json=EVENT, timeout=5).status_code == 404
    assert requests.get(url + "/healthz", timeout=5).status_code == 200


def test_redis_down_means_503_not_a_lost_event() -> None:
    proc, url = start_receiver(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    try:
        resp = requests.post(url + PATH, json=EVENT, headers=basic(SECRET), timeout=30)
        assert resp.status_code == 503
    finally:
        proc.terminate()
        proc.wait(10)
