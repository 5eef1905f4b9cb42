"""Generated garbage at the real receiver (``dialer receiver``, one server process, raw
sockets so that any byte can be sent), checked against the receiver's rules as
docs/operations.md states them ("What the receiver answers"), restated here on their
own (``valid_event``) rather than borrowed from dialer.callbacks:

- 2xx only for a valid event, 4xx for everything else, never 5xx (Redis is up: the
  documented 503 is not caused here);
- the event stream gains exactly one entry per 2xx, and none otherwise;
- the server process is the same one throughout (none died and was replaced), it
  answers a valid event afterwards, and its memory grew by less than a bound.

Cases: random bytes; random JSON values of every shape; valid events with a field
replaced by a random value, removed, or the bytes then cut, flipped or spliced;
valid events (the 2xx side); random query strings (GET); random header values.
``MAX_EXAMPLES`` of them, a fixed number (``--hypothesis-show-statistics`` prints it and
the kinds drawn; the last test prints the tally of answers).
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dialer.callbacks import eventstream
from dialer.callbacks.gate import PATH
from dialer.dev.fleet import RedisServer, free_port, receiver_command, wait_for_port
from tests.callbacks.test_receiver import server_processes
from tests.helpers import fresh_redis

MAX_EXAMPLES = 500
SECRET = "fuzz-secret"
AUTH = b"Basic " + base64.b64encode(f"dialer:{SECRET}".encode())
RSS_GROWTH_KIB = 32 * 1024  # after MAX_EXAMPLES requests, bodies up to 64 KiB among them

# ------------------------------------------------------------------ the rules, restated

MAX_BODY = 64 * 1024
MAX_DEPTH = 32
STATUS_EVENTS = {"answer", "hangup", "timeout"}
EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
CALL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,80}")
CAUSE = re.compile(r"[A-Z0-9_]{1,64}")
ROW_ID = re.compile(r"[0-9]{1,18}")


class Invalid(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise Invalid("duplicate key")
    return dict(pairs)


def _number(literal: str) -> float:
    """At most 40 characters, |exponent| at most 400, finite."""
    if len(literal) > 40:
        raise Invalid("long number")
    mantissa, _, exponent = literal.lower().partition("e")
    if exponent and abs(int(exponent)) > 400:
        raise Invalid("exponent")
    value = float(literal)
    if not math.isfinite(value):
        raise Invalid("infinite")
    return value


def _refuse_constant(name: str) -> None:
    raise Invalid(name)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def storable(value: Any) -> bool:
    """No NUL and no lone surrogate in any key or string (PostgreSQL's jsonb)."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(v) for v in value)
    return True


def valid_fields(payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    event_type, call_id = payload.get("eventType"), payload.get("callId")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        return False
    if call_id is not None and not (isinstance(call_id, str) and CALL_ID.fullmatch(call_id)):
        return False
    if event_type in STATUS_EVENTS and call_id is None:
        return False
    cause = payload.get("cause")
    if cause is not None and not (
        isinstance(cause, str) and CAUSE.fullmatch(cause.strip().upper())
    ):
        return False
    when = payload.get("time")
    # Any string up to 64 characters: one the workers cannot read falls back to the
    # time received (a carrier's new format must not get every callback refused).
    if when is not None and not (isinstance(when, str) and len(when) <= 64):
        return False
    tag = payload.get("tag")
    return (tag is None or (isinstance(tag, str) and len(tag) <= 256)) and storable(payload)


def valid_body(body: bytes) -> bool:
    """Whether a POSTed body is an event the receiver must take."""
    if not body or len(body) > MAX_BODY:
        return False
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass").removeprefix("\ufeff")
        payload = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError, Invalid):
        return False
    return depth(payload) <= MAX_DEPTH and valid_fields(payload)


QUERY_SAFE = frozenset(range(0x21, 0x7F)) - {ord("#")}


def valid_query(query: bytes) -> bool:
    """Whether a GET callback's query string is an event the receiver must take."""
    if not query or not set(query) <= QUERY_SAFE:
        return False  # empty, or bytes a request line may not carry
    try:
        pairs = parse_qsl(query.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return False
    if query.count(b"&") + 1 > 40:  # as parse_qsl counts fields: every separator
        return False
    payload: dict[str, str] = {}
    for name, value in pairs:
        payload.setdefault(name, value)
    for name in ("attempt", "campaign"):  # a gather's identity, as the dialer writes it
        if name in payload and not ROW_ID.fullmatch(payload[name]):
            return False
    return valid_fields(payload)


# ------------------------------------------------------------------ what is generated


@dataclass(frozen=True)
class Case:
    kind: str
    method: bytes
    target: bytes  # path and query
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    valid: bool  # by the rules above
    header_may_be_refused: bool = False  # a random header value the HTTP parser may refuse
    detail: str = ""  # for the statistics

    def request(self) -> bytes:
        lines = [self.method + b" " + self.target + b" HTTP/1.1", b"Host: x"]
        lines += [name + b": " + value for name, value in self.headers]
        if self.method == b"POST":
            lines.append(b"Content-Length: %d" % len(self.body))
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


VALID_EVENT: dict[str, Any] = {
    "eventType": "hangup",
    "from": "+15551230000",
    "to": "+15551239999",
    "callId": "c-fuzz",
    "callUri": "https://api.example/v1/users/u-1/calls/c-fuzz",
    "cause": "NORMAL_CLEARING",
    "time": "2026-11-27T10:00:00.000Z",
    "tag": '{"attempt":1,"campaign":1}',
}

# Digits of every script, which str.isdigit takes and int() may not ("²").
digits = st.text(st.characters(categories=["Nd", "No"]).filter(str.isdigit), min_size=1, max_size=4)
row_ids = st.from_regex(r"[0-9]{1,25}", fullmatch=True) | digits
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**45), max_value=10**45)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["hangup", "answer", "c-1", "USER_BUSY", "2026-11-27T10:00:00Z", ""]),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(["eventType", "callId", "cause", "time", "tag", "callState", "x"])
valid_events = st.fixed_dictionaries(
    {
        "eventType": st.sampled_from(["answer", "hangup", "timeout", "speak", "gather", "dtmf"]),
        "callId": st.from_regex(r"[A-Za-z0-9_.:-]{1,80}", fullmatch=True),
    },
    optional={
        "cause": st.sampled_from(["USER_BUSY", "no_answer", " NORMAL_CLEARING "]),
        "time": st.sampled_from(["2026-11-27T10:00:00.000Z", "2026-11-27T10:00:00+02:00"]),
        "tag": st.text(max_size=40).filter(lambda t: storable(t)),
        "digits": st.from_regex(r"[0-9#*]{0,10}", fullmatch=True),
    },
)


