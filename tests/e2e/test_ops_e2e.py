"""Operating the dialer: metrics and logs of a real fleet, checked against the record.

Simulator, receiver (two uvicorn processes), two workers and beat run a small campaign
with JSON logs. The carrier fails some creates with 503 and refuses a few destinations;
then it refuses the account. The metrics scraped from the receiver must show exactly
what the simulator and the database recorded, and every log line must be JSON, carry
the ids where known, and hold no secret.
"""

from __future__ import annotations

import base64
import csv
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from dialer.callbacks.gate import PATH
from dialer.dev.fleet import Fleet, RedisServer, wait_until
from dialer.store.models import FINAL_ATTEMPT, Attempt
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e

CALLBACK_SECRET = "ops/e2e secret:1"
METRICS_TOKEN = "ops-metrics-token-42"
CARRIER_TOKEN, CARRIER_SECRET = "ops-carrier-token", "ops-carrier-secret"
REFUSED = ["+19197090001", "+19197090002", "+19197090003"]  # the carrier refuses these
REFUSED_PREFIX = "+1919709"


def spellings(secret: str) -> list[str]:
    users = ("dialer", "", CARRIER_TOKEN, "prometheus")
    return [secret, quote(secret, safe=""), quote(secret)] + [
        base64.b64encode(f"{u}:{secret}".encode()).decode() for u in users
    ]


def scrape(fleet: Fleet, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(
        fleet.receiver_url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"} if headers is None else headers,
        timeout=10,
    )


def samples(fleet: Fleet) -> dict[str, list[Any]]:
    resp = scrape(fleet)
    assert resp.status_code == 200, resp.text
    return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}


def total(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in families.get(name, [])
        if s.name in (name + "_total", name)
        and all(s.labels.get(k) == v for k, v in labels.items())
    )


