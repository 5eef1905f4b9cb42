"""Call scripts with real processes: simulator (its people press keys, wait, hang up or
stay), receiver, workers and beat (docs/interface.md, "What an answered call hears").

- every answered call hears a prompt made from its own row, exactly once, even with the
  carrier's events duplicated and a worker SIGKILLed mid-campaign;
- the export's response is the label of the key the simulated person pressed;
- numbers that pressed the opt-out key are suppressed when a second campaign imports them;
- --max-duration hangs up people who stay on the line.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from dialer.dev.fleet import Fleet, RedisServer, wait_until
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e

LABELS = {"1": "confirmed", "2": "cancelled", "9": "opt-out"}
SAY = "Hello {name}, press 1 to confirm, 2 to cancel, 9 to stop these calls."


def env_for(redis_server: RedisServer, name: str) -> dict[str, str]:
    return {
        "DIALER_DATABASE_URL": database_named(name),
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 6)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "script-secret",
        "DIALER_ACCOUNT_CPS": "100",
        "DIALER_NUMBER_CPS": "100",
        "DIALER_HTTP_TIMEOUT": "5",
    }


def contacts(path: Path, n: int, first: int = 0) -> list[str]:
    numbers = [f"+1919{300 + i // 10000:03d}{i % 10000:04d}" for i in range(first, first + n)]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "name"])
        w.writerows([[number, f"Person {i}"] for i, number in enumerate(numbers)])
    return numbers


def run_to_end(fleet: Fleet, cid: str, timeout: float = 180) -> dict:
    def finished() -> dict | None:
        st = json.loads(fleet.cli("campaign", "status", cid, "--json").stdout)
        return st if st["state"] == "completed" else None

    return wait_until(finished, timeout, interval=1, what="the campaign to complete")


def last_calls(calls: list[dict]) -> dict[str, dict]:
    """The simulator's last call to each number: the one a contact's export row shows."""
    return {c["to"]: c for c in sorted(calls, key=lambda c: c["created_at"])}


def expected_response(call: dict) -> str:
    """The response the export shows for ``call``: the label of the key the person
    pressed, if the call was answered and the key is one of the script's."""
    pressed = call["pressed"] if call["outcome"] == "answered" else None
    return LABELS.get(pressed, "") if pressed else ""


def responses_settled(fleet: Fleet, cid: str, timeout: float = 60) -> tuple[list, list, dict]:
    """(export rows, the simulator's calls, status) once every answered call's pressed key
    is in the export, or as they are after ``timeout`` (the assertions then say what
    differs)."""

    def read() -> tuple[list, list, dict]:
        out = fleet.cli("campaign", "export", cid).stdout
        status = json.loads(fleet.cli("campaign", "status", cid, "--json").stdout)
        return list(csv.DictReader(out.splitlines())), fleet.sim_calls(), status

    def settled() -> tuple[list, list, dict] | None:
        export, calls, _ = got = read()
        last = last_calls(calls)
        missing = [r for r in export if r["response"] != expected_response(last[r["e164"]])]
        return None if missing else got

    try:
        return wait_until(settled, timeout, interval=1, what="every pressed key applied")
    except TimeoutError:
        return read()