def post_case(kind: str, body: bytes, **extra: Any) -> Case:
    headers = ((b"Authorization", AUTH), (b"Content-Type", b"application/json"))
    return Case(kind, b"POST", PATH.encode(), headers, body, valid_body(body), **extra)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    """A valid event with a field replaced or removed, then maybe its bytes damaged."""
    payload = dict(VALID_EVENT)
    name = draw(field_names)
    if draw(st.booleans()):
        payload[name] = draw(json_values)
    else:
        payload.pop(name, None)
    body = dumps(payload)
    damage = draw(st.sampled_from(["none", "cut", "flip", "splice"]))
    if damage != "none" and body:
        at = draw(st.integers(0, len(body) - 1))
        if damage == "cut":
            body = body[:at]
        elif damage == "flip":
            body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
        else:
            body = body[:at] + draw(st.binary(min_size=1, max_size=20)) + body[at:]
    return post_case("mutated event", body, detail=damage)


@st.composite
def query_case(draw: st.DrawFn) -> Case:
    """A GET callback: a valid event's fields mixed with random ones, percent-encoded
    bytes of every value, or raw characters a URL may hold."""
    fields = dict(draw(valid_events)) if draw(st.booleans()) else {}
    if draw(st.booleans()):  # a gather's result: its identity on the URL, no tag
        fields.pop("tag", None)
        fields["attempt"], fields["campaign"] = draw(st.tuples(row_ids, row_ids))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(field_names | st.sampled_from(["attempt", "campaign"]) | st.text(max_size=8))
        fields[name] = draw(st.text(max_size=20) | digits)
    parts = [quote(k, safe="") + "=" + quote(v, safe="") for k, v in fields.items()]
    query = "&".join(parts).encode()
    if draw(st.booleans()):
        raw = draw(st.binary(max_size=30))
        query += b"&x=" + "".join(f"%{b:02X}" for b in raw).encode()  # any byte, escaped
    if draw(st.booleans()):
        query += b"&" + bytes(draw(st.lists(st.sampled_from(sorted(QUERY_SAFE)), max_size=30)))
    headers = ((b"Authorization", AUTH),)
    target = PATH.encode() + (b"?" + query if query else b"")
    return Case("query", b"GET", target, headers, b"", valid_query(query))


