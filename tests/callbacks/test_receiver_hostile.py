"""Hostile or broken input at the receiver's door (``dialer receiver``, real sockets):
JSON built to hurt a parser, wrong types, bad bytes, slow and idle clients.

Each is answered 4xx with a reason (or, for a connection that never sent anything,
closed), in bounded time, and changes nothing: the event stream gains no entry, and
the process goes on serving the carrier promptly. docs/operations.md, "What the
receiver answers", is the table these tests hold the receiver to.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from dialer.callbacks import eventstream
from dialer.callbacks.gate import PATH
from dialer.dev.fleet import RedisServer, free_port, receiver_command, wait_for_port
from tests.callbacks.test_receiver import (
    EVENT,
    SECRET,
    auth_line,
    basic,
    host_port,
    queued,
    server_processes,
)
from tests.helpers import fresh_redis

TIMEOUT = 3.0  # DIALER_RECEIVER_REQUEST_TIMEOUT for these tests (10 s by default)
LATE = 2.5  # how late a loaded machine may close, past the timeout


def _low_open_files_limit() -> None:
    """As many a machine starts a process: a soft limit of 1,024 open files."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


@pytest.fixture(scope="module")
def receiver(redis_server: RedisServer) -> Iterator[tuple[str, redis.Redis, int]]:
    """(URL, the stream's Redis, the pid of the one server process), started under a
    soft limit of 1,024 open files, as is common: the receiver raises its own."""
    url_ = fresh_redis(redis_server.port, 6)
    port = free_port()
    env = {
        **os.environ,
        "DIALER_REDIS_URL": url_,
        "DIALER_CALLBACK_SECRET": SECRET,
        "DIALER_RECEIVER_REQUEST_TIMEOUT": str(TIMEOUT),
        "DIALER_METRICS_TOKEN": "metrics-token",
    }
    proc = subprocess.Popen(receiver_command(port, 1), env=env, preexec_fn=_low_open_files_limit)
    try:
        wait_for_port(port, 20)
        [pid] = server_processes(proc.pid)
        yield f"http://127.0.0.1:{port}", redis.Redis.from_url(url_), pid
    finally:
        proc.terminate()
        proc.wait(10)


def post(url: str, body: bytes, timeout: float = 10) -> requests.Response:
    return requests.post(
        url + PATH,
        data=body,
        headers={**basic(SECRET), "Content-Type": "application/json"},
        timeout=timeout,
    )


def event_with(**fields: object) -> bytes:
    return json.dumps({**EVENT, **fields}).encode()


def in_event(value: bytes) -> bytes:
    """A valid event with ``value`` (JSON text as it is) as one more field."""
    return b'{"eventType": "hangup", "callId": "c-1", "x": ' + value + b"}"


# ------------------------------------------------------------ bodies built to hurt


