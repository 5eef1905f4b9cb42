"""The carrier simulator, over real HTTP on 127.0.0.1.

Each test starts a Simulator in-process on a free port and, where callbacks matter, a small
stdlib HTTP receiver that records what the simulator posts to it.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from dialer.dev.simulator import SimConfig, Simulator

AUTH = ("sim-token", "sim-secret")
FROM = "+19195551212"
CALL_ID = re.compile(r"^c-[a-z0-9]{25}$")
EVENT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FAST = {"answer_delay": 0.01, "talk_time": 0.01, "no_answer_delay": 0.01}


def wait_until(predicate: Callable[[], Any], timeout: float = 3.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


class Receiver:
    """Records every callback; answers 500 on paths in ``failing`` and to the first
    ``fail_first`` requests, 200 otherwise."""

    def __init__(self) -> None:
        self.hits: list[dict] = []
        self.lock = threading.Lock()
        self.failing: set[str] = set()
        self.fail_first = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with receiver.lock:
                    failed = path in receiver.failing or receiver.fail_first > 0
                    receiver.fail_first -= 1
                    receiver.hits.append(
                        {
                            "method": self.command,
                            "path": path,
                            "headers": dict(self.headers),
                            "json": json.loads(raw) if raw else None,
                            "status": 500 if failed else 200,
                        }
                    )
                self.send_response(500 if failed else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = _handle  # noqa: N815
            do_GET = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/cb", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def accepted(self, call_id: str | None = None, path: str | None = None) -> list[dict]:
        """Bodies of the callbacks answered 200, in arrival order."""
        with self.lock:
            return [
                h["json"]
                for h in self.hits
                if h["status"] == 200
                and (path is None or h["path"] == path)
                and (call_id is None or h["json"]["callId"] == call_id)
            ]

    def names(self, call_id: str) -> list[str]:
        return [e["eventType"] for e in self.accepted(call_id)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def make(**config: Any) -> Simulator:
        sim = Simulator(SimConfig(**config))
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim(**FAST)


def calls_url(sim: Simulator, user: str = "u-sim") -> str:
    return f"{sim.url}/v1/users/{user}/calls"


def create(sim: Simulator, **body: Any) -> requests.Response:
    body.setdefault("from", FROM)
    body.setdefault("to", "+19195550100")
    return requests.post(calls_url(sim), json=body, auth=AUTH, timeout=5)


def created_id(response: requests.Response) -> str:
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def assert_error(response: requests.Response, status: int, category: str, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert (body["category"], body["code"]) == (category, code), body
    assert isinstance(body["message"], str) and isinstance(body["details"], list)
    return body


# -- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "user"),
    [(None, "u-sim"), (("sim-token", "wrong"), "u-sim"), (AUTH, "u-other")],
    ids=["no-credentials", "wrong-secret", "wrong-user-id"],
)
def test_auth_failure_is_401_user_access_denied(sim: Simulator, auth: Any, user: str) -> None:
    body = {"from": FROM, "to": "+19195550100"}
    response = requests.post(calls_url(sim, user), json=body, auth=auth, timeout=5)
    assert_error(response, 401, "authentication", "user-access-denied")
    listing = requests.get(calls_url(sim, user), auth=auth, timeout=5)
    assert_error(listing, 401, "authentication", "user-access-denied")
    assert sim.calls() == []


def test_from_not_on_account_is_401_number_access_denied(make_sim: Callable) -> None:
    sim = make_sim(numbers=[FROM], **FAST)
    body = assert_error(
        create(sim, **{"from": "+19195559999"}), 401, "authentication", "number-access-denied"
    )
    assert body["details"][0]["name"] == "from"
    assert create(sim).status_code == 201


# -- validation -------------------------------------------------------------------------

VALIDATION_CASES = [
    ({"from": None}, "from"),
    ({"from": "19195551212"}, "from"),
    ({"from": "+0123"}, "from"),
    ({"to": "555-0100"}, "to"),
    ({"to": "sip:nohost"}, "to"),
    ({"callTimeout": 0}, "callTimeout"),
    ({"callTimeout": 301}, "callTimeout"),
    ({"callTimeout": "60"}, "callTimeout"),
    ({"callTimeout": True}, "callTimeout"),
    ({"callbackTimeout": 10001}, "callbackTimeout"),
    ({"callbackHttpMethod": "PUT"}, "callbackHttpMethod"),
    ({"recordingFileFormat": "ogg"}, "recordingFileFormat"),
    ({"recordingEnabled": "true"}, "recordingEnabled"),
    ({"transcriptionEnabled": 1}, "transcriptionEnabled"),
    ({"sipHeaders": {f"X-H{i}": "v" for i in range(6)}}, "sipHeaders"),
    ({"sipHeaders": {"Foo": "v"}}, "sipHeaders"),
    ({"sipHeaders": {"X-Long": "v" * 257}}, "sipHeaders"),
    ({"bogusField": 1}, "bogusField"),
    ({"tag": None}, "tag"),
]


@pytest.mark.parametrize(
    ("change", "field"), VALIDATION_CASES, ids=[c[1] for c in VALIDATION_CASES]
)
def test_validation_error_names_the_field(sim: Simulator, change: dict, field: str) -> None:
    body = {"from": FROM, "to": "+19195550100", **change}
    response = requests.post(calls_url(sim), json=body, auth=AUTH, timeout=5)
    error = assert_error(response, 400, "bad-request", "validation-error")
    assert field in error["message"]
    assert error["details"][0]["name"] == field
    assert sim.calls() == []


@pytest.mark.parametrize("missing", ["from", "to"])
def test_missing_required_field_is_named(sim: Simulator, missing: str) -> None:
    body = {"from": FROM, "to": "+19195550100"}
    del body[missing]
    response = requests.post(calls_url(sim), json=body, auth=AUTH, timeout=5)
    error = assert_error(response, 400, "bad-request", "validation-error")
    assert error["details"][0]["name"] == missing


def test_body_that_is_not_an_object_is_a_validation_error(sim: Simulator) -> None:
    response = requests.post(calls_url(sim), data="[1]", auth=AUTH, timeout=5)
    assert_error(response, 400, "bad-request", "validation-error")


@pytest.mark.parametrize("field", ["callbackUrl", "fallbackUrl"])
def test_non_http_callback_url_is_callback_invalid_url(sim: Simulator, field: str) -> None:
    error = assert_error(
        create(sim, **{field: "ftp://example.com/cb"}), 400, "bad-request", "callback-invalid-url"
    )
    assert error["details"][0]["name"] == field


def test_long_tag_sip_uri_and_sip_headers_are_accepted(sim: Simulator) -> None:
    tag = json.dumps({"attempt": 1, "pad": "x" * 1000})
    response = create(sim, to="sip:someone@example.com", tag=tag, sipHeaders={"X-Campaign": "7"})
    call_id = created_id(response)
    assert sim.calls()[0]["tag"] == tag
    assert sim.calls()[0]["to"] == "sip:someone@example.com"
    assert requests.get(f"{calls_url(sim)}/{call_id}", auth=AUTH, timeout=5).json()["tag"] == tag


# -- create -----------------------------------------------------------------------------


def test_create_answers_201_with_alternating_relative_and_absolute_location(
    sim: Simulator,
) -> None:
    first, second = create(sim), create(sim)
    for response in (first, second):
        assert response.status_code == 201
        assert response.content == b""
        assert response.raw.version == 11  # HTTP/1.1, keep-alive
        assert CALL_ID.match(response.headers["Location"].rsplit("/", 1)[1])
    assert re.match(r"^/v1/users/u-sim/calls/c-[a-z0-9]{25}$", first.headers["Location"])
    assert second.headers["Location"].startswith(f"{sim.url}/v1/users/u-sim/calls/c-")
    assert [c["id"] for c in sim.calls()] == [created_id(first), created_id(second)]


@pytest.mark.parametrize("style", ["relative", "absolute"])
def test_location_style_can_be_fixed(make_sim: Callable, style: str) -> None:
    sim = make_sim(location_style=style, **FAST)
    locations = [create(sim).headers["Location"] for _ in range(2)]
    assert all(loc.startswith("http://") == (style == "absolute") for loc in locations)


def test_account_rate_limit_is_403_and_creates_nothing(make_sim: Callable) -> None:
    sim = make_sim(rate=1.0, rate_window=3.0, **FAST)  # 3 calls per 3 s window
    assert [create(sim).status_code for _ in range(3)] == [201, 201, 201]
    assert_error(create(sim), 403, "limit", "call-rate-limit")
    assert len(sim.calls()) == 3


def test_number_rate_limit_applies_per_from_number(make_sim: Callable) -> None:
    sim = make_sim(number_rate=1.0, rate_window=2.0, **FAST)
    assert [create(sim).status_code for _ in range(2)] == [201, 201]
    assert_error(create(sim), 403, "limit", "call-rate-limit")
    assert create(sim, **{"from": "+19195551313"}).status_code == 201
    assert len(sim.calls()) == 3


def test_429_carries_reset_time_in_milliseconds(make_sim: Callable) -> None:
    sim = make_sim(fault_429=1.0, **FAST)
    before_ms = time.time() * 1000
    response = create(sim)
    body = assert_error(response, 429, "too-many-requests", "too-many-requests")
    reset = int(response.headers["X-RateLimit-Reset"])
    assert before_ms <= reset <= before_ms + 60_000, "reset must be epoch milliseconds"
    assert body["details"] == [{"name": "rateLimitResetTime", "value": str(reset)}]
    assert sim.calls() == []


@pytest.mark.parametrize(
    ("fault", "status", "category", "code"),
    [
        ("fault_500", 500, "internal-server-error", "internal-error"),
        ("fault_503", 503, "unavailable", "call-unavailable"),
        ("fault_rate_limit", 403, "limit", "call-rate-limit"),
    ],
)
def test_injected_faults_create_nothing(
    make_sim: Callable, fault: str, status: int, category: str, code: str
) -> None:
    sim = make_sim(**{fault: 1.0}, **FAST)
    assert_error(create(sim), status, category, code)
    assert sim.calls() == []


def test_credit_runs_out_with_403_credit(make_sim: Callable) -> None:
    sim = make_sim(credit=1, **FAST)
    assert create(sim).status_code == 201
    assert_error(create(sim), 403, "credit", "insufficient-available-balance")
    assert len(sim.calls()) == 1


def test_refused_destination_is_403_forbidden(sim: Simulator) -> None:
    assert_error(create(sim, to="+15550001234"), 403, "forbidden", "invalid-call-to-number")
    assert sim.calls() == []


def test_ambiguous_create_makes_the_call_but_never_answers(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(fault_ambiguous=1.0, ambiguous_hold=3.0, **FAST)
    body = {"from": FROM, "to": "+19195550100", "callbackUrl": receiver.url()}
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(calls_url(sim), json=body, auth=AUTH, timeout=(1, 0.3))
    [record] = sim.calls()
    assert record["ambiguous"] is True
    wait_until(lambda: receiver.names(record["id"]) == ["answer", "hangup"], what="callbacks")
    started = time.monotonic()
    sim.stop()  # must not wait out the hold
    assert time.monotonic() - started < 2.0


# -- read, list, hang up ----------------------------------------------------------------


def test_get_call_shows_its_fields_without_callback_credentials(
    sim: Simulator, receiver: Receiver
) -> None:
    callback = receiver.url("/cb", "user:pw@")
    call_id = created_id(
        create(sim, callbackUrl=callback, fallbackUrl=receiver.url("/fb"), tag="t1")
    )
    wait_until(lambda: receiver.names(call_id) == ["answer", "hangup"], what="callbacks")
    call = requests.get(f"{calls_url(sim)}/{call_id}", auth=AUTH, timeout=5).json()
    assert call["id"] == call_id and call["direction"] == "out"
    assert (call["from"], call["to"], call["tag"]) == (FROM, "+19195550100", "t1")
    assert call["state"] == "completed"
    assert call["callbackUrl"] == receiver.url("/cb")
    assert call["fallbackUrl"] == receiver.url("/fb")
    assert call["callTimeout"] == 60 and call["callbackHttpMethod"] == "POST"
    assert call["startTime"] <= call["activeTime"] <= call["endTime"]
    assert call["chargeableDuration"] == 60
    assert call["events"] == f"{sim.url}/v1/users/u-sim/calls/{call_id}/events"
    assert sim.calls()[0]["callback_url"] == receiver.url("/cb")


def test_unknown_call_is_404_call_not_found(sim: Simulator) -> None:
    response = requests.get(f"{calls_url(sim)}/c-nosuchcall", auth=AUTH, timeout=5)
    assert_error(response, 404, "not-found", "call-not-found")


def test_list_pages_with_link_header_newest_first(sim: Simulator) -> None:
    ids = [created_id(create(sim, to=f"+1919555010{i}")) for i in range(5)]
    created_id(create(sim, to="+19195550100", **{"from": "+19195551313"}))
    seen, url = [], f"{calls_url(sim)}?from={FROM.replace('+', '%2B')}&size=2"
    pages = 0
    while url:
        response = requests.get(url, auth=AUTH, timeout=5)
        assert response.status_code == 200
        assert len(response.json()) <= 2
        seen += [c["id"] for c in response.json()]
        pages += 1
        url = response.links.get("next", {}).get("url")
    assert pages == 3
    assert seen == ids[::-1]
    asc = requests.get(
        calls_url(sim), params={"from": FROM, "sortOrder": "asc"}, auth=AUTH, timeout=5
    )
    assert [c["id"] for c in asc.json()] == ids and "Link" not in asc.headers
    by_to = requests.get(calls_url(sim), params={"to": "+19195550102"}, auth=AUTH, timeout=5)
    assert [c["id"] for c in by_to.json()] == [ids[2]]


def test_list_size_above_1000_is_rejected(sim: Simulator) -> None:
    response = requests.get(calls_url(sim), params={"size": 1001}, auth=AUTH, timeout=5)
    assert assert_error(response, 400, "bad-request", "validation-error")["details"][0] == {
        "name": "size",
        "value": "1001",
    }


def test_hang_up_sends_normal_clearing_once(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(answer_delay=0.01, talk_time=30.0)
    call_id = created_id(create(sim, callbackUrl=receiver.url()))
    wait_until(lambda: receiver.names(call_id) == ["answer"], what="answer")
    url = f"{calls_url(sim)}/{call_id}"
    assert_error(
        requests.post(url, json={"state": "active"}, auth=AUTH, timeout=5),
        400,
        "bad-request",
        "validation-error",
    )
    assert requests.post(url, json={"state": "completed"}, auth=AUTH, timeout=5).status_code == 200
    hangup = wait_until(lambda: receiver.accepted(call_id)[1:], what="hangup")[0]
    assert (hangup["eventType"], hangup["cause"]) == ("hangup", "NORMAL_CLEARING")
    assert requests.post(url, json={"state": "completed"}, auth=AUTH, timeout=5).status_code == 200
    events = requests.get(f"{url}/events", auth=AUTH, timeout=5).json()
    assert [e["name"] for e in events] == ["answer", "hangup"]
    assert events[1]["data"]["cause"] == "NORMAL_CLEARING" and events[0]["id"] != events[1]["id"]
    assert requests.get(url, auth=AUTH, timeout=5).json()["state"] == "completed"
    assert sim.calls()[0]["events"] == ["answer", "hangup"]


# -- callbacks --------------------------------------------------------------------------

OUTCOME_CASES = [
    ("answered", ["answer", "hangup"], "NORMAL_CLEARING", "completed"),
    ("busy", ["hangup"], "USER_BUSY", "completed"),
    ("no-answer", ["timeout", "hangup"], "NO_ANSWER", "completed"),
    ("rejected", ["hangup"], "CALL_REJECTED", "rejected"),
    ("congestion", ["hangup"], "NORMAL_CIRCUIT_CONGESTION", "completed"),
    ("unallocated", ["hangup"], "UNALLOCATED_NUMBER", "completed"),
]


@pytest.mark.parametrize(("outcome", "names", "cause", "state"), OUTCOME_CASES)
def test_callbacks_follow_the_outcome(
    make_sim: Callable,
    receiver: Receiver,
    outcome: str,
    names: list[str],
    cause: str,
    state: str,
) -> None:
    sim = make_sim(outcomes={outcome: 1.0}, **FAST)
    call_id = created_id(create(sim, callbackUrl=receiver.url(), tag="T"))
    wait_until(lambda: len(receiver.accepted(call_id)) == len(names), what=outcome)
    events = receiver.accepted(call_id)
    assert [e["eventType"] for e in events] == names
    for event in events:
        assert (event["from"], event["to"], event["callId"]) == (FROM, "+19195550100", call_id)
        assert event["callUri"] == f"{sim.url}/v1/users/u-sim/calls/{call_id}"
        assert EVENT_TIME.match(event["time"]), event["time"]
        assert event["tag"] == "T"
    assert (events[-1]["cause"], events[-1]["callState"]) == (cause, state)
    if outcome == "answered":
        assert events[0]["callState"] == "active"
    assert {h["headers"]["Content-Type"] for h in receiver.hits} == {
        "application/json; charset=utf-8"
    }
    assert sim.calls()[0]["outcome"] == outcome
    assert sim.calls()[0]["state"] == state


def test_no_answer_waits_for_call_timeout_by_default(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(outcomes={"no-answer": 1.0}, answer_delay=0.01)
    call_id = created_id(create(sim, callbackUrl=receiver.url(), callTimeout=1))
    time.sleep(0.5)
    assert receiver.accepted(call_id) == []
    wait_until(lambda: receiver.names(call_id) == ["timeout", "hangup"], what="timeout")


def test_silent_call_sends_no_callback(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(outcome_by_number={"+19195550666": ["silent"]}, **FAST)
    silent = created_id(create(sim, to="+19195550666", callbackUrl=receiver.url()))
    loud = created_id(create(sim, callbackUrl=receiver.url()))
    wait_until(lambda: receiver.names(loud) == ["answer", "hangup"], what="loud call")
    url = f"{calls_url(sim)}/{silent}"
    assert requests.get(url, auth=AUTH, timeout=5).json()["state"] == "started"
    assert requests.post(url, json={"state": "completed"}, auth=AUTH, timeout=5).status_code == 200
    assert requests.get(url, auth=AUTH, timeout=5).json()["state"] == "completed"
    assert [c["events"] for c in sim.calls() if c["id"] == silent] == [[]]
    assert all(h["json"]["callId"] != silent for h in receiver.hits)


def test_tag_only_on_answer_when_configured(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(tag_on_all_events=False, **FAST)
    call_id = created_id(create(sim, callbackUrl=receiver.url(), tag="T"))
    wait_until(lambda: len(receiver.accepted(call_id)) == 2, what="2 callbacks")
    answer, hangup = receiver.accepted(call_id)
    assert answer["tag"] == "T"
    assert "tag" not in hangup


def test_userinfo_in_callback_url_becomes_basic_auth(sim: Simulator, receiver: Receiver) -> None:
    call_id = created_id(create(sim, callbackUrl=receiver.url("/cb", "cbuser:cb%40pass@")))
    wait_until(lambda: receiver.names(call_id) == ["answer", "hangup"], what="callbacks")
    expected = "Basic " + base64.b64encode(b"cbuser:cb@pass").decode()
    assert {h["headers"].get("Authorization") for h in receiver.hits} == {expected}


def test_failing_callback_url_falls_back(sim: Simulator, receiver: Receiver) -> None:
    receiver.failing.add("/broken")
    call_id = created_id(
        create(sim, callbackUrl=receiver.url("/broken"), fallbackUrl=receiver.url("/fallback"))
    )
    wait_until(lambda: len(receiver.accepted(call_id, "/fallback")) == 2, what="fallback")
    assert [e["eventType"] for e in receiver.accepted(call_id, "/fallback")] == [
        "answer",
        "hangup",
    ]
    assert [h["path"] for h in receiver.hits] == ["/broken", "/fallback"] * 2
    assert recorded(sim, 2) == ["answer", "hangup"]


def test_unreachable_callback_url_falls_back(sim: Simulator, receiver: Receiver) -> None:
    call_id = created_id(
        create(sim, callbackUrl="http://127.0.0.1:9/cb", fallbackUrl=receiver.url("/fallback"))
    )
    wait_until(lambda: receiver.names(call_id) == ["answer", "hangup"], what="fallback")


def test_failed_callback_is_retried_then_given_up(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(callback_retries=1, **FAST)
    receiver.fail_first = 1  # the first try fails, the retry 0.5 s later succeeds
    ok_id = created_id(create(sim, callbackUrl=receiver.url()))
    wait_until(lambda: receiver.names(ok_id) == ["answer", "hangup"], what="retried callback")
    receiver.failing.add("/dead")
    dead_id = created_id(create(sim, to="+19195550101", callbackUrl=receiver.url("/dead")))
    record = wait_until(
        lambda: [c for c in sim.calls() if c["id"] == dead_id and len(c["undelivered"]) == 2],
        timeout=4,
        what="give up",
    )[0]
    assert record["undelivered"] == ["answer", "hangup"] and record["events"] == []
    assert sum(h["path"] == "/dead" for h in receiver.hits) == 4  # 2 events x (try + 1 retry)


def recorded(sim: Simulator, n: int) -> list[str]:
    """The first call's delivered events, once the simulator has recorded ``n``: it
    records a callback after its POST returns, just after the receiver has it."""
    wait_until(lambda: len(sim.calls()[0]["events"]) >= n, what="the simulator's record")
    return sim.calls()[0]["events"]


def test_duplicate_callbacks_arrive_twice(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(duplicate_callbacks=1.0, **FAST)
    call_id = created_id(create(sim, callbackUrl=receiver.url()))
    wait_until(lambda: len(receiver.accepted(call_id)) == 4, what="4 callbacks")
    assert receiver.names(call_id) == ["answer", "answer", "hangup", "hangup"]
    assert recorded(sim, 4) == ["answer", "answer", "hangup", "hangup"]


def test_reordered_callbacks_arrive_out_of_order(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(reorder_callbacks=1.0, **FAST)
    call_id = created_id(create(sim, callbackUrl=receiver.url()))
    wait_until(lambda: len(receiver.accepted(call_id)) == 2, what="2 callbacks")
    assert receiver.names(call_id) == ["hangup", "answer"]
    assert recorded(sim, 2) == ["hangup", "answer"]


# -- outcomes ---------------------------------------------------------------------------

MIXED = {name: 1.0 for name in ("answered", "busy", "no-answer", "rejected", "silent")}


def dial_outcomes(sim: Simulator, numbers: list[str]) -> list[str]:
    for number in numbers:
        assert create(sim, to=number).status_code == 201
    return [c["outcome"] for c in sim.calls()]


def test_outcomes_are_deterministic_by_seed(make_sim: Callable) -> None:
    numbers = [f"+1919555{i:04d}" for i in range(20)] * 2
    first = dial_outcomes(make_sim(outcomes=MIXED, seed=7, no_answer_delay=0.01), numbers)
    again = dial_outcomes(make_sim(outcomes=MIXED, seed=7, no_answer_delay=0.01), numbers)
    other = dial_outcomes(make_sim(outcomes=MIXED, seed=8, no_answer_delay=0.01), numbers)
    assert first == again
    assert first != other
    assert len(set(first)) > 2, "weights should spread the outcomes"


def test_outcome_by_number_overrides_weights_and_repeats_last(make_sim: Callable) -> None:
    sim = make_sim(outcome_by_number={"+19195550100": ["busy", "answered"]}, **FAST)
    assert dial_outcomes(sim, ["+19195550100"] * 3) == ["busy", "answered", "answered"]


# -- admin, life cycle, command line -----------------------------------------------------


def test_admin_endpoints_configure_list_and_reset(sim: Simulator) -> None:
    assert create(sim).status_code == 201
    listed = requests.get(f"{sim.url}/_sim/calls", timeout=5).json()
    assert [c["id"] for c in listed] == [c["id"] for c in sim.calls()]
    bad = requests.post(f"{sim.url}/_sim/config", json={"no_such": 1}, timeout=5)
    assert bad.status_code == 400
    ok = requests.post(f"{sim.url}/_sim/config", json={"fault_503": 1.0}, timeout=5)
    assert ok.status_code == 200
    assert_error(create(sim), 503, "unavailable", "call-unavailable")
    assert requests.post(f"{sim.url}/_sim/reset", timeout=5).status_code == 200
    assert sim.calls() == []


def test_stop_is_quick_and_leaves_no_threads(receiver: Receiver) -> None:
    before = set(threading.enumerate())
    sim = Simulator(SimConfig(talk_time=30.0, answer_delay=0.01))
    sim.start()
    session = requests.Session()  # a keep-alive connection parks a handler thread
    response = session.post(
        calls_url(sim), json={"from": FROM, "to": "+19195550100"}, auth=AUTH, timeout=5
    )
    assert response.status_code == 201
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2.0
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leaked == []
    session.close()


def test_main_serves_until_sigterm_and_never_logs_the_secret() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer.dev.simulator", "--port", "0", "--secret", "s3cr3t!"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"http://[\d.]+:\d+", line)
        assert url, line
        response = requests.post(
            f"{url.group(0)}/v1/users/u-sim/calls",
            json={"from": FROM, "to": "+19195550100"},
            auth=("sim-token", "s3cr3t!"),
            timeout=5,
        )
        assert response.status_code == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert "s3cr3t!" not in line + proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
