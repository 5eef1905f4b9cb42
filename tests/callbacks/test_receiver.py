"""The callback receiver as it runs in production: ``dialer receiver`` (uvicorn).

Each refused request must change nothing: no entry reaches the event stream and no row
is written. An accepted event is in the stream before the 200 goes out.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import requests

from dialer import settings
from dialer.callbacks import eventstream
from dialer.callbacks.asyncstream import AsyncHandover
from dialer.callbacks.eventstream import HandoverFailed
from dialer.callbacks.gate import PATH, callback_urls
from dialer.dev.fleet import (
    RedisServer,
    free_port,
    receiver_command,
    wait_for_port,
    wait_until,
)
from tests.helpers import fresh_redis

SECRET = "s3cret/with:odd chars"
EVENT = {
    "eventType": "hangup",
    "callId": "c-abc",
    "cause": "USER_BUSY",
    "time": "2026-11-27T10:00:00.000Z",
    "tag": '{"attempt":1,"campaign":1}',
}


def start_receiver(
    redis_url: str, workers: int = 1, **settings_: str
) -> tuple[subprocess.Popen[bytes], str]:
    """``dialer receiver`` on a free port; ``settings_``: more DIALER_ variables."""
    port = free_port()
    env = {
        **os.environ,
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": SECRET,
        **settings_,
    }
    proc = subprocess.Popen(
        receiver_command(port, workers),
        env=env,
    )
    wait_for_port(port, 20)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def receiver(redis_server: RedisServer) -> Iterator[tuple[str, redis.Redis]]:
    url_ = fresh_redis(redis_server.port, 2)
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


def test_escaped_text_that_can_be_stored_is_accepted(receiver) -> None:
    url, r = receiver
    before = queued(r)
    body = (
        b'{"eventType": "answer", "callId": "c-9", "x": "\\u00e9t\\u00e9 \\ud83d\\ude00 \\\\u0000"}'
    )
    resp = requests.post(url + PATH, data=body, headers=basic(SECRET), timeout=5)
    assert resp.status_code == 200, resp.text
    assert queued(r) == before + 1
    [(_, fields)] = r.xrevrange(eventstream.STREAM, count=1)
    assert json.loads(fields[b"p"])["x"] == "\u00e9t\u00e9 \U0001f600 \\u0000"


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
        # Valid JSON that PostgreSQL's jsonb refuses: NUL, a lone surrogate, in a key too.
        (b'{"eventType": "hangup", "callId": "c-1", "x": "a\\u0000b"}', "cannot be stored"),
        (b'{"eventType": "hangup", "callId": "c-1", "x": ["\\ud800"]}', "cannot be stored"),
        (b'{"eventType": "hangup", "callId": "c-1", "k\\u0000": 1}', "cannot be stored"),
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
    assert requests.put(url + PATH, json=EVENT, headers=basic(SECRET), timeout=5).status_code == 405
    # GET is for scripted calls' events, in the query string: none given is a 400, and
    # without credentials it is refused before anything is read.
    assert requests.get(url + PATH, headers=basic(SECRET), timeout=5).status_code == 400
    assert requests.get(url + PATH + "?eventType=hangup&callId=c-9", timeout=5).status_code == 401
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


# ------------------------------------------------- the HTTP server (uvicorn) itself


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def raw_exchange(url: str, *parts: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as they are (parts a moment apart, so the server reads them apart);
    the status and body of the one answer."""
    with socket.create_connection(host_port(url), timeout=timeout) as s:
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.1)
            s.sendall(part)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


def auth_line() -> bytes:
    return b"Authorization: " + basic(SECRET)["Authorization"].encode() + b"\r\n"


def test_chunked_body_within_the_bound_is_accepted(receiver) -> None:
    url, r = receiver
    before = queued(r)
    data = json.dumps({**EVENT, "pad": "x" * 30_000}).encode()
    pieces = (data[i : i + 1000] for i in range(0, len(data), 1000))
    resp = requests.post(url + PATH, data=pieces, headers=basic(SECRET), timeout=10)
    assert resp.status_code == 200, resp.text
    assert queued(r) == before + 1
    [(_, fields)] = r.xrevrange(eventstream.STREAM, count=1)
    assert json.loads(fields[b"p"]) == {**EVENT, "pad": "x" * 30_000}