HOSTILE_BODIES = [
    # Nesting: 30,000 levels fit in the 64 KiB bound; json raises RecursionError on them.
    ("deep-array", b"[" * 30_000 + b"]" * 30_000, "nested over 32 levels"),
    ("deep-object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nested over 32 levels"),
    ("deep-in-event", in_event(b"[" * 30_000 + b"]" * 30_000), "nested over 32 levels"),
    # Decodes, but was walked again by recursion (a 500 before) and by every reader after.
    ("900-deep-escaped", in_event(b"[" * 900 + b'"\\u00e9"' + b"]" * 900), "nested over 32"),
    ("33-deep", in_event(b"[" * 32 + b"]" * 32), "nested over 32 levels"),
    # Numbers: Python's 4,300-digit int limit, and what jsonb's numeric cannot hold.
    ("huge-int", in_event(b"9" * 5_000), "number over 40 characters"),
    ("long-fraction", in_event(b"0." + b"1" * 20_000), "number over 40 characters"),
    ("huge-exponent", in_event(b"1e999999"), "number out of range"),
    ("tiny-exponent", in_event(b"1e-20000"), "number out of range"),
    ("overflowing-float", in_event(b"1e400"), "number out of range"),
    ("nan", in_event(b"NaN"), "NaN is not a JSON number"),
    ("infinity", in_event(b"-Infinity"), "-Infinity is not a JSON number"),
    # One reader takes the first, another the last.
    (
        "duplicate-eventType",
        b'{"eventType": "hangup", "callId": "c-1", "eventType": "answer"}',
        "duplicate key",
    ),
    ("duplicate-nested", in_event(b'{"k": 1, "k": 2}'), "duplicate key"),
    # Wrong types for each field the dialer reads.
    ("eventType-number", event_with(eventType=7), "eventType"),
    ("eventType-object", event_with(eventType={"a": "hangup"}), "eventType"),
    ("eventType-list", event_with(eventType=["hangup"]), "eventType"),
    ("eventType-null", event_with(eventType=None), "eventType"),
    ("eventType-bool", event_with(eventType=True), "eventType"),
    ("eventType-empty", event_with(eventType=""), "eventType"),
    ("eventType-long", event_with(eventType="h" * 1000), "eventType"),
    ("callId-list", event_with(callId=["c-1"]), "callId"),
    ("callId-number", event_with(callId=12), "callId"),
    ("callId-object", event_with(callId={"id": "c-1"}), "callId"),
    ("cause-list", event_with(cause=["USER_BUSY"]), "cause"),
    # A regular expression's $ matches before a final newline: these passed, a "hangup"
    # without the callId a hangup needs, and a call id no row has.
    ("eventType-newline", b'{"eventType": "hangup\\n"}', "eventType"),
    ("callId-newline", event_with(callId="c-1\n"), "callId"),
    ("tag-number", event_with(tag=5), "tag must be a string"),
    ("tag-object", event_with(tag={"attempt": 1}), "tag must be a string"),
    ("tag-bool", event_with(tag=False), "tag must be a string"),
    ("tag-long", event_with(tag="t" * 257), "at most 256 characters"),
    # A string, but the workers decode a tag that looks like JSON: RecursionError there
    # left the batch it came in pending for ever.
    ("tag-deep-json", event_with(tag='{"a":' + "[" * 20_000 + "]" * 20_000 + "}"), "256"),
    ("time-number", event_with(time=1764237600), "time must be a string"),
    ("time-list", event_with(time=["2026-11-27"]), "time must be a string"),
    ("time-long", event_with(time="2026-11-27T10:00:00Z" + " " * 60), "at most 64"),
    # Not an object at all.
    ("array", b"[]", "JSON object"),
    ("string", b'"hangup"', "JSON object"),
    ("number", b"12", "JSON object"),
    ("null", b"null", "JSON object"),
    ("true", b"true", "JSON object"),
    # Bytes that are not UTF-8 (nor -16/-32): json on bytes decodes strictly.
    ("invalid-utf8", in_event(b'"\xff\xfe"'), "not valid JSON"),
    ("overlong-nul", in_event(b'"\xc0\x80"'), "not valid JSON"),
    # A surrogate's UTF-8 form: json's decoding of bytes lets it through, jsonb would not.
    ("utf8-surrogate", in_event(b'"\xed\xa0\x80"'), "cannot be stored"),
    ("truncated-utf8", in_event(b'"\xe2\x82"'), "not valid JSON"),
    # A raw NUL (a control character: not allowed in a JSON string), and an escaped one.
    ("raw-nul", in_event(b'"a\x00b"'), "not valid JSON"),
    ("escaped-nul-in-key", b'{"eventType": "hangup", "callId": "c-1", "\\u0000": 1}', "stored"),
    ("trailing-garbage", event_with() + b" x", "not valid JSON"),
    ("two-documents", event_with() + event_with(), "not valid JSON"),
]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(body, reason) for _, body, reason in HOSTILE_BODIES],
    ids=[name for name, _, _ in HOSTILE_BODIES],
)
def test_hostile_bodies_get_a_400_with_a_reason_and_change_nothing(receiver, body, reason) -> None:
    url, r, _ = receiver
    assert len(body) <= 64 * 1024, "within the body bound: the parser sees it"
    before = queued(r)
    started = time.monotonic()
    resp = post(url, body)
    assert resp.status_code == 400, (resp.status_code, resp.text[:200])
    assert resp.headers["Content-Type"] == "application/json"
    assert reason in resp.json()["error"], resp.json()
    assert SECRET not in resp.text
    assert time.monotonic() - started < 2, "a refusal costs milliseconds, whatever the body"
    assert queued(r) == before