@st.composite
def header_case(draw: st.DrawFn) -> Case:
    """A valid event with random bytes (no CR or LF) in a header value: the HTTP parser
    may refuse the request (400), else the event is taken."""
    scheme = draw(st.sampled_from([b"", b"Basic ", b"Bearer "]))
    value = scheme + draw(
        st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)
    )
    which = draw(st.sampled_from([b"X-Fuzz", b"Authorization", b"Content-Type", b"Accept"]))
    headers = [(b"Authorization", AUTH), (b"Content-Type", b"application/json")]
    headers = [(n, v) for n, v in headers if n != which] + [(which, value)]
    body = dumps(VALID_EVENT)
    valid = which != b"Authorization" or value == AUTH
    return Case("header", b"POST", PATH.encode(), tuple(headers), body, valid, True, which.decode())


cases = st.one_of(
    st.binary(max_size=2048).map(lambda b: post_case("random bytes", b)),
    json_values.map(lambda v: post_case("random JSON", dumps(v))),
    mutated(),
    valid_events.map(lambda e: post_case("valid event", dumps(e))),
    query_case(),
    header_case(),
)

# ------------------------------------------------------------------ the receiver


@dataclass
class Fuzzed:
    url: tuple[str, int]
    r: redis.Redis
    supervisor: int
    pid: int
    rss_kib: int
    tally: Counter[tuple[str, int]]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def exchange(address: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(request)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


@pytest.fixture(scope="module")
def fuzzed(redis_server: RedisServer) -> Iterator[Fuzzed]:
    url_ = fresh_redis(redis_server.port, 7)
    r = redis.Redis.from_url(url_)
    port = free_port()
    env = {**os.environ, "DIALER_REDIS_URL": url_, "DIALER_CALLBACK_SECRET": SECRET}
    proc = subprocess.Popen(receiver_command(port, 1), env=env)
    try:
        wait_for_port(port, 20)
        address = ("127.0.0.1", port)
        warm = post_case("warm-up", dumps(VALID_EVENT))
        for _ in range(50):  # the first requests' allocations are not growth
            assert exchange(address, warm.request())[0] == 200
        [pid] = server_processes(proc.pid)
        yield Fuzzed(address, r, proc.pid, pid, rss_kib(pid), Counter())
    finally:
        proc.terminate()
        proc.wait(10)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases)
def test_garbage_gets_4xx_valid_events_2xx_and_the_stream_only_those(fuzzed, case) -> None:
    before = fuzzed.r.xlen(eventstream.STREAM)
    status, body = exchange(fuzzed.url, case.request())
    after = fuzzed.r.xlen(eventstream.STREAM)
    fuzzed.tally[(case.kind, status)] += 1
    event(f"{case.kind} {case.detail}: {status}".replace("  ", " "))
    assert status < 500, (status, body[:200])
    if case.header_may_be_refused and status == 400:
        assert body == b"Invalid HTTP request received.", body[:200]
    elif case.valid:
        assert 200 <= status < 300, (status, body[:200])
    else:
        assert 400 <= status < 500, (status, body[:200])
    assert after - before == (1 if 200 <= status < 300 else 0), (status, before, after)
    assert SECRET.encode() not in body


def test_after_the_garbage_the_same_process_serves_in_bounded_memory(fuzzed) -> None:
    """Run after the fuzz test (file order): none of it killed the server process (its
    supervisor would have replaced it), and it holds no more than a bound of memory."""
    assert server_processes(fuzzed.supervisor) == [fuzzed.pid]
    before = fuzzed.r.xlen(eventstream.STREAM)
    assert exchange(fuzzed.url, post_case("after", dumps(VALID_EVENT)).request())[0] == 200
    assert fuzzed.r.xlen(eventstream.STREAM) == before + 1
    grown = rss_kib(fuzzed.pid) - fuzzed.rss_kib
    total = sum(fuzzed.tally.values())
    print(f"\n{total} fuzz cases; RSS grew {grown} KiB; answers by kind:")
    for (kind, status), n in sorted(fuzzed.tally.items()):
        print(f"  {kind:15} {status}: {n}")
    assert grown < RSS_GROWTH_KIB, f"RSS grew {grown} KiB"
