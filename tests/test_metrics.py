"""Fleet-wide metrics: counted in many processes, added up in the private Redis, served
by the real receiver behind their own credentials.

Each test that counts uses its own Redis database number, so counts never mix with
another test's (or another process's) and can be compared exactly.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from dialer import api, clock, metrics, settings
from dialer.callbacks.gate import PATH
from dialer.dev.fleet import (
    RedisServer,
    free_port,
    receiver_command,
    wait_for_port,
    wait_until,
)
from dialer.dev.simulator import Simulator
from dialer.store import db
from dialer.store.models import Attempt, Campaign, CampaignState
from dialer.worker import scheduling, tasks
from tests.factories import apply_callback

CALLBACK_SECRET = "cb/secret:with odd chars"
METRICS_TOKEN = "metrics-token-0123456789"
EVENT = {"eventType": "hangup", "callId": "c-metrics", "cause": "USER_BUSY"}


def redis_db(server: RedisServer, number: int) -> str:
    url = f"redis://127.0.0.1:{server.port}/{number}"
    redis.Redis.from_url(url).flushdb()
    return url


def factory(url: str):
    return lambda: redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)


def stored(url: str) -> dict[metrics.Key, float]:
    return metrics.read_store(redis.Redis.from_url(url))


def value(counts: dict[metrics.Key, float], name: str, **labels: str) -> float:
    return counts.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def recorder(redis_server: RedisServer) -> Iterator[tuple[metrics.Recorder, str]]:
    """This process's recorder, flushing to a Redis database of its own."""
    url = redis_db(redis_server, 7)
    rec = metrics.Recorder(factory(url), interval=3600)  # flushed by hand: deterministic
    metrics.reset(rec)
    yield rec, url
    metrics.reset(None)


# ------------------------------------------------------------------- the recorder