def test_what_is_within_every_bound_is_accepted(receiver) -> None:
    """The bounds sit where no event of the carrier's goes: the largest of each kind
    is taken, and stored as it came."""
    url, r, _ = receiver
    accepted = [
        in_event(b"[" * 31 + b"]" * 31),  # 32 levels with the event's own object
        in_event(b"9" * 40),
        in_event(b"-1.5e-300"),
        in_event(b'"' + b"s" * 60_000 + b'"'),  # a long string, within 64 KiB
        event_with(time=None, tag=None),  # null: as if absent
        event_with(time="2026-11-27T10:00:00+02:00", tag="not ours"),
        json.dumps({**EVENT, "x": "caf\u00e9 \u2603"}, ensure_ascii=False).encode(),
    ]
    before = queued(r)
    for body in accepted:
        resp = post(url, body)
        assert resp.status_code == 200, (resp.text, body[:80])
    assert queued(r) == before + len(accepted)
    stored = [f[b"p"] for _, f in r.xrevrange(eventstream.STREAM, count=len(accepted))]
    assert stored[::-1] == accepted


# ------------------------------------------------------------ the query string (GET)


def get_raw(url: str, query: bytes) -> tuple[int, bytes]:
    """A GET callback with the query string's bytes exactly as given."""
    with socket.create_connection(host_port(url), timeout=10) as s:
        s.sendall(
            b"GET "
            + PATH.encode()
            + b"?"
            + query
            + b" HTTP/1.1\r\nHost: x\r\n"
            + auth_line()
            + b"\r\n"
        )
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


GOOD_QUERY = b"eventType=hangup&callId=c-1&cause=USER_BUSY&time=2026-11-27T10%3A00%3A00Z"

HOSTILE_QUERIES = [
    ("percent-invalid-utf8", GOOD_QUERY + b"&x=%ff%fe", "not valid UTF-8"),
    ("percent-overlong", GOOD_QUERY + b"&x=%C0%80", "not valid UTF-8"),
    ("percent-surrogate", GOOD_QUERY + b"&x=%ED%A0%80", "not valid UTF-8"),
    ("percent-nul", GOOD_QUERY + b"&x=a%00b", "cannot be stored"),
    ("percent-nul-in-name", GOOD_QUERY + b"&%00=1", "cannot be stored"),
    # Raw bytes outside what a request line may hold: the HTTP parser refuses the request.
    ("raw-invalid-utf8", GOOD_QUERY + b"&x=\xff", "Invalid HTTP request"),
    ("raw-utf8", GOOD_QUERY + b"&x=caf\xc3\xa9", "Invalid HTTP request"),
    ("raw-nul", GOOD_QUERY + b"&x=a\x00b", "Invalid HTTP request"),
    ("raw-tab", GOOD_QUERY + b"&x=a\tb", "Invalid HTTP request"),
    ("too-many-fields", GOOD_QUERY + b"&a=1" * 40, "over 40 fields"),
    ("eventType-object", b"eventType=%7B%7D&callId=c-1", "eventType"),
    ("callId-with-spaces", b"eventType=hangup&callId=c+1%3B+drop", "callId"),
    ("callId-newline", b"eventType=hangup&callId=c-1%0A", "callId"),
    ("no-eventType", b"callId=c-1", "eventType"),
    ("time-too-long", b"eventType=hangup&callId=c-1&time=" + b"9" * 65, "at most 64"),
    ("only-separators", b"&&&&", "eventType"),
]


