"""BXML calls on the carrier simulator, over real HTTP on 127.0.0.1.

Each test starts a Simulator in-process and a small stdlib HTTP server standing in for
the dialer's receiver: it records every request the simulator makes and answers each
path with the BXML the test gives it.
"""

from __future__ import annotations

import base64
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
# Quick people: a key 10 ms into a gather, 20 ms per sentence, script seconds x 0.01.
FAST = {
    "answer_delay": 0.01,
    "talk_time": 0.1,
    "speech_seconds": 0.02,
    "press_delay": 0.01,
    "time_scale": 0.01,
}
Reply = tuple[int, str] | Callable[[dict], tuple[int, str]]


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


def doc(*verbs: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


class Receiver:
    """Records every request; answers a path from ``replies`` (status, body), 200 and
    an empty body otherwise."""

    def __init__(self) -> None:
        self.hits: list[dict] = []
        self.replies: dict[str, Reply] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query, keep_blank_values=True))
                with receiver.lock:
                    reply = receiver.replies.get(parts.path, (200, ""))
                status, body = reply(query) if callable(reply) else reply
                data = body.encode()
                with receiver.lock:
                    receiver.hits.append(
                        {
                            "method": self.command,
                            "path": parts.path,
                            "query": query,
                            "headers": dict(self.headers),
                            "raw": raw,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _handle  # noqa: N815
            do_POST = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def got(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [h for h in self.hits if path is None or h["path"] == path]

    def names(self, path: str | None = None) -> list[str]:
        return [h["query"].get("eventType", "?") for h in self.got(path)]

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
        sim = Simulator(SimConfig(**{**FAST, **config}))
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


def dial(sim: Simulator, receiver: Receiver, **body: Any) -> str:
    """A BXML call whose answer GETs /answer; returns its id."""
    body = {
        "from": FROM,
        "to": TO,
        "callbackUrl": receiver.url("/answer"),
        "callbackHttpMethod": "GET",
        **body,
    }
    response = requests.post(f"{sim.url}/v1/users/u-sim/calls", json=body, auth=AUTH, timeout=5)
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def ended(sim: Simulator, call_id: str, timeout: float = 5.0) -> dict:
    """The call's admin record once it has hung up and its hangup was delivered."""

    def done() -> dict | None:
        record = next(c for c in sim.calls() if c["id"] == call_id)
        return record if "hangup" in record["events"] else None

    return wait_until(done, timeout, f"call {call_id} to end")


def record(sim: Simulator, call_id: str) -> dict:
    return next(c for c in sim.calls() if c["id"] == call_id)


# -- the answer GET and its script ----------------------------------------------------------


def test_events_are_gets_with_query_parameters_and_basic_auth(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim()
    call_id = dial(sim, receiver, tag="T1", callbackUrl=receiver.url("/answer", "u:p%40w@"))
    ended(sim, call_id)
    answer, hangup = receiver.got("/answer")
    assert (answer["method"], hangup["method"]) == ("GET", "GET")
    assert answer["raw"] == b""
    q = answer["query"]
    assert q["eventType"] == "answer" and q["callState"] == "active"
    assert (q["callId"], q["from"], q["to"], q["tag"]) == (call_id, FROM, TO, "T1")
    assert q["callUri"].endswith(f"/v1/users/u-sim/calls/{call_id}") and q["time"]
    assert hangup["query"]["eventType"] == "hangup"
    assert hangup["query"]["cause"] == "NORMAL_CLEARING"
    expected = "Basic " + base64.b64encode(b"u:p@w").decode()
    assert {h["headers"].get("Authorization") for h in receiver.got()} == {expected}
    assert record(sim, call_id)["method"] == "GET"


def test_speak_and_play_run_in_order_then_the_person_hangs_up(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(talk_time=0.2)
    receiver.replies["/answer"] = (
        200,
        doc(
            '<SpeakSentence voice="kate" gender="female" locale="en_US">Hello Ann</SpeakSentence>',
            "<PlayAudio>https://example.com/a.mp3</PlayAudio>",
        ),
    )
    call_id = dial(sim, receiver)
    started = time.monotonic()
    call = ended(sim, call_id)
    # Two sounds of 20 ms, then 200 ms of silence before the person hangs up.
    assert time.monotonic() - started >= 0.24
    first, second = call["audio"]
    assert first["verb"] == "SpeakSentence" and first["text"] == "Hello Ann"
    assert (first["voice"], first["gender"], first["locale"]) == ("kate", "female", "en_US")
    assert second == {"verb": "PlayAudio", "url": "https://example.com/a.mp3", "at": second["at"]}
    assert 0 <= first["at"] < second["at"]
    assert second["at"] - first["at"] >= 0.015
    assert call["hung_up_by"] == "person"
    assert call["bxml_error"] is None and call["bxml_fetches"] == 1
    assert call["first_audio_ms"] is not None and 0 <= call["first_audio_ms"] < 1000
    assert call["events"] == ["answer", "hangup"]
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
    assert stats["first_audio_ms"]["count"] == 1 and stats["bxml_fetches"] == 1


def test_pause_then_hangup(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(time_scale=0.1)
    receiver.replies["/answer"] = (
        200,
        doc('<Pause length="3"/>', "<Hangup/>", "<SpeakSentence>never</SpeakSentence>"),
    )
    call_id = dial(sim, receiver)
    wait_until(lambda: receiver.got("/answer"), what="answer")
    answered = time.monotonic()
    call = ended(sim, call_id)
    assert time.monotonic() - answered >= 0.28  # 3 s x 0.1
    assert call["hung_up_by"] == "dialer-bxml" and call["audio"] == []
    assert receiver.got("/answer")[-1]["query"]["cause"] == "NORMAL_CLEARING"


def test_pause_takes_duration_as_the_older_spelling(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(time_scale=0.1)
    receiver.replies["/answer"] = (200, doc('<Pause duration="2"/>', "<Hangup/>"))
    call_id = dial(sim, receiver)
    wait_until(lambda: receiver.got("/answer"), what="answer")
    answered = time.monotonic()
    ended(sim, call_id)
    assert time.monotonic() - answered >= 0.18


def test_unknown_verbs_are_recorded_and_skipped(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim()
    receiver.replies["/answer"] = (
        200,
        doc(
            '<Record maxDuration="5"/>',
            "<SendDtmf>12</SendDtmf>",
            "<SpeakSentence>hi</SpeakSentence>",
            "<Hangup/>",
        ),
    )
    call = ended(sim, dial(sim, receiver))
    assert call["skipped_verbs"] == ["Record", "SendDtmf"]
    assert [a["text"] for a in call["audio"]] == ["hi"]
    assert call["hung_up_by"] == "dialer-bxml"


def test_transfer_bridges_for_the_talk_time_and_skips_later_verbs(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(talk_time=0.3, people="stay=1")  # a transfer ends even a stay person
    receiver.replies["/answer"] = (
        200,
        doc(
            "<SpeakSentence>Connecting you</SpeakSentence>",
            '<Transfer transferTo="+19195550199"><SpeakSentence>Call from the dialer</SpeakSentence></Transfer>',
            "<SpeakSentence>never</SpeakSentence>",
        ),
    )
    call_id = dial(sim, receiver)
    wait_until(lambda: record(sim, call_id)["transferred_to"], what="transfer")
    transferred = time.monotonic()
    call = ended(sim, call_id)
    assert time.monotonic() - transferred >= 0.25
    assert call["transferred_to"] == "+19195550199"
    assert call["whisper"] == [{"verb": "SpeakSentence", "text": "Call from the dialer"}]
    assert [a["text"] for a in call["audio"]] == ["Connecting you"]
    assert call["hung_up_by"] == "person"


def test_redirect_runs_the_fetched_document_instead_of_the_rest(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim()
    receiver.replies["/answer"] = (
        200,
        doc(
            f'<Redirect requestUrl="{receiver.url("/next")}?step=2" requestUrlTimeout="5000"/>',
            "<SpeakSentence>skipped</SpeakSentence>",
        ),
    )
    receiver.replies["/next"] = (200, doc("<SpeakSentence>from next</SpeakSentence>", "<Hangup/>"))
    call = ended(sim, dial(sim, receiver, tag="T"))
    [fetch] = receiver.got("/next")
    assert fetch["method"] == "GET"
    assert fetch["query"]["eventType"] == "redirect" and fetch["query"]["step"] == "2"
    assert fetch["query"]["tag"] == "T" and fetch["query"]["callId"] == call["id"]
    assert [a["text"] for a in call["audio"]] == ["from next"]
    assert call["bxml_fetches"] == 2 and call["hung_up_by"] == "dialer-bxml"


def test_duplicated_answer_runs_the_script_once(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(duplicate_callbacks=1.0)
    receiver.replies["/answer"] = (200, doc("<SpeakSentence>once</SpeakSentence>"))
    call = ended(sim, dial(sim, receiver))
    time.sleep(0.1)  # the hangup's duplicate, and anything a second script would do
    call = record(sim, call["id"])
    assert receiver.names("/answer").count("answer") == 2
    assert [a["text"] for a in call["audio"]] == ["once"]
    assert call["bxml_fetches"] == 2  # both answers were fetches; one ran


def test_a_retried_answer_after_a_failure_runs_nothing(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(callback_retries=1)
    answers = iter([(500, ""), (200, doc("<SpeakSentence>late</SpeakSentence>", "<Hangup/>"))])
    receiver.replies["/answer"] = lambda q: (
        next(answers) if q["eventType"] == "answer" else (200, "")
    )
    call = ended(sim, dial(sim, receiver), timeout=5)
    assert call["bxml_error"] == "answer: HTTP 500"
    assert call["audio"] == [] and call["hung_up_by"] == "person"


def test_fallback_url_can_give_the_script(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim()
    receiver.replies["/answer"] = (503, "")
    receiver.replies["/fallback"] = (
        200,
        doc("<SpeakSentence>via fallback</SpeakSentence>", "<Hangup/>"),
    )
    call = ended(sim, dial(sim, receiver, fallbackUrl=receiver.url("/fallback")))
    assert [a["text"] for a in call["audio"]] == ["via fallback"]
    assert call["bxml_error"] is None and call["bxml_fetches"] == 2


BAD_REPLIES = [
    ((500, doc("<Hangup/>")), "answer: HTTP 500"),
    ((200, "hello"), "answer: not XML"),
    ((200, ""), "answer: the reply is empty"),
    ((200, "<Script><Hangup/></Script>"), "answer: the root element is <Script>"),
    (
        (200, doc("<SpeakSentence>" + "x" * 17000 + "</SpeakSentence>")),
        "answer: the document is over",
    ),
    (
        (
            200,
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><Response><SpeakSentence>&e;</SpeakSentence></Response>',
        ),
        "answer: a DTD is not allowed",
    ),
    ((200, doc('<Gather maxDigits="lots"/>')), "answer: <Gather maxDigits='lots'>"),
    ((200, doc("<PlayAudio/>")), "answer: <PlayAudio> has no URL"),
]


@pytest.mark.parametrize(("reply", "error"), BAD_REPLIES, ids=[e for _, e in BAD_REPLIES])
def test_a_bad_reply_gives_no_script(
    make_sim: Callable, receiver: Receiver, reply: tuple[int, str], error: str
) -> None:
    sim = make_sim(callback_retries=0)
    receiver.replies["/answer"] = lambda q: reply if q["eventType"] == "answer" else (200, "")
    call = ended(sim, dial(sim, receiver))
    assert call["bxml_error"].startswith(error), call["bxml_error"]
    assert call["audio"] == [] and call["hung_up_by"] == "person"
    assert call["first_audio_ms"] is None


def test_a_stay_person_without_a_script_stays_until_the_cap(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="stay=1", stay_seconds=1.5)
    receiver.replies["/answer"] = (200, doc("<SpeakSentence>hello</SpeakSentence>"))
    call_id = dial(sim, receiver)
    time.sleep(0.3)  # well past talk_time
    assert record(sim, call_id)["state"] == "active"
    call = ended(sim, call_id)
    assert call["hung_up_by"] == "timeout" and call["person"] == "stay"


def test_a_stay_person_stays_until_the_dialer_hangs_up(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="stay=1")
    receiver.replies["/answer"] = (200, doc("<SpeakSentence>hello</SpeakSentence>"))
    call_id = dial(sim, receiver)
    time.sleep(0.3)
    assert record(sim, call_id)["state"] == "active"
    url = f"{sim.url}/v1/users/u-sim/calls/{call_id}"
    assert requests.post(url, json={"state": "completed"}, auth=AUTH, timeout=5).status_code == 200
    call = ended(sim, call_id)
    assert call["hung_up_by"] == "dialer-rest"
    assert receiver.got("/answer")[-1]["query"]["cause"] == "NORMAL_CLEARING"


# -- gathers ----------------------------------------------------------------------------------


def gather(receiver: Receiver, *prompt: str, **attrs: str) -> str:
    attrs.setdefault("requestUrl", receiver.url("/gathered"))
    shown = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return f"<Gather {shown}>{''.join(prompt)}</Gather>"


def test_a_pressed_key_is_fetched_to_the_request_url_and_its_reply_runs(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="1=1")
    receiver.replies["/answer"] = (
        200,
        doc(
            gather(
                receiver,
                "<SpeakSentence>Press 1 to confirm</SpeakSentence>",
                maxDigits="1",
                tag="g1",
            ),
            "<SpeakSentence>not reached</SpeakSentence>",
        ),
    )
    receiver.replies["/gathered"] = (
        200,
        doc("<SpeakSentence>Thank you</SpeakSentence>", "<Hangup/>"),
    )
    call = ended(sim, dial(sim, receiver, tag="call-tag"))
    [fetch] = receiver.got("/gathered")
    q = fetch["query"]
    assert fetch["method"] == "GET"
    assert (q["eventType"], q["state"], q["digits"], q["reason"]) == (
        "gather",
        "completed",
        "1",
        "max-digits",
    )
    assert q["tag"] == "g1" and q["callId"] == call["id"] and q["gatherId"].startswith("g-")
    assert q["callUri"].endswith(call["id"]) and q["time"]
    # The gather event goes only to the requestUrl, not to the callbackUrl.
    assert receiver.names("/answer") == ["answer", "hangup"]
    assert [a["text"] for a in call["audio"]] == ["Press 1 to confirm", "Thank you"]
    assert call["audio"][0]["prompt"] is True
    assert call["gathers"] == [
        {"gatherId": q["gatherId"], "digits": "1", "reason": "max-digits", "tag": "g1"}
    ]
    assert call["pressed"] == "1" and call["hung_up_by"] == "dialer-bxml"
    assert call["events"] == ["answer", "gather", "hangup"] and call["bxml_fetches"] == 2


def test_a_key_cuts_the_prompt_short(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(people="press=1", keys="2=1", speech_seconds=0.1, press_delay=0.03)
    receiver.replies["/answer"] = (
        200,
        doc(
            gather(
                receiver,
                *(f"<SpeakSentence>part {i}</SpeakSentence>" for i in range(3)),
                maxDigits="1",
            )
        ),
    )
    receiver.replies["/gathered"] = (200, doc("<Hangup/>"))
    call = ended(sim, dial(sim, receiver))
    assert [a["text"] for a in call["audio"]] == ["part 0"]
    assert call["gathers"][0]["digits"] == "2"


def test_a_terminating_digit_ends_the_gather_and_is_not_counted(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="12#=1")
    receiver.replies["/answer"] = (200, doc(gather(receiver, maxDigits="5")))
    receiver.replies["/gathered"] = (200, doc("<Hangup/>"))
    ended(sim, dial(sim, receiver))
    q = receiver.got("/gathered")[0]["query"]
    assert (q["digits"], q["reason"], q["terminatingDigit"]) == ("12", "terminating-digit", "#")


def test_keys_short_of_max_digits_wait_out_the_inter_digit_timeout(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="7=1", time_scale=0.1)
    receiver.replies["/answer"] = (200, doc(gather(receiver, maxDigits="3", interDigitTimeout="2")))
    receiver.replies["/gathered"] = (200, doc("<Hangup/>"))
    call_id = dial(sim, receiver)
    wait_until(lambda: receiver.got("/answer"), what="answer")
    answered = time.monotonic()
    ended(sim, call_id)
    assert time.monotonic() - answered >= 0.18  # 2 s x 0.1 after the key
    q = receiver.got("/gathered")[0]["query"]
    assert (q["digits"], q["reason"]) == ("7", "inter-digit-timeout")


def test_a_waiting_person_times_the_gather_out(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(people="wait=1", time_scale=0.1)
    receiver.replies["/answer"] = (
        200,
        doc(
            gather(
                receiver,
                "<SpeakSentence>Press 1</SpeakSentence>",
                maxDigits="1",
                interDigitTimeout="3",
            )
        ),
    )
    receiver.replies["/gathered"] = (
        200,
        doc("<SpeakSentence>Goodbye</SpeakSentence>", "<Hangup/>"),
    )
    call_id = dial(sim, receiver)
    wait_until(lambda: receiver.got("/answer"), what="answer")
    answered = time.monotonic()
    call = ended(sim, call_id)
    assert time.monotonic() - answered >= 0.3  # the prompt, then 3 s x 0.1
    q = receiver.got("/gathered")[0]["query"]
    assert (q["digits"], q["reason"]) == ("", "inter-digit-timeout")
    assert call["pressed"] is None
    assert [a["text"] for a in call["audio"]] == ["Press 1", "Goodbye"]


def test_a_person_who_hangs_up_mid_prompt_ends_the_script(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="hangup=1", speech_seconds=0.1)
    receiver.replies["/answer"] = (
        200,
        doc(
            gather(
                receiver,
                "<SpeakSentence>one</SpeakSentence>",
                "<SpeakSentence>two</SpeakSentence>",
                maxDigits="1",
            )
        ),
    )
    receiver.replies["/gathered"] = (200, doc("<SpeakSentence>never heard</SpeakSentence>"))
    call = ended(sim, dial(sim, receiver))
    time.sleep(0.1)
    call = record(sim, call["id"])
    q = receiver.got("/gathered")[0]["query"]
    assert (q["reason"], q["digits"]) == ("hung-up", "")
    order = [(h["path"], h["query"]["eventType"]) for h in receiver.got()]
    assert order == [("/answer", "answer"), ("/gathered", "gather"), ("/answer", "hangup")]
    assert [a["text"] for a in call["audio"]] == ["one"]
    assert call["hung_up_by"] == "person"
    assert call["gathers"][0]["reason"] == "hung-up"


def test_a_stay_person_waits_a_gather_out(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(people="stay=1")
    receiver.replies["/answer"] = (200, doc(gather(receiver, maxDigits="1", interDigitTimeout="1")))
    receiver.replies["/gathered"] = (200, doc("<SpeakSentence>bye</SpeakSentence>", "<Hangup/>"))
    call = ended(sim, dial(sim, receiver))
    assert receiver.got("/gathered")[0]["query"]["reason"] == "inter-digit-timeout"
    assert call["hung_up_by"] == "dialer-bxml"


def test_an_empty_gather_reply_lets_the_document_go_on(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="1=1")
    receiver.replies["/answer"] = (
        200,
        doc(gather(receiver, maxDigits="1"), "<SpeakSentence>after</SpeakSentence>", "<Hangup/>"),
    )
    receiver.replies["/gathered"] = (200, "")
    call = ended(sim, dial(sim, receiver))
    assert [a["text"] for a in call["audio"]] == ["after"]
    assert call["bxml_error"] is None


def test_a_gather_without_request_url_goes_straight_on(
    make_sim: Callable, receiver: Receiver
) -> None:
    sim = make_sim(people="press=1", keys="1=1")
    receiver.replies["/answer"] = (
        200,
        doc('<Gather maxDigits="1"/>', "<SpeakSentence>next</SpeakSentence>", "<Hangup/>"),
    )
    call = ended(sim, dial(sim, receiver))
    assert [a["text"] for a in call["audio"]] == ["next"]
    assert call["gathers"][0]["digits"] == "1" and receiver.got("/gathered") == []


def test_a_bad_gather_reply_stops_the_script(make_sim: Callable, receiver: Receiver) -> None:
    sim = make_sim(people="press=1", keys="1=1")
    receiver.replies["/answer"] = (
        200,
        doc(gather(receiver, maxDigits="1"), "<SpeakSentence>after</SpeakSentence>"),
    )
    receiver.replies["/gathered"] = (200, "not xml")
    call = ended(sim, dial(sim, receiver))
    assert call["bxml_error"].startswith("gather: not XML")
    assert call["audio"] == [] and call["hung_up_by"] == "person"


def test_people_are_drawn_by_the_mix_and_the_seed(make_sim: Callable) -> None:
    mix = "press=0.4,wait=0.2,hangup=0.2,stay=0.2"

    def people(seed: int) -> list[str]:
        sim = make_sim(people=mix, seed=seed, outcomes={"silent": 1.0})
        for i in range(40):
            body = {"from": FROM, "to": f"+1919555{i:04d}"}
            requests.post(f"{sim.url}/v1/users/u-sim/calls", json=body, auth=AUTH, timeout=5)
        return [c["person"] for c in sim.calls()]

    first = people(3)
    assert first == people(3)
    assert first != people(4)
    assert set(first) == {"press", "wait", "hangup", "stay"}


@pytest.mark.parametrize(
    "change",
    [{"people": "press=1,dance=1"}, {"people": "press=0"}, {"keys": "1=1,x=1"}, {"keys": "1"}],
)
def test_bad_people_or_keys_are_refused(make_sim: Callable, change: dict) -> None:
    sim = make_sim()
    response = requests.post(f"{sim.url}/_sim/config", json=change, timeout=5)
    assert response.status_code == 400
    with pytest.raises(ValueError):
        Simulator(SimConfig(**change))
    ok = requests.post(f"{sim.url}/_sim/config", json={"people": {"wait": 1}}, timeout=5)
    assert ok.status_code == 200