def test_counts_from_many_processes_add_up_in_redis(redis_server: RedisServer) -> None:
    url = redis_db(redis_server, 6)
    script = textwrap.dedent(
        """
        from dialer import metrics
        from dialer.carrier.errors import Action, CarrierError
        for _ in range(500):
            metrics.call_created()
        err = CarrierError(Action.RETRY, "x", status=503, code="call-unavailable")
        for _ in range(7):
            metrics.carrier_error(err)
        metrics.rate_limit_wait("pace-sleep", 0.25)
        """
    )
    env = {**os.environ, "DIALER_REDIS_URL": url, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    # Each process sent its counts when it exited; nothing was lost or counted twice.
    counts = stored(url)
    assert value(counts, metrics.CALLS_CREATED) == 1500
    errors = dict(status="503", code="call-unavailable", action="retry")
    assert value(counts, metrics.CARRIER_ERRORS, **errors) == 21
    assert value(counts, metrics.RATE_LIMIT_WAITS, reason="pace-sleep") == 3
    assert value(counts, metrics.RATE_LIMIT_WAIT_SECONDS, reason="pace-sleep") == 0.75


def test_a_redis_outage_keeps_counts_until_redis_is_back() -> None:
    port = free_port()  # nothing listens here yet
    url = f"redis://127.0.0.1:{port}/0"
    rec = metrics.Recorder(factory(url), interval=3600)
    for _ in range(5):
        rec.add([(metrics._CREATED, 1)])  # never raises, never waits
    started = time.monotonic()
    assert rec.flush() is False
    assert time.monotonic() - started < 5, "a failed flush gives up quickly"
    assert rec.pending() == {metrics._CREATED: 5}, "the counts wait for the next flush"
    server = RedisServer(port)
    server.start()
    try:
        rec._client = None  # the old client's pool saw the refused connection
        assert rec.flush() is True
        assert rec.pending() == {}
        assert value(stored(url), metrics.CALLS_CREATED) == 5
    finally:
        server.stop()


def test_exposition_is_prometheus_text_with_a_cumulative_lag_histogram(recorder) -> None:
    rec, url = recorder
    now = clock.now()
    clock.set_source(lambda: now)  # lags exactly as stamped, however loaded the machine
    try:
        metrics.event_applied("applied", (now - timedelta(seconds=0.2)).isoformat())
        metrics.event_applied("applied", (now - timedelta(seconds=3)).isoformat())
        metrics.event_applied("repeat", now.isoformat())
    finally:
        clock.set_source(None)
    assert rec.flush()
    collector = metrics.FleetCollector(lambda: stored(url), lambda: ({"queued": 2}, {}))
    families = {f.name: f for f in text_string_to_metric_families(_expose(collector))}
    lag = {(s.name, s.labels.get("le")): s.value for s in families[metrics.EVENT_LAG].samples}
    assert lag[(metrics.EVENT_LAG + "_bucket", "0.25")] == 2  # 0 s and 0.2 s
    assert lag[(metrics.EVENT_LAG + "_bucket", "2.5")] == 2
    assert lag[(metrics.EVENT_LAG + "_bucket", "5.0")] == 3
    assert lag[(metrics.EVENT_LAG + "_bucket", "+Inf")] == 3
    assert lag[(metrics.EVENT_LAG + "_count", None)] == 3
    assert lag[(metrics.EVENT_LAG + "_sum", None)] == pytest.approx(3.2)
    applied = {s.labels["disposition"]: s.value for s in families["dialer_events_applied"].samples}
    assert applied == {"applied": 2, "repeat": 1}
    gauges = {s.labels["status"]: s.value for s in families["dialer_attempts"].samples}
    assert gauges == {s: (2 if s == "queued" else 0) for s in metrics.IN_FLIGHT}
    # A counter nobody has counted yet is still shown, at zero.
    created = families["dialer_calls_created"].samples
    assert [(s.name, s.value) for s in created] == [("dialer_calls_created_total", 0.0)]


def test_call_script_metrics_responses_requests_and_answer_to_script(recorder) -> None:
    rec, url = recorder
    metrics.response("confirmed")
    metrics.response("confirmed")
    metrics.response(None)
    metrics.control_request("bxml-answer", "ok")
    metrics.control_request("control", "rate-limited")
    metrics.answer_to_script(0.004)
    metrics.answer_to_script(0.2)
    assert rec.flush()
    collector = metrics.FleetCollector(lambda: stored(url), lambda: ({}, {}))
    families = {f.name: f for f in text_string_to_metric_families(_expose(collector))}
    responses = {s.labels["label"]: s.value for s in families["dialer_responses"].samples}
    assert responses == {"confirmed": 2, "none": 1}
    requests_ = {
        (s.labels["kind"], s.labels["outcome"]): s.value
        for s in families["dialer_control_requests"].samples
    }
    assert requests_ == {("bxml-answer", "ok"): 1, ("control", "rate-limited"): 1}
    silence = {
        (s.name, s.labels.get("le")): s.value for s in families[metrics.ANSWER_TO_SCRIPT].samples
    }
    assert silence[(metrics.ANSWER_TO_SCRIPT + "_bucket", "0.005")] == 1
    assert silence[(metrics.ANSWER_TO_SCRIPT + "_bucket", "0.25")] == 2
    assert silence[(metrics.ANSWER_TO_SCRIPT + "_count", None)] == 2


def _expose(collector: metrics.FleetCollector) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


# ----------------------------------------------------------- hooks in the tasks


def campaign_with(numbers: list[str]) -> int:
    report = api.create_campaign("m", "+19195550000", [{"phone": n} for n in numbers])
    with db.session_scope() as session:
        session.get(Campaign, report["id"]).state = CampaignState.RUNNING
    return report["id"]


def test_dial_counts_created_calls_and_carrier_errors_by_code(sim: Simulator, recorder) -> None:
    rec, url = recorder
    sim.configure(fault_503=1.0, refused_prefixes=("+1919710009",))
    cid = campaign_with(["+19197100001", "+19197100091"])
    ids = scheduling.release(cid)
    for attempt_id in ids:
        tasks.dial.run(attempt_id)
    sim.configure(fault_503=0.0)
    later = clock.now() + timedelta(minutes=1)
    clock.set_source(lambda: later)  # past not_before
    for attempt_id in ids:
        tasks.dial.run(attempt_id)
    assert rec.flush()
    counts = stored(url)
    assert value(counts, metrics.CALLS_CREATED) == sim.stats()["created"] == 1
    unavailable = dict(status="503", code="call-unavailable", action="retry")
    assert value(counts, metrics.CARRIER_ERRORS, **unavailable) == 2
    refused = dict(status="403", code="invalid-call-to-number", action="permanent")
    assert value(counts, metrics.CARRIER_ERRORS, **refused) == 1
    # The refused destination finished its attempt: counted once its transaction committed.
    with db.session_scope() as session:
        failed = session.scalar(select(func.count()).where(Attempt.status == "failed"))
    assert value(counts, metrics.ATTEMPTS_FINISHED, status="failed", result="error") == failed == 1


def test_a_push_back_is_counted_as_a_fleet_wait(sim: Simulator, recorder) -> None:
    rec, url = recorder
    sim.configure(fault_429=1.0)
    [aid] = scheduling.release(campaign_with(["+19197100002"]))
    tasks.dial.run(aid)
    assert rec.flush()
    counts = stored(url)
    assert value(counts, metrics.RATE_LIMIT_WAITS, reason="pushback") == 1
    assert 0 < value(counts, metrics.RATE_LIMIT_WAIT_SECONDS, reason="pushback") <= 1.5


def test_a_rolled_back_transaction_counts_no_finished_attempt(sim: Simulator, recorder) -> None:
    from dialer.state import send

    rec, _ = recorder
    [aid] = scheduling.release(campaign_with(["+19197100003"]))
    with pytest.raises(RuntimeError), db.session_scope() as session:
        send.claim_for_send(session, aid, clock.now(), timedelta(seconds=30))
        send.record_refused(session, aid, "x", "refused", clock.now())
        raise RuntimeError("the transaction fails after the attempt failed")
    assert rec.pending() == {}


def test_a_dial_and_an_event_go_through_with_metrics_redis_down(sim: Simulator) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    rec = metrics.Recorder(factory(dead), interval=0.05)  # flushing, and failing, all along
    metrics.reset(rec)
    try:
        [aid] = scheduling.release(campaign_with(["+19197100004"]))
        tasks.dial.run(aid)
        with db.session_scope() as session:
            call_id = session.get(Attempt, aid).call_id
        assert call_id is not None, "the call was created"
        apply_callback({"eventType": "hangup", "callId": call_id, "cause": "USER_BUSY"})
        with db.session_scope() as session:
            assert session.get(Attempt, aid).status == "ended", "the event was applied"
        assert rec.pending().get(metrics._CREATED) == 1, "kept for when Redis is back"
    finally:
        metrics.reset(None)


# ------------------------------------------------------------- the real receiver


def start_receiver(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        receiver_command(port, 2),
        env={**os.environ, "DIALER_CALLBACK_SECRET": CALLBACK_SECRET, **env},
    )
    wait_for_port(port, 20)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def receiver(redis_server: RedisServer, test_settings) -> Iterator[tuple[str, str]]:
    url = redis_db(redis_server, 8)
    proc, base = start_receiver(
        {
            "DIALER_METRICS_TOKEN": METRICS_TOKEN,
            "DIALER_REDIS_URL": url,
            "DIALER_BROKER_URL": f"redis://127.0.0.1:{redis_server.port}/9",
            "DIALER_DATABASE_URL": test_settings.database_url,
        }
    )
    yield base, url
    proc.terminate()
    proc.wait(10)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def scrape(base: str) -> dict[str, list]:
    resp = requests.get(base + "/metrics", headers=_bearer(METRICS_TOKEN), timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        _bearer("wrong"),
        _bearer(METRICS_TOKEN[:-1]),
        _bearer(CALLBACK_SECRET),
        basic("dialer", CALLBACK_SECRET),
        basic(METRICS_TOKEN, "x"),
        {"Authorization": "Basic !!notbase64"},
        {"Authorization": METRICS_TOKEN},
    ],
    ids=[
        "none",
        "wrong-bearer",
        "bearer-prefix",
        "callback-secret-bearer",
        "callback-secret-basic",
        "token-as-user",
        "malformed-basic",
        "no-scheme",
    ],
)
def test_metrics_refuse_missing_or_wrong_credentials(receiver, headers) -> None:
    base, _ = receiver
    resp = requests.get(base + "/metrics", headers=headers, timeout=10)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "dialer_" not in resp.text