def by(families: dict[str, list[Any]], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    out: Counter[tuple[str, ...]] = Counter()
    for s in families.get(name, []):
        if s.name in (name + "_total", name) and s.value:
            out[tuple(s.labels[k] for k in keys)] += s.value
    return dict(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("ops")
    db_url = database_named("dialer_ops")
    env = {
        "DIALER_DATABASE_URL": db_url,
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 5)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": CALLBACK_SECRET,
        "DIALER_METRICS_TOKEN": METRICS_TOKEN,
        "DIALER_LOG_FORMAT": "json",
        "CATAPULT_API_TOKEN": CARRIER_TOKEN,
        "CATAPULT_API_SECRET": CARRIER_SECRET,
        "DIALER_ACCOUNT_CPS": "200",
        "DIALER_NUMBER_CPS": "200",
        "DIALER_HTTP_TIMEOUT": "10",  # a loaded machine must not turn a create ambiguous
        "DIALER_WORKER_THREADS": "8",  # a few connections: the database is shared
    }
    contacts = tmp / "contacts.csv"
    with contacts.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "name"])
        w.writerows(
            [[f"+1919700{i:04d}", f"n{i}"] for i in range(60)] + [[n, "r"] for n in REFUSED]
        )
    cli_output: list[str] = []
    # Standard error (NAME.log) is where every process logs; Celery prints its shutdown
    # notice to standard output (NAME.stdout), which is checked for secrets only.
    with Fleet(tmp / "fleet", env, stdout_apart=True) as fleet:

        def cli(*args: str) -> str:
            result = fleet.cli(*args)
            cli_output.append(result.stderr)
            return result.stdout

        try:
            cli("db", "upgrade")
            fleet.start_simulator(
                "--token",
                CARRIER_TOKEN,
                "--secret",
                CARRIER_SECRET,
                "--outcomes",
                "answered=0.5,busy=0.2,no-answer=0.15,rejected=0.15",
                "--answer-delay",
                "0.05",
                "--talk-time",
                "0.05",
                "--no-answer-delay",
                "0.2",
                "--fault-503",
                "0.15",
                "--seed",
                "5",
            )
            requests.post(
                fleet.sim_url + "/_sim/config",
                json={"refused_prefixes": [REFUSED_PREFIX]},
                timeout=10,
            ).raise_for_status()
            fleet.start_receiver()
            fleet.start_worker("w1", loglevel="DEBUG")  # the carrier client's lines too
            fleet.start_worker("w2")
            fleet.start_beat("beat", quiet=True)  # beat prints its banner unless quiet
            created = json.loads(
                cli(
                    "campaign",
                    "create",
                    "--name",
                    "ops",
                    "--from",
                    "+19195550000",
                    "--contacts",
                    str(contacts),
                    "--max-attempts",
                    "2",
                    "--retry-delay",
                    "1",
                    "--json",
                )
            )
            cid = str(created["id"])
            cli("campaign", "start", cid)

            def status_is(campaign: str, state: str) -> dict | None:
                st = json.loads(cli("campaign", "status", campaign, "--json"))
                return st if st["state"] == state else None

            wait_until(lambda: status_is(cid, "completed"), 240, 1, "the campaign to complete")

            def settled() -> dict | None:
                # Counts reach Redis within a second of happening, from every process.
                stats = requests.get(fleet.sim_url + "/_sim/stats", timeout=10).json()
                calls = fleet.sim_calls()
                families = samples(fleet)
                delivered = sum(len(c["events"]) for c in calls)
                ok = (
                    total(families, "dialer_calls_created") == stats["created"]
                    and total(families, "dialer_callbacks_received") == delivered
                    and total(families, "dialer_events_applied") == delivered
                )
                return {"stats": stats, "calls": calls, "metrics": families} if ok else None

            phase1 = wait_until(settled, 30, 0.5, "the metrics to match the simulator")
            engine = create_engine(db_url)
            with engine.connect() as conn:
                db_attempts = {
                    (status, result or "none"): n
                    for status, result, n in conn.execute(
                        select(Attempt.status, Attempt.result, func.count()).group_by(
                            Attempt.status, Attempt.result
                        )
                    )
                }
            engine.dispose()

            # Refusals that carry secrets: a wrong callback secret, the callback secret
            # at /metrics. They must be refused, counted, and logged without them.
            wrong = requests.post(
                fleet.receiver_url + PATH,
                json={"eventType": "hangup", "callId": "c-x", "cause": "USER_BUSY"},
                auth=("dialer", CALLBACK_SECRET + "x"),
                timeout=10,
            )
            as_callback = [
                scrape(fleet, {"Authorization": f"Bearer {CALLBACK_SECRET}"}).status_code,
                requests.get(
                    fleet.receiver_url + "/metrics", auth=("dialer", CALLBACK_SECRET), timeout=10
                ).status_code,
                scrape(fleet, {}).status_code,
            ]

            # The carrier refuses the account: the campaign pauses, loudly.
            requests.post(fleet.sim_url + "/_sim/config", json={"token": "revoked"}, timeout=10)
            second = tmp / "second.csv"
            second.write_text("phone\n+19197109001\n+19197109002\n")
            cid2 = str(
                json.loads(
                    cli(
                        "campaign",
                        "create",
                        "--name",
                        "ops2",
                        "--from",
                        "+19195550000",
                        "--contacts",
                        str(second),
                        "--json",
                    )
                )["id"]
            )
            cli("campaign", "start", cid2)
            paused = wait_until(lambda: status_is(cid2, "paused"), 60, 1, "the account refusal")

            def refusal_counted() -> dict | None:
                families = samples(fleet)
                stop = by(families, "dialer_carrier_errors", "status", "code", "action")
                return families if stop.get(("401", "user-access-denied", "stop")) else None

            phase2 = wait_until(refusal_counted, 20, 0.5, "the account refusal to be counted")
        except BaseException:
            print(fleet.logs())
            raise
        logs = {
            path.name: path.read_text(errors="replace")
            for path in sorted(fleet.workdir.glob("*.log"))
            if path.name != "simulator.log"  # the carrier's stand-in, not the dialer
        }
        stdout = "\n".join(
            p.read_text(errors="replace")
            for p in sorted(fleet.workdir.glob("*.stdout"))
            if p.name != "simulator.stdout"
        )
    yield {
        "phase1": phase1,
        "phase2": phase2,
        "db_attempts": db_attempts,
        "wrong": wrong.status_code,
        "as_callback": as_callback,
        "paused": paused,
        "logs": logs,
        "cli": "\n".join(cli_output),
        "stdout": stdout,
        "campaign": int(cid),
    }