@pytest.mark.parametrize(
    ("query", "reason"),
    [(q, reason) for _, q, reason in HOSTILE_QUERIES],
    ids=[name for name, _, _ in HOSTILE_QUERIES],
)
def test_hostile_query_strings_get_a_400_and_change_nothing(receiver, query, reason) -> None:
    url, r, _ = receiver
    before = queued(r)
    status, body = get_raw(url, query)
    assert status == 400, (status, body[:200])
    assert reason.encode() in body, body[:200]
    assert SECRET.encode() not in body
    assert queued(r) == before


def test_a_valid_query_event_is_accepted(receiver) -> None:
    """The hostile ones above differ from this one only in what they add."""
    url, r, _ = receiver
    before = queued(r)
    assert get_raw(url, GOOD_QUERY)[0] == 200
    assert queued(r) == before + 1
    [(_, fields)] = r.xrevrange(eventstream.STREAM, count=1)
    assert json.loads(fields[b"p"])["time"] == "2026-11-27T10:00:00Z"


@pytest.mark.parametrize(
    "query",
    [
        b"eventType=gather&callId=c-1&attempt=%E1%8D%A9&campaign=0",
        b"eventType=gather&callId=c-1&attempt=1&campaign=%C2%B2",
        b"eventType=gather&callId=c-1&attempt=1&campaign=",
        b"eventType=answer&callId=c-1&attempt=1234567890123456789&campaign=1",
    ],
    ids=["ethiopic-one", "superscript-two", "empty", "past-bigint"],
)
def test_a_gather_whose_identity_is_not_row_ids_gets_a_400(receiver, query) -> None:
    """str.isdigit takes "፩" (Ethiopic one), int() does not: it was a 500 (the fuzz
    test found it), and the call script's lookup a 503. The dialer writes attempt and
    campaign on a gather's URL itself: anything but a row id is not from it."""
    url, r, _ = receiver
    before = queued(r)
    status, body = get_raw(url, query)
    assert status == 400 and b"must be row ids" in body, body[:200]
    assert queued(r) == before


@pytest.mark.parametrize(
    "query",
    [
        b"eventType=answer&callId=c-1&attempt=1&campaign=3000000000",
        b"eventType=answer&callId=c-1&tag=%7B%22attempt%22%3A99999999999999999999%2C%22campaign%22%3A1%7D",
    ],
    ids=["campaign-past-integer", "tag-attempt-past-bigint"],
)
def test_an_answer_naming_ids_past_their_columns_is_kept_and_hung_up(receiver, query) -> None:
    """PostgreSQL refuses the lookup ('integer out of range'): it was a 503, and the
    carrier's retries would have met it for ever (the fuzz test found it). Such ids
    name no row: the event is kept and answered as for a call the dialer does not know
    (hang up)."""
    url, r, _ = receiver
    before = queued(r)
    status, body = get_raw(url, query)
    assert status == 200 and b"<Hangup" in body, body[:200]
    assert queued(r) == before + 1


@pytest.mark.parametrize(
    "value", [b"Basic \x80", b"Basic ZGlhbGVyOnM=\xe9", b"Basic \xff\xfe"], ids=["80", "e9", "fffe"]
)
def test_credentials_that_are_not_ascii_get_401(receiver, value) -> None:
    """base64 raises a plain ValueError on text that is not ASCII: it was a 500 (the
    fuzz test found it)."""
    url, r, _ = receiver
    before = queued(r)
    body = event_with()
    status, answer = raw_post(url, b"Authorization: " + value + b"\r\n", body)
    assert status == 401 and b"malformed Basic credentials" in answer, answer[:200]
    assert queued(r) == before
    with socket.create_connection(host_port(url), timeout=10) as s:  # and /metrics' check
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 401, resp.read()[:200]


def raw_post(url: str, header_lines: bytes, body: bytes) -> tuple[int, bytes]:
    with socket.create_connection(host_port(url), timeout=10) as s:
        s.sendall(
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header_lines
            + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )  # fmt: skip
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