@pytest.mark.parametrize(
    "headers", [_bearer(METRICS_TOKEN), basic("prometheus", METRICS_TOKEN)], ids=["bearer", "basic"]
)
def test_metrics_open_with_their_token(receiver, headers) -> None:
    base, _ = receiver
    resp = requests.get(base + "/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200
    names = {f.name for f in text_string_to_metric_families(resp.text)}
    assert {"dialer_calls_created", "dialer_callbacks_refused", "dialer_attempts"} <= names
    assert requests.post(base + "/metrics", headers=headers, timeout=10).status_code == 405


def test_without_a_token_there_is_no_metrics_path(redis_server: RedisServer) -> None:
    proc, base = start_receiver({"DIALER_METRICS_TOKEN": ""})
    try:
        for headers in ({}, _bearer(METRICS_TOKEN), basic("dialer", CALLBACK_SECRET)):
            assert requests.get(base + "/metrics", headers=headers, timeout=10).status_code == 404
    finally:
        proc.terminate()
        proc.wait(10)


def test_callbacks_are_counted_fleet_wide_by_status_and_reason(receiver) -> None:
    base, url = receiver
    before = scrape(base)
    ok = requests.post(base + PATH, json=EVENT, headers=basic("dialer", CALLBACK_SECRET), timeout=5)
    wrong = requests.post(base + PATH, json=EVENT, headers=basic("dialer", "nope"), timeout=5)
    bad = requests.post(
        base + PATH, data=b"{oops", headers=basic("dialer", CALLBACK_SECRET), timeout=5
    )
    none = requests.post(base + PATH, json=EVENT, timeout=5)
    assert [r.status_code for r in (ok, wrong, bad, none)] == [200, 403, 400, 401]

    def counted() -> dict | None:
        # Two receiver processes: each sends its counts within a second; a scrape
        # reads them all from Redis, whichever process answers it.
        after = scrape(base)
        got = {
            "received": _delta(before, after, "dialer_callbacks_received", event="hangup"),
            "wrong": _delta(
                before, after, "dialer_callbacks_refused", status="403", reason="wrong-credentials"
            ),
            "bad": _delta(
                before, after, "dialer_callbacks_refused", status="400", reason="not-json"
            ),
            "none": _delta(
                before, after, "dialer_callbacks_refused", status="401", reason="no-credentials"
            ),
        }
        return got if all(got.values()) else None

    got = wait_until(counted, 10, interval=0.3, what="the callbacks to be counted")
    assert got == {"received": 1, "wrong": 1, "bad": 1, "none": 1}
    sources = {s.labels["source"]: s.value for s in scrape(base)["dialer_metrics_source_up"]}
    assert sources == {"redis": 1, "database": 1}


def _delta(before: dict, after: dict, family: str, **labels: str) -> float:
    def pick(samples: dict) -> float:
        return sum(
            s.value
            for s in samples.get(family, [])
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items())
        )

    return pick(after) - pick(before)


