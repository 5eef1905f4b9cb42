"""REST call control and the non-create request limit on the carrier simulator, over real
HTTP on 127.0.0.1, with a stdlib receiver recording the callbacks it is sent."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from dialer.dev.simulator import SimConfig, Simulator

AUTH = ("sim-token", "sim-secret")
FROM, TO = "+19195551212", "+19195550100"
# The person waits 5 s in silence, so each test drives the call at its own pace.
SLOW_PERSON = {
    "answer_delay": 0.01,
    "talk_time": 5.0,
    "speech_seconds": 0.05,
    "press_delay": 0.01,
    "time_scale": 0.01,
}


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


class Receiver:
    """Records every callback (a POSTed JSON body, or a GET's query) and answers 200."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.methods: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
                with receiver.lock:
                    receiver.events.append(json.loads(raw) if raw else query)
                    receiver.methods.append(self.command)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = _handle  # noqa: N815
            do_POST = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"

    def got(self, name: str | None = None) -> list[dict]:
        with self.lock:
            return [e for e in self.events if name is None or e.get("eventType") == name]

    def names(self) -> list[str]:
        return [e["eventType"] for e in self.got()]

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
        sim = Simulator(SimConfig(**{**SLOW_PERSON, **config}))
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


class Calls:
    """The REST API of one simulator, for one call."""

    def __init__(self, sim: Simulator, receiver: Receiver, **body: Any) -> None:
        self.sim = sim
        self.receiver = receiver
        self.base = f"{sim.url}/v1/users/u-sim/calls"
        body = {"from": FROM, "to": TO, "callbackUrl": receiver.url, **body}
        response = requests.post(self.base, json=body, auth=AUTH, timeout=5)
        assert response.status_code == 201, response.text
        self.id = response.headers["Location"].rsplit("/", 1)[1]
        self.url = f"{self.base}/{self.id}"

    def answered(self) -> Calls:
        wait_until(lambda: self.receiver.got("answer"), what="the answer")
        return self

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=body, auth=AUTH, timeout=5)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=AUTH, timeout=5)

    def hang_up(self) -> requests.Response:
        return self.post("", {"state": "completed"})

    def record(self) -> dict:
        return next(c for c in self.sim.calls() if c["id"] == self.id)

    def ended(self) -> dict:
        wait_until(lambda: "hangup" in self.record()["events"], what="the hangup")
        return self.record()


def assert_error(response: requests.Response, status: int, category: str, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["category"], body["code"]) == (category, code), body
    return body


# -- /audio -------------------------------------------------------------------------------------


def test_audio_speaks_into_an_active_call_with_speak_events(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim()
    call = Calls(sim, receiver).answered()
    response = call.post("/audio", {"sentence": "Hello Ann", "voice": "kate", "tag": "msg"})
    assert response.status_code == 200 and response.content == b""
    wait_until(lambda: len(receiver.got("speak")) == 2, what="speak started and done")
    started, done = receiver.got("speak")
    assert (started["status"], started["state"]) == ("started", "PLAYBACK_START")
    assert (done["status"], done["state"]) == ("done", "PLAYBACK_STOP")
    assert started["tag"] == done["tag"] == "msg" and started["callId"] == call.id
    assert call.post("/audio", {"fileUrl": "https://example.com/bye.mp3"}).status_code == 200
    wait_until(lambda: len(receiver.got("playback")) == 2, what="playback events")
    assert "tag" not in receiver.got("playback")[0]
    assert call.hang_up().status_code == 200
    record = call.ended()
    assert [(a["verb"], a.get("text") or a.get("url")) for a in record["audio"]] == [
        ("SpeakSentence", "Hello Ann"),
        ("PlayAudio", "https://example.com/bye.mp3"),
    ]
    assert record["audio"][0]["voice"] == "kate"
    assert record["hung_up_by"] == "dialer-rest" and record["control_requests"] == 3
    assert record["first_audio_ms"] > 0 and record["method"] == "POST"


def test_audio_on_a_call_that_is_not_active_is_403(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(answer_delay=3.0)
    call = Calls(sim, receiver)
    assert_error(
        call.post("/audio", {"sentence": "too early"}), 403, "forbidden", "call-audio-invalid-state"
    )
    assert call.hang_up().status_code == 200
    assert_error(
        call.post("/audio", {"sentence": "too late"}), 403, "forbidden", "call-audio-invalid-state"
    )
    assert call.record()["audio"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"sentence": "a", "fileUrl": "https://example.com/a.wav"},
        {},
        {"sentence": "x" * 1001},
        {"sentence": "a", "gender": "robot"},
        {"sentence": "a", "volume": 9},
        {"sentence": None},
        {"sentence": "a", "speed": 2},
        {"fileUrl": "ftp://example.com/a.wav"},
    ],
    ids=["both", "neither", "too-long", "gender", "volume", "null", "unknown", "not-http"],
)
def test_bad_audio_bodies_are_400(make_sim: Callable, receiver: Receiver, body: dict) -> None:
    sim = make_sim()
    call = Calls(sim, receiver).answered()
    assert_error(call.post("/audio", body), 400, "bad-request", "validation-error")
    call.hang_up()