_EV = event_with()
_POST = b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
FRAMING = [
    ("two-lengths", b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(_EV) + _EV),
    ("length-and-chunked", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + _EV),
    ("negative-length", b"Content-Length: -1\r\n\r\n" + _EV),
    ("signed-length", b"Content-Length: +%d\r\n\r\n" % len(_EV) + _EV),
    ("length-past-64-bits", b"Content-Length: 99999999999999999999999\r\n\r\n" + _EV),
    ("bad-chunk-size", b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + _EV + b"\r\n0\r\n\r\n"),
    ("folded-header", b"X-A: 1\r\n  folded\r\nContent-Length: %d\r\n\r\n" % len(_EV) + _EV),
]


@pytest.mark.parametrize("rest", [rest for _, rest in FRAMING], ids=[n for n, _ in FRAMING])
def test_ambiguous_framing_gets_a_400_and_changes_nothing(receiver, rest) -> None:
    """Whatever could make two readers split the bytes into requests differently (the
    stuff of request smuggling) is refused by the HTTP parser before the app."""
    url, r, _ = receiver
    before = queued(r)
    with socket.create_connection(host_port(url), timeout=10) as s:
        s.sendall(_POST + auth_line() + rest)
        answer, _ = read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert answer.endswith(b"Invalid HTTP request received."), answer[-100:]
    assert queued(r) == before


@pytest.mark.parametrize(
    "first",
    [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
    ],
    ids=["http2-preface", "tls-client-hello"],
)
def test_other_protocols_get_a_400(receiver, first) -> None:
    url, r, _ = receiver
    with socket.create_connection(host_port(url), timeout=10) as s:
        s.sendall(first)
        answer, _ = read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]


# ------------------------------------------------------------ slow and idle clients