def test_with_redis_down_callbacks_get_503_and_scrapes_still_answer(
    redis_server: RedisServer, test_settings
) -> None:
    # The event stream and the counters share DIALER_REDIS_URL: with it down an event
    # has nowhere to go (503: the carrier retries), and a scrape says what it lacks.
    proc, base = start_receiver(
        {
            "DIALER_METRICS_TOKEN": METRICS_TOKEN,
            "DIALER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens
            "DIALER_DATABASE_URL": test_settings.database_url,
        }
    )
    try:
        started = time.monotonic()
        resp = requests.post(
            base + PATH, json=EVENT, headers=basic("dialer", CALLBACK_SECRET), timeout=10
        )
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
        assert time.monotonic() - started < 5, "a prompt 503, not redis-py's long retries"
        families = scrape(base)
        sources = {s.labels["source"]: s.value for s in families["dialer_metrics_source_up"]}
        assert sources == {"redis": 0, "database": 1}
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_callback_is_accepted_with_metrics_redis_down() -> None:
    """Counting never fails a callback: the receiver app, its stream working, its
    counters' Redis not."""
    from dialer.callbacks import eventstream
    from dialer.callbacks.receiver import Receiver

    local = eventstream.LocalStream()
    app = Receiver(CALLBACK_SECRET, handover=eventstream.Handover(local))
    rec = metrics.Recorder(factory(f"redis://127.0.0.1:{free_port()}/0"), interval=0.05)
    metrics.reset(rec)
    try:
        body = json.dumps(EVENT).encode()
        environ = {
            "PATH_INFO": PATH,
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": basic("dialer", CALLBACK_SECRET)["Authorization"],
            "wsgi.input": io.BytesIO(body),
        }
        answered: list[str] = []
        app(environ, lambda status, headers: answered.append(status))
        assert answered == ["200 OK"] and local.backlog() == 1
        received = (metrics.CALLBACKS_RECEIVED, (("event", "hangup"),))
        assert rec.pending().get(received) == 1, "kept for when Redis is back"
    finally:
        metrics.reset(None)


def test_the_event_backlog_is_the_streams_length(receiver) -> None:
    from dialer.callbacks import eventstream

    base, url = receiver
    r = redis.Redis.from_url(url)
    for _ in range(3):
        requests.post(base + PATH, json=EVENT, headers=basic("dialer", CALLBACK_SECRET), timeout=5)
    [sample] = scrape(base)[metrics.EVENT_BACKLOG]
    assert sample.value == r.xlen(eventstream.STREAM) >= 3


def test_metrics_token_must_not_be_the_callback_secret() -> None:
    with pytest.raises(settings.SettingsError, match="DIALER_METRICS_TOKEN must differ"):
        settings.load({"DIALER_CALLBACK_SECRET": "same", "DIALER_METRICS_TOKEN": "same"})