def test_every_answer_hears_its_own_prompt_once_and_responses_and_opt_outs_hold(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "contacts.csv"
    numbers = contacts(path, 150)
    with Fleet(tmp_path / "fleet", env_for(redis_server, "script_e2e")) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator(
                "--outcomes", "answered=0.8,busy=0.2",
                "--people", "press=0.7,wait=0.15,hangup=0.15",
                "--keys", "1=0.5,2=0.3,9=0.2",
                "--answer-delay", "0.05", "--talk-time", "0.05", "--speech-seconds", "0.05",
                "--press-delay", "0.05", "--time-scale", "0.05",
                "--duplicate-callbacks", "0.3", "--seed", "5",
            )  # fmt: skip
            fleet.start_receiver()
            fleet.start_worker("w1")
            fleet.start_worker("w2")
            fleet.start_beat()
            created = json.loads(
                fleet.cli(
                    "campaign", "create", "--name", "reminders", "--from", "+19195550000",
                    "--contacts", str(path), "--json", "--say", SAY,
                    "--keys", "1=confirmed,2=cancelled,9=opt-out", "--goodbye", "Goodbye {name}",
                    "--max-attempts", "2", "--retry-delay", "1",
                ).stdout
            )  # fmt: skip
            cid = str(created["id"])
            fleet.cli("campaign", "start", cid)
            # A worker dies mid-campaign (between answers and prompts, among others).
            wait_until(lambda: len(fleet.sim_calls()) >= 40, 60, what="40 calls")
            fleet.kill("w1")
            run_to_end(fleet, cid)
            # The campaign completes once every contact is final, and a key press w1 read
            # from the stream but never applied waits RECLAIM_IDLE (30 s) for another
            # worker: the export has every response once the stream is drained.
            export, calls, status = responses_settled(fleet, cid)

            # A second campaign with the same numbers: the opt-outs are suppressed at import.
            again = tmp_path / "again.csv"
            contacts(again, 150)
            second = json.loads(
                fleet.cli(
                    "campaign", "create", "--name", "again", "--from", "+19195550000",
                    "--contacts", str(again), "--json",
                ).stdout
            )  # fmt: skip
        except BaseException:
            print(fleet.logs())
            raise

    answered = [c for c in calls if c["outcome"] == "answered"]
    assert answered, "no call was answered"
    names = {n: f"Person {i}" for i, n in enumerate(numbers)}
    for call in answered:
        prompts = [a for a in call["audio"] if a.get("text", "").startswith("Hello")]
        # Exactly one prompt, made from this contact's own row.
        assert len(prompts) == 1, call
        assert prompts[0]["text"] == SAY.format(name=names[call["to"]]), call
        assert call["bxml_fetches"] >= 1 and call["control_requests"] == 0
    # The export's response is the label of the key the person pressed, per number.
    last = last_calls(calls)
    opted_out = set()
    for row in export:
        call = last[row["e164"]]
        assert row["call_id"] == call["id"]
        assert row["response"] == expected_response(call), (row, call)
        if call["outcome"] != "answered":
            continue
        assert row["status"] == "answered"
        assert row["digits"] == (call["pressed"] or ""), (row, call)
        if row["response"] == "opt-out":
            opted_out.add(row["e164"])
    counts: dict[str, int] = {}
    for row in export:
        if row["response"]:
            counts[row["response"]] = counts.get(row["response"], 0) + 1
    assert status["responses"] == counts
    assert opted_out, "nobody opted out: the mix should have made some"
    assert second["suppressed"] == len(opted_out)


def test_max_duration_hangs_up_people_who_stay_on_the_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "contacts.csv"
    contacts(path, 4)
    with Fleet(tmp_path / "fleet", env_for(redis_server, "script_maxdur")) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator(
                "--outcomes", "answered=1", "--people", "stay=1", "--answer-delay", "0.05",
                "--speech-seconds", "0.05", "--stay-seconds", "120", "--seed", "3",
            )  # fmt: skip
            fleet.start_receiver()
            fleet.start_worker("w1")
            fleet.start_beat()
            created = json.loads(
                fleet.cli(
                    "campaign", "create", "--name", "long", "--from", "+19195550000",
                    "--contacts", str(path), "--json", "--max-duration", "2",
                ).stdout
            )  # fmt: skip
            started = time.monotonic()
            fleet.cli("campaign", "start", str(created["id"]))
            run_to_end(fleet, str(created["id"]), timeout=60)
            took = time.monotonic() - started
            calls = fleet.sim_calls()
        except BaseException:
            print(fleet.logs())
            raise
    assert len(calls) == 4
    assert {c["hung_up_by"] for c in calls} == {"dialer-rest"}
    assert took < 30, "each call ended about 2 s after its answer, not at the 120 s cap"