def test_metrics_show_what_the_campaign_did(run: dict) -> None:
    p = run["phase1"]
    m, stats, calls = p["metrics"], p["stats"], p["calls"]
    # Calls created: the simulator's own count, and its record of calls.
    assert total(m, "dialer_calls_created") == stats["created"] == len(calls) > 0
    # Carrier errors by status and code: exactly the simulator's refusals.
    refusals: Counter[tuple[str, str]] = Counter()
    for key, n in stats["refused"].items():
        status, _, category_code = key.partition(" ")
        refusals[(status, category_code.split("/")[1])] += n
    ours = by(m, "dialer_carrier_errors", "status", "code")
    assert ours == dict(refusals)
    assert ours.get(("503", "call-unavailable"), 0) > 0, "the 503 faults were counted"
    assert ours.get(("403", "invalid-call-to-number")) == len(REFUSED)
    # Callbacks received: what the simulator posted and saw accepted, by event type.
    posted = Counter(e for c in calls for e in c["events"])
    assert by(m, "dialer_callbacks_received", "event") == {(e,): n for e, n in posted.items()}
    assert total(m, "dialer_callbacks_refused") == sum(c["refused"] for c in calls) == 0
    # Every accepted event was applied once, and its lag observed.
    applied = total(m, "dialer_events_applied")
    assert applied == sum(posted.values())
    count = [s.value for s in m["dialer_event_lag_seconds"] if s.name.endswith("_count")]
    assert count == [applied]


def test_attempts_by_status_match_the_database(run: dict) -> None:
    m, in_db = run["phase1"]["metrics"], run["db_attempts"]
    finished = by(m, "dialer_attempts_finished", "status", "result")
    assert finished == {k: n for k, n in in_db.items() if k[0] in FINAL_ATTEMPT}
    gauges = {s.labels["status"]: s.value for s in m["dialer_attempts"]}
    in_flight = Counter()
    for (status, _), n in in_db.items():
        if status not in FINAL_ATTEMPT:
            in_flight[status] += n
    assert gauges == {s: in_flight.get(s, 0) for s in gauges}
    assert {s.labels["source"]: s.value for s in m["dialer_metrics_source_up"]} == {
        "redis": 1,
        "database": 1,
    }


def test_refusals_and_the_account_stop_are_counted(run: dict) -> None:
    assert run["wrong"] == 403
    assert run["as_callback"] == [401, 401, 401], "the callback secret does not open /metrics"
    m = run["phase2"]
    refused = by(m, "dialer_callbacks_refused", "status", "reason")
    assert refused == {("403", "wrong-credentials"): 1}
    assert "user-access-denied" in run["paused"]["state_reason"]


def test_every_log_line_is_json_with_ids(run: dict) -> None:
    lines: dict[str, list[dict]] = {}
    for name, text in {**run["logs"], "cli": run["cli"]}.items():
        parsed = []
        for line in text.splitlines():
            if line.strip():
                try:
                    parsed.append(json.loads(line))
                except ValueError:
                    pytest.fail(f"{name}: a log line is not JSON: {line!r}")
        lines[name] = parsed
        for record in parsed:
            assert {"time", "level", "logger", "message"} <= set(record), (name, record)
    assert lines["w1.log"] and lines["w2.log"] and lines["beat.log"]
    worker = lines["w1.log"] + lines["w2.log"]
    with_ids = [r for r in worker if {"campaign", "contact", "attempt"} <= set(r)]
    assert with_ids, "lines logged while dialing carry the campaign, contact and attempt"
    carrier = [r for r in with_ids if r["logger"] == "dialer.carrier.client"]
    assert carrier and all(r["campaign"] == run["campaign"] for r in carrier[:5])
    failed_503 = [r for r in worker if "503" in r["message"] and r["level"] == "WARNING"]
    assert failed_503 and all("attempt" in r and "campaign" in r for r in failed_503)
    stop = [r for r in worker if r["level"] == "ERROR" and "refuses the account" in r["message"]]
    assert stop and all("campaign" in r for r in stop)


def test_no_secret_in_any_log_line(run: dict) -> None:
    everything = "\n".join([*run["logs"].values(), run["cli"], run["stdout"]])
    assert len(everything) > 10_000, "the run logged plenty"
    for secret in (CALLBACK_SECRET, METRICS_TOKEN, CARRIER_SECRET, CARRIER_TOKEN):
        for spelling in spellings(secret):
            assert spelling not in everything, f"a spelling of a secret is in the logs: {spelling}"