def test_a_new_audio_cuts_the_one_playing_and_an_empty_one_stops_it(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(speech_seconds=1.0)
    call = Calls(sim, receiver).answered()
    call.post("/audio", {"sentence": "first"})
    call.post("/audio", {"sentence": "second"})
    call.post("/audio", {"sentence": ""})
    wait_until(lambda: len(receiver.got("speak")) == 4, what="two started, two done")
    assert [e["status"] for e in receiver.got("speak")] == ["started", "done", "started", "done"]
    call.hang_up()


# -- /gather ------------------------------------------------------------------------------------


GATHER = {
    "maxDigits": "1",  # the docs' samples send numbers as strings
    "interDigitTimeout": 5,
    "tag": "g1",
    "prompt": {"sentence": "Press 1 to confirm", "locale": "en_US"},
}


def test_gather_is_201_with_its_location_then_a_gather_event(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="1=1")
    call = Calls(sim, receiver).answered()
    response = call.post("/gather", GATHER)
    assert response.status_code == 201, response.text
    location = response.headers["Location"]
    assert re.match(rf"^{re.escape(call.url)}/gather/g-[a-z0-9]{{25}}$", location), location
    gather_id = location.rsplit("/", 1)[1]
    [event] = wait_until(lambda: receiver.got("gather"), what="the gather event")
    assert (event["state"], event["digits"], event["reason"]) == ("completed", "1", "max-digits")
    assert (event["gatherId"], event["tag"], event["callId"]) == (gather_id, "g1", call.id)
    read = call.get(f"/gather/{gather_id}")
    assert read.status_code == 200
    body = read.json()
    assert (body["id"], body["state"], body["reason"], body["digits"]) == (
        gather_id,
        "completed",
        "max-digits",
        "1",
    )
    assert body["call"] == call.url and body["createdTime"] <= body["completedTime"]
    assert_error(call.get("/gather/g-nosuch"), 404, "not-found", "resource-not-found")
    call.hang_up()
    record = call.ended()
    assert record["pressed"] == "1"
    assert record["gathers"] == [
        {"gatherId": gather_id, "digits": "1", "reason": "max-digits", "tag": "g1"}
    ]
    assert record["audio"][0]["text"] == "Press 1 to confirm" and record["audio"][0]["prompt"]
    assert record["control_requests"] == 4  # gather, two reads, hang up


def test_a_second_gather_while_one_runs_is_409(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(people="wait=1", time_scale=1.0)  # waits the 5 s out
    call = Calls(sim, receiver).answered()
    first = call.post("/gather", GATHER)
    assert first.status_code == 201
    assert_error(call.post("/gather", GATHER), 409, "conflict", "call-duplicate-gather-error")
    gather_id = first.headers["Location"].rsplit("/", 1)[1]
    assert call.get(f"/gather/{gather_id}").json()["state"] == "started"
    call.hang_up()
    # Hanging up ends the gather: its event says hung-up, before the hangup.
    record = call.ended()
    assert receiver.names()[-2:] == ["gather", "hangup"]
    assert receiver.got("gather")[0]["reason"] == "hung-up"
    assert record["hung_up_by"] == "dialer-rest"


def test_gather_on_a_call_that_is_not_active_is_403(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim()
    call = Calls(sim, receiver).answered()
    call.hang_up()
    assert_error(call.post("/gather", GATHER), 403, "forbidden", "call-invalid-state")


@pytest.mark.parametrize(
    "body",
    [
        {"maxDigits": 31},
        {"maxDigits": "two"},
        {"interDigitTimeout": 31},
        {"terminatingDigits": "x"},
        {"prompt": {"sentence": "a", "fileUrl": "https://example.com/a.wav"}},
        {"bogus": 1},
    ],
    ids=["max-digits", "not-a-number", "timeout", "terminating", "prompt", "unknown"],
)
def test_bad_gather_bodies_are_400(make_sim: Callable, receiver: Receiver, body: dict) -> None:
    sim = make_sim()
    call = Calls(sim, receiver).answered()
    assert_error(call.post("/gather", body), 400, "bad-request", "validation-error")
    call.hang_up()


def test_a_person_who_hangs_up_mid_prompt_sends_hung_up_then_hangup(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="hangup=1")
    call = Calls(sim, receiver).answered()
    assert call.post("/gather", GATHER).status_code == 201
    record = call.ended()
    assert receiver.names() == ["answer", "gather", "hangup"]
    assert receiver.got("gather")[0]["reason"] == "hung-up"
    assert record["hung_up_by"] == "person"
    assert_error(
        call.post("/audio", {"sentence": "bye"}), 403, "forbidden", "call-audio-invalid-state"
    )


def test_the_person_hangs_up_talk_time_after_the_script_goes_quiet(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="2=1")
    call = Calls(sim, receiver).answered()
    sim.configure(talk_time=0.3)
    assert call.post("/gather", GATHER).status_code == 201
    wait_until(lambda: receiver.got("gather"), what="the gather")
    quiet = time.monotonic()
    record = call.ended()
    assert time.monotonic() - quiet >= 0.25
    assert record["hung_up_by"] == "person" and record["gathers"][0]["digits"] == "2"


def test_a_get_call_gets_its_rest_gather_event_as_a_get(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="9=1")
    call = Calls(sim, receiver, callbackHttpMethod="GET").answered()
    assert call.post("/gather", GATHER).status_code == 201
    [event] = wait_until(lambda: receiver.got("gather"), what="the gather")
    assert event["digits"] == "9"
    assert receiver.methods == ["GET", "GET"]
    call.hang_up()


# -- change the call ------------------------------------------------------------------------


def test_transfer_is_200_with_the_new_leg_and_the_call_stays_up(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim()
    call = Calls(sim, receiver).answered()
    sim.configure(talk_time=0.3)  # the 5 s wait armed at the answer gives way to this
    body = {
        "state": "transferring",
        "transferTo": "+19195550199",
        "whisperAudio": {"sentence": "A caller from the campaign"},
    }
    response = call.post("", body)
    assert response.status_code == 200, response.text
    assert re.search(r"/v1/users/u-sim/calls/c-[a-z0-9]{25}$", response.headers["Location"])
    record = call.ended()
    assert record["transferred_to"] == "+19195550199"
    assert record["whisper"] == [{"verb": "SpeakSentence", "text": "A caller from the campaign"}]
    assert record["hung_up_by"] == "person"
    assert_error(call.post("", body), 403, "forbidden", "call-invalid-state")


def test_transfer_to_a_bad_number_is_400(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim()
    call = Calls(sim, receiver).answered()
    response = call.post("", {"state": "transferring", "transferTo": "555"})
    assert_error(response, 400, "bad-request", "validation-error")
    call.hang_up()


# -- the request limit ----------------------------------------------------------------------


def test_requests_over_the_rate_are_429_with_a_reset_in_epoch_ms(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(request_rate=2.0)
    call = Calls(sim, receiver).answered()
    assert call.get("").status_code == 200
    assert call.post("/audio", {"sentence": "hi"}).status_code == 200
    before_ms = time.time() * 1000
    refused = call.get("")
    body = assert_error(refused, 429, "too-many-requests", "rate-limit-reached")
    reset = int(refused.headers["X-RateLimit-Reset"])
    assert before_ms < reset <= before_ms + 1100, "a reset within the 1 s window, in ms"
    assert body["details"] == [{"name": "rateLimitResetTime", "value": str(reset)}]
    # Creating calls has its own limit: the request limit never refuses one.
    assert Calls(sim, receiver).id
    time.sleep(max(0.0, reset / 1000 - time.time()) + 0.01)
    assert call.get("").status_code == 200
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
    assert stats["rate_limited"] == 1
    assert stats["refused"] == {"429 too-many-requests/rate-limit-reached": 1}
    assert stats["requests"] == {"create": 2, "read": 3, "audio": 1}
    assert stats["control_requests"] == 1
    for sim_call in sim.calls():
        requests.post(
            f"{sim.url}/v1/users/u-sim/calls/{sim_call['id']}",
            json={"state": "completed"},
            auth=AUTH,
            timeout=5,
        )


def test_a_rate_under_one_per_second_spaces_requests_out(make_sim: Callable) -> None:
    sim = make_sim(request_rate=0.5)
    url = f"{sim.url}/v1/users/u-sim/calls"
    assert requests.get(url, auth=AUTH, timeout=5).status_code == 200
    refused = requests.get(url, auth=AUTH, timeout=5)
    assert refused.status_code == 429
    wait_ms = int(refused.headers["X-RateLimit-Reset"]) - time.time() * 1000
    assert 1000 < wait_ms <= 2000  # one request per 2 s


def test_stats_count_requests_by_kind_with_no_limit_by_default(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="1=1")
    call = Calls(sim, receiver).answered()
    for _ in range(5):
        assert call.get("").status_code == 200
    assert call.get("/events").status_code == 200
    assert requests.get(call.base, auth=AUTH, timeout=5).status_code == 200
    call.post("/gather", GATHER)
    call.hang_up()
    call.ended()
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
    assert stats["requests"] == {
        "create": 1,
        "read": 5,
        "events": 1,
        "list": 1,
        "gather": 1,
        "update": 1,
    }
    assert stats["rate_limited"] == 0 and stats["refused"] == {}
    assert stats["first_audio_ms"]["count"] == 1