def test_chunked_body_over_the_bound_gets_413(receiver) -> None:
    """Read in pieces as they come, up to the bound, then refused."""
    url, r = receiver
    before = queued(r)
    data = b'{"eventType": "hangup", "callId": "c-1", "x": "' + b"a" * 66_000 + b'"}'
    chunks = [
        b"%x\r\n%s\r\n" % (len(data[i : i + 4096]), data[i : i + 4096])
        for i in range(0, len(data), 4096)
    ]
    head = b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth_line()
    status, _ = raw_exchange(
        url,
        head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks[:8]),
        b"".join(chunks[8:16]),
        b"".join(chunks[16:]) + b"0\r\n\r\n",
    )
    assert status == 413
    assert queued(r) == before


def test_content_length_over_the_bound_is_refused_before_any_body(receiver) -> None:
    """413 on the header alone: the server does not wait for (or keep) the body."""
    url, r = receiver
    before = queued(r)
    started = time.monotonic()
    status, _ = raw_exchange(
        url,
        b"POST "
        + PATH.encode()
        + b" HTTP/1.1\r\nHost: x\r\n"
        + auth_line()
        + b"Content-Length: 10000000\r\n\r\n"
        + b"{" * 1000,
    )
    assert status == 413
    assert time.monotonic() - started < 5
    assert queued(r) == before


def test_malformed_content_length_is_a_400(receiver) -> None:
    url, r = receiver
    before = queued(r)
    status, _ = raw_exchange(
        url,
        b"POST "
        + PATH.encode()
        + b" HTTP/1.1\r\nHost: x\r\n"
        + auth_line()
        + b"Content-Length: twelve\r\n\r\n{}",
    )
    assert status == 400
    assert queued(r) == before


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(60)), 431),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n", 431),
    ],
    ids=["request-line", "header-count", "header-size"],
)
def test_request_head_limits(receiver, head, status) -> None:
    url, _ = receiver
    assert raw_exchange(url, head + b"\r\n")[0] == status