def read_until_closed(s: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; (bytes, seconds it took)."""
    started = time.monotonic()
    s.settimeout(limit)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got, time.monotonic() - started


def trickle(s: socket.socket, data: bytes, interval: float) -> float:
    """Send ``data`` a byte every ``interval`` s until the server stops reading (it
    closed); the seconds that took."""
    started = time.monotonic()
    for byte in data:
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        ready = selectors.DefaultSelector()
        ready.register(s, selectors.EVENT_READ)
        if ready.select(interval):  # the server answered (408) or closed
            break
    return time.monotonic() - started


def timely_post(url: str) -> float:
    """A valid callback on its own connection; the seconds its 200 took."""
    started = time.monotonic()
    resp = post(url, event_with(callId="c-timely"), timeout=5)
    assert resp.status_code == 200, resp.text
    return time.monotonic() - started


def head(length: int) -> bytes:
    return (
        b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth_line()
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
    )  # fmt: skip


def test_a_head_sent_a_byte_at_a_time_is_cut_off_with_408(receiver) -> None:
    url, r, _ = receiver
    before = queued(r)
    body = event_with()
    with socket.create_connection(host_port(url), timeout=10) as s:
        took = trickle(s, head(len(body)) + body, interval=0.3)
        answer, _ = read_until_closed(s, 5)
        # Served meanwhile, and at once.
        assert timely_post(url) < 1
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert TIMEOUT - 0.5 < took < TIMEOUT + LATE, took
    assert queued(r) == before + 1, "the timely callback only"


def test_a_body_that_stalls_is_cut_off_and_its_part_not_handed_over(receiver) -> None:
    """The part that came is a whole, valid event (the declared length is longer):
    refused all the same, since the request never arrived whole."""
    url, r, _ = receiver
    before = queued(r)
    body = event_with()
    with socket.create_connection(host_port(url), timeout=10) as s:
        s.sendall(head(len(body) + 20) + body)
        took = trickle(s, b" " * 19, interval=0.3)  # a byte short, slowly
        answer, _ = read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert took < TIMEOUT + LATE, took
    time.sleep(0.2)  # the app's answer to the disconnect, if it were to hand over
    assert queued(r) == before


def test_a_connection_that_sends_nothing_is_closed(receiver) -> None:
    url, _, _ = receiver
    with socket.create_connection(host_port(url), timeout=10) as s:
        answer, took = read_until_closed(s, 10)
    assert answer == b"", "nothing was asked: no answer, only the close"
    assert TIMEOUT - 0.5 < took < TIMEOUT + LATE, took


def test_a_kept_alive_connection_trickling_after_its_answer_is_cut_off(receiver) -> None:
    """uvicorn's keep-alive timer is cancelled by any byte: a client sending a blank
    line a second after its answer would keep the connection for ever."""
    url, r, _ = receiver
    body = event_with(callId="c-kept")
    with socket.create_connection(host_port(url), timeout=10) as s:
        s.sendall(head(len(body)) + body)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200 and resp.read()
        took = trickle(s, b"\r\n" * 50, interval=0.3)
        answer, _ = read_until_closed(s, 5)
    assert answer == b"" and took < TIMEOUT + LATE, (answer[:100], took)


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


IDLE = 2_000


def test_the_open_files_limit_is_raised_for_the_server_processes(receiver) -> None:
    _, _, pid = receiver
    [soft, hard] = [
        line.split()[3:5]
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
        if line.startswith("Max open files")
    ][0]
    wanted = 65_536 if hard == "unlimited" else min(int(hard), 65_536)
    assert int(soft) == max(wanted, 1024), (soft, hard)


def test_thousands_of_idle_connections_neither_block_the_carrier_nor_stay(receiver) -> None:
    """2,000 connections, half silent, half stopped mid-head: a valid callback is still
    answered at once, and every one of them is closed within the request timeout."""
    url, r, pid = receiver
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 500:
        pytest.skip(f"this process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE + 500), hard))
    files_before, rss_before = open_files(pid), rss_kib(pid)
    before = queued(r)
    partial = b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth_line()
    idle: list[socket.socket] = []
    try:
        started = time.monotonic()
        for i in range(IDLE):
            s = socket.create_connection(host_port(url), timeout=5)
            if i % 2:
                s.sendall(partial)
            idle.append(s)
        # All accepted by the server process before the carrier's turn.
        while open_files(pid) < files_before + IDLE and time.monotonic() - started < 10:
            time.sleep(0.05)
        assert open_files(pid) >= files_before + IDLE
        rss_held = rss_kib(pid)
        assert timely_post(url) < 1
        assert time.monotonic() - started < TIMEOUT, "the carrier was served while they were held"
        # Each is closed by the server: a 408 to those that began a request.
        selector = selectors.DefaultSelector()
        for i, s in enumerate(idle):
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ, i)
        got = [b""] * IDLE
        closed: set[int] = set()
        deadline = started + TIMEOUT + LATE + 1
        while len(closed) < IDLE and time.monotonic() < deadline:
            for key, _ in selector.select(0.5):
                try:
                    chunk = key.fileobj.recv(4096)  # type: ignore[union-attr]
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[key.data] += chunk
                else:
                    selector.unregister(key.fileobj)
                    closed.add(key.data)
        assert len(closed) == IDLE, f"{IDLE - len(closed)} still open"
        assert all(got[i].startswith(b"HTTP/1.1 408 ") for i in range(1, IDLE, 2))
        assert all(got[i] == b"" for i in range(0, IDLE, 2))
    finally:
        for s in idle:
            s.close()
    assert queued(r) == before + 1
    wait = time.monotonic() + 5
    while open_files(pid) > files_before + 5 and time.monotonic() < wait:
        time.sleep(0.05)
    assert open_files(pid) <= files_before + 5
    held_kib = rss_held - rss_before
    print(f"{IDLE} idle connections held {held_kib} KiB of RSS ({held_kib / IDLE:.1f} KiB each)")
    assert held_kib < IDLE * 64, "a few KiB each, not a request's worth"
