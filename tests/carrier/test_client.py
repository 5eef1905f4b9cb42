"""The Catapult client and its error mapping (dialer.carrier.client, dialer.carrier.errors)
against real HTTP: the carrier simulator, and a scripted stdlib server.

No HTTP mocks. The simulator (``dialer.dev.simulator``) stands in for the carrier's
behaviour; ``FakeCarrier`` below is a real ``http.server`` on localhost for what the
simulator does not produce (every row of the Errors table, a 201 without Location, a
non-JSON body, a connection dropped mid-answer, Link paging, ...).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dialer import settings
from dialer.carrier.client import CatapultClient
from dialer.carrier.errors import Action, CarrierError
from dialer.carrier.request import InvalidCallRequest
from dialer.dev.simulator import SimConfig, Simulator
from tests.carrier.factories import BASIC, CALLBACK, FROM, FULL, TO

USER, TOKEN, SECRET = "u-sim", "sim-token", "sim-secret"
CALLS = f"/v1/users/{USER}/calls"


# ---------------------------------------------------------------------------------------
# Against the carrier simulator
# ---------------------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(SimConfig(outcomes={"silent": 1.0}))
    simulator.start(port=0)
    yield simulator
    simulator.stop()


@pytest.fixture
def sim_client(sim: Simulator) -> Iterator[CatapultClient]:
    c = client_for(sim.url)
    yield c
    c.close()


@pytest.mark.parametrize("style", ["relative", "absolute"])
def test_create_call_returns_the_simulators_call_id(
    sim: Simulator, sim_client: CatapultClient, style: str
) -> None:
    sim.configure(location_style=style)
    call_id = sim_client.create_call(dataclasses.replace(BASIC, tag='{"attempt":1}'))
    (call,) = sim.calls()
    assert (call["id"], call["from"], call["to"], call["tag"]) == (
        call_id,
        FROM,
        TO,
        '{"attempt":1}',
    )


def test_a_full_request_is_accepted_by_the_simulator(
    sim: Simulator, sim_client: CatapultClient
) -> None:
    # Callbacks go to a closed port: the simulator just fails to deliver them.
    port = closed_port()
    request = dataclasses.replace(
        FULL, callback_url=f"http://u:p@127.0.0.1:{port}/cb", fallback_url=None
    )
    call_id = sim_client.create_call(request)
    record = sim_client.get_call(call_id)
    assert record["id"] == call_id
    assert record["sipHeaders"] == {"X-Campaign": "7"} and record["recordingEnabled"] is True


@pytest.mark.parametrize(
    ("changes", "action", "status", "code"),
    [
        ({"fault_503": 1.0}, Action.RETRY, 503, "call-unavailable"),
        ({"fault_500": 1.0}, Action.RETRY, 500, "internal-error"),
        ({"fault_rate_limit": 1.0}, Action.RATE_LIMITED, 403, "call-rate-limit"),
        ({"credit": 0}, Action.STOP, 403, "insufficient-available-balance"),
        ({"numbers": ["+19195550000"]}, Action.FROM_REFUSED, 401, "number-access-denied"),
        ({"secret": "rotated"}, Action.STOP, 401, "user-access-denied"),
    ],
)
def test_simulated_refusals_map_to_their_actions(
    sim: Simulator,
    sim_client: CatapultClient,
    changes: dict,
    action: Action,
    status: int,
    code: str,
) -> None:
    sim.configure(**changes)
    error = create_error(sim_client)
    assert (error.action, error.status, error.code) == (action, status, code)
    assert sim.calls() == []


def test_a_refused_destination_is_permanent(sim: Simulator, sim_client: CatapultClient) -> None:
    error = create_error(sim_client, to="+15550001234")
    assert (error.action, error.status, error.code) == (
        Action.PERMANENT,
        403,
        "invalid-call-to-number",
    )


def test_the_account_rate_limit_is_rate_limited(sim: Simulator, sim_client: CatapultClient) -> None:
    sim.configure(rate=0.1)  # one call per 10 s window
    sim_client.create_call(BASIC)
    error = create_error(sim_client)
    assert (error.action, error.category) == (Action.RATE_LIMITED, "limit")
    assert len(sim.calls()) == 1


def test_429_carries_retry_at_in_epoch_seconds(sim: Simulator, sim_client: CatapultClient) -> None:
    sim.configure(fault_429=1.0)
    before = time.time()
    error = create_error(sim_client)
    assert (error.action, error.status) == (Action.RATE_LIMITED, 429)
    assert error.retry_at is not None and before < error.retry_at < before + 5


@pytest.mark.parametrize("hold", [1.0, 0.0])
def test_a_lost_answer_is_ambiguous_and_the_call_exists(sim: Simulator, hold: float) -> None:
    # hold 1.0 outlasts the 0.3 s read timeout; hold 0 drops the connection at once.
    sim.configure(fault_ambiguous=1.0, ambiguous_hold=hold)
    with client_for(sim.url, timeout=0.3) as client:
        error = create_error(client, to="+19195550199")
        assert error.action is Action.AMBIGUOUS
        (call,) = sim.calls()
        assert call["ambiguous"] and call["to"] == "+19195550199"
        # ... and the dialer can find it again by listing the destination's calls.
        assert [c["id"] for c in client.list_calls(to="+19195550199")] == [call["id"]]


def test_list_calls_pages_through_the_simulator(
    sim: Simulator, sim_client: CatapultClient, caplog: pytest.LogCaptureFixture
) -> None:
    created = [sim_client.create_call(BASIC) for _ in range(5)]
    sim_client.create_call(dataclasses.replace(BASIC, to="+19195550142"))
    caplog.set_level(logging.DEBUG, logger="dialer.carrier.client")
    listed = [c["id"] for c in sim_client.list_calls(to=TO, size=2, sort_order="asc")]
    assert listed == created
    gets = [r for r in caplog.records if getattr(r, "method", None) == "GET"]
    assert len(gets) == 3
    assert [c["id"] for c in sim_client.list_calls(to=TO, size=2, max_pages=1)] == created[:-3:-1]


def test_hang_up_completes_the_call(sim: Simulator, sim_client: CatapultClient) -> None:
    call_id = sim_client.create_call(BASIC)
    assert sim_client.get_call(call_id)["state"] == "started"
    sim_client.hang_up(call_id)
    assert sim_client.get_call(call_id)["state"] == "completed"
    assert sim.calls()[0]["state"] == "completed"


def test_an_unknown_call_is_404_permanent(sim_client: CatapultClient) -> None:
    for attempt in (lambda: sim_client.get_call("c-nope"), lambda: sim_client.hang_up("c-nope")):
        with pytest.raises(CarrierError) as info:
            attempt()
        assert (info.value.status, info.value.action) == (404, Action.PERMANENT)


# ---------------------------------------------------------------------------------------
# A scripted carrier: a real HTTP server whose answer each test chooses
# ---------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, bytes/str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # written verbatim instead, then the connection is closed
    delay: float = 0.0


Script = Callable[[Seen], Reply]


class FakeCarrier:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: Script = lambda seen: Reply(404)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    self.path,
                    dict(self.headers.items()),
                    json.loads(raw) if raw else None,
                )
                owner.seen.append(seen)
                reply = owner.script(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    self.wfile.write(reply.raw)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                body = reply.body
                if isinstance(body, dict | list):
                    data = json.dumps(body).encode()
                elif isinstance(body, str):
                    data = body.encode()
                else:
                    data = body or b""
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up first (the timeout tests)
                    self.close_connection = True

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeCarrier]:
    carrier = FakeCarrier()
    yield carrier
    carrier.stop()


def client_for(base: str, timeout: float = 2.0) -> CatapultClient:
    return CatapultClient(base, USER, TOKEN, SECRET, timeout=timeout)


@pytest.fixture
def client(fake: FakeCarrier) -> Iterator[CatapultClient]:
    c = client_for(fake.base)
    yield c
    c.close()


def answer(status: int, body: Any = None, **headers: str) -> Script:
    return lambda seen: Reply(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def carrier_error(category: str | None, code: str | None, message: str = "refused") -> dict:
    return {"category": category, "code": code, "message": message, "details": []}


def create_error(client: CatapultClient, **changes: Any) -> CarrierError:
    with pytest.raises(CarrierError) as info:
        client.create_call(dataclasses.replace(BASIC, **changes))
    return info.value


# ---------------------------------------------------------------------------------------
# create_call: success and the Location header
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (f"{CALLS}/c-jjm3aiicnpngixjjelyomda", "c-jjm3aiicnpngixjjelyomda"),
        (f"https://api.catapult.inetwork.com{CALLS}/c-abs", "c-abs"),
        (f"{CALLS}/c-slash/", "c-slash"),
    ],
)
def test_create_call_returns_the_last_segment_of_location(
    fake: FakeCarrier, client: CatapultClient, location: str, expected: str
) -> None:
    fake.script = answer(201, Location=location)
    assert client.create_call(FULL) == expected
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("POST", CALLS)
    assert seen.body == FULL.to_json()
    assert seen.headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize("headers", [{}, {"Location": ""}, {"Location": CALLS + "/"}])
def test_created_without_a_usable_location_is_ambiguous(
    fake: FakeCarrier, client: CatapultClient, headers: dict[str, str]
) -> None:
    fake.script = lambda seen: Reply(201, headers=headers)
    error = create_error(client)
    assert error.action is Action.AMBIGUOUS
    assert error.status == 201


def test_an_invalid_request_is_refused_before_sending(
    fake: FakeCarrier, client: CatapultClient
) -> None:
    with pytest.raises(InvalidCallRequest):
        client.create_call(dataclasses.replace(BASIC, call_timeout=301))
    assert fake.seen == []


# ---------------------------------------------------------------------------------------
# Error mapping: every row of docs/carrier.md's Errors table, and what it leaves out
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (400, carrier_error("bad-request", "validation-error"), Action.PERMANENT),
        (400, carrier_error("bad-request", "callback-invalid-url"), Action.PERMANENT),
        (401, carrier_error("authentication", "user-access-denied"), Action.STOP),
        (401, carrier_error("authentication", "number-access-denied"), Action.FROM_REFUSED),
        (403, carrier_error("forbidden", "number-access-denied"), Action.FROM_REFUSED),
        (403, carrier_error("limit", "call-rate-limit"), Action.RATE_LIMITED),
        (403, carrier_error("credit", "insufficient-available-balance"), Action.STOP),
        (403, carrier_error("forbidden", "invalid-call-to-number"), Action.PERMANENT),
        (403, carrier_error("forbidden", "invalid-destination-number"), Action.PERMANENT),
        (403, carrier_error("something-new", "never-seen"), Action.STOP),
        (403, None, Action.STOP),
        (409, carrier_error(None, "call-duplicated-error"), Action.DUPLICATE),
        (429, carrier_error("too-many-requests", None), Action.RATE_LIMITED),
        (500, None, Action.RETRY),
        (503, carrier_error("unavailable", "call-creation-failure"), Action.RETRY),
        (503, carrier_error("unavailable", "call-unavailable"), Action.RETRY),
        (503, "<html><body>Service Unavailable</body></html>", Action.RETRY),
        (400, b"\xff\xfe not json", Action.PERMANENT),
        (422, "{broken json", Action.PERMANENT),
        (408, None, Action.RETRY),
        (501, None, Action.RETRY),
        # Outside the table, deliberately: a gateway's 502/504 may hide a created call; a
        # 404/405 or a redirect on create means the base URL is wrong for every contact.
        (502, None, Action.AMBIGUOUS),
        (504, None, Action.AMBIGUOUS),
        (404, None, Action.STOP),
        (301, None, Action.STOP),
    ],
)
def test_each_carrier_error_maps_to_its_action(
    fake: FakeCarrier, client: CatapultClient, status: int, body: Any, action: Action
) -> None:
    fake.script = answer(status, body, Location=f"{CALLS}/c-redirected")
    error = create_error(client)
    assert error.action is action
    assert error.status == status
    if isinstance(body, dict):
        assert (error.category, error.code) == (body["category"], body["code"])
        assert error.message == "refused"


def test_str_of_an_error_is_status_category_code_and_message(
    fake: FakeCarrier, client: CatapultClient
) -> None:
    fake.script = answer(403, carrier_error("forbidden", "invalid-call-to-number", "no"))
    assert str(create_error(client)) == "403 forbidden/invalid-call-to-number: no"


def test_rate_limit_reset_in_milliseconds_becomes_epoch_seconds(
    fake: FakeCarrier, client: CatapultClient
) -> None:
    reset_ms = int((time.time() + 30) * 1000)
    fake.script = answer(
        429, carrier_error("too-many-requests", None), X_RateLimit_Reset=str(reset_ms)
    )
    error = create_error(client)
    assert error.action is Action.RATE_LIMITED
    assert error.retry_at == pytest.approx(reset_ms / 1000)


def test_rate_limit_reset_from_the_details(fake: FakeCarrier, client: CatapultClient) -> None:
    reset_ms = int((time.time() + 5) * 1000)
    body = carrier_error("limit", "call-rate-limit")
    body["details"] = [{"name": "rateLimitResetTime", "value": str(reset_ms)}]
    fake.script = answer(403, body)
    error = create_error(client)
    assert error.action is Action.RATE_LIMITED
    assert error.retry_at == pytest.approx(reset_ms / 1000)


def test_rate_limit_without_a_reset_leaves_retry_at_empty(
    fake: FakeCarrier, client: CatapultClient
) -> None:
    fake.script = answer(429, None)
    error = create_error(client)
    assert (error.action, error.retry_at) == (Action.RATE_LIMITED, None)


# ---------------------------------------------------------------------------------------
# Transport failures: was the request sent?
# ---------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retry_nothing_was_sent() -> None:
    with client_for(f"http://127.0.0.1:{closed_port()}") as client:
        error = create_error(client)
    assert error.action is Action.RETRY
    assert error.status is None


def test_a_connect_timeout_is_retry() -> None:
    # A listener whose accept queue is full drops new SYNs, so connect() hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                s = socket.socket()
                s.settimeout(0.2)
                fillers.append(s)
                try:
                    s.connect(("127.0.0.1", port))
                except OSError:
                    break
            else:
                pytest.skip("this kernel never refuses a SYN to a full accept queue")
            with client_for(f"http://127.0.0.1:{port}", timeout=0.3) as client:
                error = create_error(client)
        finally:
            for s in fillers:
                s.close()
    assert error.action is Action.RETRY
    assert "nothing was sent" in error.message


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # closed without a word (RemoteDisconnected)
        b"HTTP/1.1 201 Created\r\nContent-Length: 50\r\n\r\nshort",  # cut mid-body
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # cut mid-chunk
    ],
)
def test_a_connection_lost_after_sending_a_create_is_ambiguous(
    fake: FakeCarrier, client: CatapultClient, raw: bytes
) -> None:
    fake.script = lambda seen: Reply(raw=raw)
    error = create_error(client)
    assert error.action is Action.AMBIGUOUS
    assert len(fake.seen) == 1  # it did reach the carrier


def test_a_connection_lost_on_a_read_is_retry(fake: FakeCarrier, client: CatapultClient) -> None:
    fake.script = lambda seen: Reply(raw=b"")
    with pytest.raises(CarrierError) as info:
        client.get_call("c-1")
    assert info.value.action is Action.RETRY


def test_a_read_timeout_on_create_is_ambiguous(fake: FakeCarrier) -> None:
    fake.script = lambda seen: Reply(201, headers={"Location": f"{CALLS}/c-late"}, delay=0.6)
    with client_for(fake.base, timeout=0.2) as client:
        error = create_error(client)
    assert error.action is Action.AMBIGUOUS


# ---------------------------------------------------------------------------------------
# get_call, list_calls, hang_up against the scripted server
# ---------------------------------------------------------------------------------------


def test_get_call_of_an_unknown_id_is_404_permanent(
    fake: FakeCarrier, client: CatapultClient
) -> None:
    fake.script = answer(404, carrier_error("not-found", "call-not-found"))
    with pytest.raises(CarrierError) as info:
        client.get_call("c-gone")
    assert (info.value.status, info.value.action) == (404, Action.PERMANENT)


def test_get_call_quotes_the_id_into_one_segment(fake: FakeCarrier, client: CatapultClient) -> None:
    fake.script = answer(200, {"id": "x"})
    client.get_call("../../x")
    assert fake.seen[0].path == f"{CALLS}/..%2F..%2Fx"


def paged(pages: list[list[dict]], link: Callable[[int], str | None]) -> Script:
    """Answer GET …/calls from ``pages``, by ?page= or by the page a Link pointed at."""

    def script(seen: Seen) -> Reply:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(seen.path).query)
        number = int(query.get("p", query.get("page", ["0"]))[0])
        headers = {}
        target = link(number) if number + 1 < len(pages) else None
        if target:
            headers["Link"] = f'<{target}>; rel="next", <{CALLS}?p=0>; rel="first"'
        elif link(0) is not None:
            headers["Link"] = f'<{CALLS}?p=0>; rel="first"'
        return Reply(200, pages[number] if number < len(pages) else [], headers)

    return script


@pytest.mark.parametrize("style", ["relative", "absolute"])
def test_list_calls_follows_a_link_header(
    fake: FakeCarrier, client: CatapultClient, style: str
) -> None:
    pages = [[{"id": "c-1"}, {"id": "c-2"}], [{"id": "c-3"}, {"id": "c-4"}], [{"id": "c-5"}]]
    prefix = "" if style == "relative" else fake.base
    fake.script = paged(pages, lambda n: f"{prefix}{CALLS}?p={n + 1}&size=2")
    ids = [c["id"] for c in client.list_calls(size=2, to=TO)]
    assert ids == ["c-1", "c-2", "c-3", "c-4", "c-5"]
    assert len(fake.seen) == 3
    assert "to=%2B19195550100" in fake.seen[0].path and "sortOrder=desc" in fake.seen[0].path


def test_list_calls_without_link_stops_on_a_short_page(
    fake: FakeCarrier, client: CatapultClient
) -> None:
    pages = [[{"id": "c-1"}, {"id": "c-2"}], [{"id": "c-3"}, {"id": "c-4"}], [{"id": "c-5"}]]
    fake.script = paged(pages, lambda n: None)
    assert [c["id"] for c in client.list_calls(size=2)] == ["c-1", "c-2", "c-3", "c-4", "c-5"]
    assert ["page=0" in s.path for s in fake.seen] == [True, False, False]
    assert "page=2" in fake.seen[-1].path


def test_list_calls_stops_at_max_pages(fake: FakeCarrier, client: CatapultClient) -> None:
    fake.script = paged([[{"id": "a"}, {"id": "b"}]] * 5, lambda n: None)
    assert len(list(client.list_calls(size=2, max_pages=2))) == 4
    assert len(fake.seen) == 2


def test_list_calls_never_follows_a_link_to_another_host(
    fake: FakeCarrier, client: CatapultClient
) -> None:
    # Following it would hand our Basic credentials to that host.
    pages = [[{"id": "c-1"}], [{"id": "c-2"}]]
    fake.script = paged(pages, lambda n: f"http://attacker.invalid{CALLS}?p={n + 1}")
    assert [c["id"] for c in client.list_calls(size=1)] == ["c-1", "c-2"]  # paged by number
    assert "page=1" in fake.seen[1].path


def test_hang_up_posts_state_completed(fake: FakeCarrier, client: CatapultClient) -> None:
    fake.script = answer(200)
    client.hang_up("c-1")
    assert (fake.seen[0].method, fake.seen[0].path) == ("POST", f"{CALLS}/c-1")
    assert fake.seen[0].body == {"state": "completed"}


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------


def test_errors_and_logs_never_carry_a_secret(
    fake: FakeCarrier, client: CatapultClient, caplog: pytest.LogCaptureFixture
) -> None:
    # A carrier (or a proxy) that echoes the request back into its error message.
    def echo(seen: Seen) -> Reply:
        message = f"bad {seen.body.get('callbackUrl')} with {seen.headers['Authorization']}"
        return Reply(400, carrier_error("bad-request", "callback-invalid-url", message))

    fake.script = echo
    caplog.set_level(logging.DEBUG)
    error = create_error(client, callback_url=CALLBACK)
    authorization = fake.seen[0].headers["Authorization"].split()[1]
    shown = [str(error), repr(error), error.message, *(r.getMessage() for r in caplog.records)]
    shown += [repr(r.__dict__) for r in caplog.records]
    for text in shown:
        for secret in (SECRET, "hook-PASSWORD-42", CALLBACK, authorization):
            assert secret not in text
    assert any(
        getattr(r, "status", None) == 400 and r.levelno == logging.DEBUG for r in caplog.records
    )


def test_transport_errors_are_not_chained(client: CatapultClient, fake: FakeCarrier) -> None:
    fake.script = lambda seen: Reply(raw=b"")
    error = create_error(client, callback_url=CALLBACK)
    assert error.__cause__ is None and error.__suppress_context__


def test_the_client_repr_hides_its_credentials() -> None:
    client = client_for("http://127.0.0.1:9")
    assert SECRET not in repr(client) and TOKEN not in repr(client)


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------


def test_from_settings_requires_the_credentials() -> None:
    with pytest.raises(settings.SettingsError, match="CATAPULT_API_SECRET"):
        CatapultClient.from_settings(
            settings.load({"CATAPULT_USER_ID": "u", "CATAPULT_API_TOKEN": "t"})
        )


def test_from_settings_talks_to_the_configured_carrier(fake: FakeCarrier) -> None:
    s = settings.load(
        {
            "CATAPULT_API_URL": fake.base + "/",
            "CATAPULT_USER_ID": USER,
            "CATAPULT_API_TOKEN": TOKEN,
            "CATAPULT_API_SECRET": SECRET,
            "DIALER_HTTP_TIMEOUT": "0.2",
        }
    )
    fake.script = lambda seen: Reply(201, headers={"Location": f"{CALLS}/c-1"}, delay=0.5)
    with CatapultClient.from_settings(s) as client:
        assert create_error(client).action is Action.AMBIGUOUS  # the 0.2 s timeout applied
    assert fake.seen[0].path == CALLS