def test_a_head_that_never_ends_is_cut_off(receiver) -> None:
    """Headers within each limit, but more than they allow together: refused once the
    bytes read pass the bound, not held for as long as the client sends."""
    url, _ = receiver
    with socket.create_connection(host_port(url), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        answer = b""
        try:
            for i in range(200):  # up to ~1.6 MB, 8 KB a line: far past the bound
                s.sendall(b"X-%d: %s\r\n" % (i % 40, b"v" * 8000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_keep_alive_serves_many_callbacks_on_one_connection(receiver) -> None:
    url, r = receiver
    before = queued(r)
    conn = http.client.HTTPConnection(*host_port(url), timeout=10)
    body = json.dumps(EVENT).encode()
    sockets = set()
    for _ in range(5):
        conn.request("POST", PATH, body=body, headers=basic(SECRET))
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
        sockets.add(id(conn.sock))
    conn.close()
    assert len(sockets) == 1 and queued(r) == before + 5


# ------------------------------------------------- the hand-over under concurrency


def test_each_request_gets_its_own_handover_result_as_redis_fails_mid_load() -> None:
    """Many concurrent callbacks share each write to Redis; while Redis drops the
    receiver's connections and then refuses writes (OOM), every request answered 2xx
    has its event in the stream, and the failures are 503s, not lost events."""
    server = RedisServer(free_port())
    server.start()
    proc = None
    try:
        r = redis.Redis.from_url(server.url)
        proc, url = start_receiver(server.url, workers=2)
        results: dict[str, int] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def post(n: int) -> None:
            session = requests.Session()
            i = 0
            while not stop.is_set():
                call_id = f"c-{n}-{i}"
                i += 1
                try:
                    status = session.post(
                        url + PATH,
                        json={**EVENT, "callId": call_id},
                        headers=basic(SECRET),
                        timeout=10,
                    ).status_code
                except requests.RequestException:
                    status = 0
                with lock:
                    results[call_id] = status

        threads = [threading.Thread(target=post, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        r.client_kill_filter(_type="normal", skipme=True)  # connections dropped mid-flight
        time.sleep(0.5)
        r.config_set("maxmemory", 1)  # every write refused: -OOM replies in the batches
        time.sleep(0.7)
        r.config_set("maxmemory", 0)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        stored = {
            json.loads(fields[b"p"])["callId"]
            for _, fields in r.xrange(eventstream.STREAM, count=1_000_000)
        }
        accepted = {c for c, s in results.items() if s == 200}
        refused = {c for c, s in results.items() if s == 503}
        assert accepted <= stored, (
            f"acknowledged, not in the stream: {sorted(accepted - stored)[:5]}"
        )
        assert refused, "Redis refused writes for 0.7 s: some callbacks must have had a 503"
        assert set(results.values()) <= {200, 503}, set(results.values())
        late = [c for c in accepted if c not in refused]
        assert len(accepted) > 100 and late, "and accepted again once Redis took writes"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        server.stop()


def test_sigterm_lets_a_request_in_flight_finish(redis_server: RedisServer) -> None:
    url_ = fresh_redis(redis_server.port, 3)
    r = redis.Redis.from_url(url_)
    proc, url = start_receiver(url_)
    answers: list[int] = []
    try:
        r.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # the XADD waits
        sender = threading.Thread(
            target=lambda: answers.append(
                requests.post(url + PATH, json=EVENT, headers=basic(SECRET), timeout=20).status_code
            )
        )
        sender.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        sender.join(20)
        assert proc.wait(20) == 0
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert answers == [200], "answered, not cut off"
    assert r.xlen(eventstream.STREAM) == 1


def test_a_server_process_that_dies_is_replaced(redis_server: RedisServer) -> None:
    url_ = fresh_redis(redis_server.port, 3)
    proc, url = start_receiver(url_)
    try:
        [first] = wait_until(lambda: server_processes(proc.pid), 10, what="a server process")
        os.kill(first, signal.SIGKILL)
        [second] = wait_until(
            lambda: [p for p in server_processes(proc.pid) if p != first], 20, what="a new one"
        )
        assert second != first
        wait_until(lambda: _healthy(url), 20, what="the new process serving")
        resp = requests.post(url + PATH, json=EVENT, headers=basic(SECRET), timeout=10)
        assert resp.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def server_processes(supervisor: int) -> list[int]:
    """The receiver's server processes: the supervisor's spawned children (not
    multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    found = []
    for pid in children:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except FileNotFoundError:
            continue
    return found


# ------------------------------------------------- the asynchronous hand-over itself


def test_async_handover_authenticates_selects_and_keeps_the_password_out(tmp_path: Path) -> None:
    password = "p@ss/word"
    server = RedisServer(options=["--requirepass", password])
    port = server.port
    server.start()
    try:
        quoted = requests.utils.quote(password, safe="")
        good = AsyncHandover(f"redis://:{quoted}@127.0.0.1:{port}/5")
        wrong = AsyncHandover(f"redis://:nope-{quoted}@127.0.0.1:{port}/5")

        async def run() -> str:
            await good("{}", "2026-11-27T10:00:00+00:00")
            await good('{"a":1}', "2026-11-27T10:00:01+00:00")
            try:
                await wrong("{}", "t")
            except HandoverFailed as exc:
                return str(exc)
            finally:
                await good.close()
                await wrong.close()
            return "no failure"

        message = asyncio.run(run())
        assert "WRONGPASS" in message or "invalid" in message.lower(), message
        assert password not in message and quoted not in message
        r = redis.Redis(port=port, password=password, db=5)
        assert [f[b"p"] for _, f in r.xrange(eventstream.STREAM)] == [b"{}", b'{"a":1}']
    finally:
        server.stop()


def test_async_handover_times_out_then_recovers(redis_server: RedisServer) -> None:
    url_ = fresh_redis(redis_server.port, 4)
    r = redis.Redis.from_url(url_)
    handover = AsyncHandover(url_, timeout=0.3)

    async def run() -> list[str]:
        outcomes = []
        await handover("{}", "t0")  # connected
        r.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
        started = time.monotonic()
        got = await asyncio.gather(
            *(handover("{}", f"t{i}") for i in range(5)), return_exceptions=True
        )
        outcomes += [type(g).__name__ for g in got]
        assert time.monotonic() - started < 0.9, "bounded by the timeout, not the pause"
        await asyncio.sleep(1.0)
        await handover("{}", "after")  # a new connection
        await handover.close()
        return outcomes

    try:
        assert asyncio.run(run()) == ["HandoverFailed"] * 5
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    # The paused ones may have been added when the pause ended (a repeat is harmless);
    # the first and the last are there.
    received = [f[b"r"] for _, f in r.xrange(eventstream.STREAM)]
    assert received[0] == b"t0" and received[-1] == b"after"
