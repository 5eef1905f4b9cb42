"""Issue 16 with real processes: caller-id pools paced per number, local presence, a
number the carrier refuses, and recorded calls' URLs and transcripts in the export.

One fleet (simulator, receiver, two workers, beat), DIALER_NUMBER_CPS=1 and a high
account rate; the simulator refuses more than 1 call/s per ``from`` number (403
call-rate-limit over its 10-second window) and refuses one number outright (403
number-access-denied)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import pytest
import requests

from benchmarks.pacing import achieved_rate, busiest_second
from dialer.dev.fleet import Fleet, RedisServer, wait_until
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e

POOL = [f"+1919555{9000 + i}" for i in range(5)]
REFUSED = "+13125559000"
LOCAL = ["+19195559100", "+17045559100", "+12125559100", REFUSED]


def _contacts(path: Path, numbers: list[str]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "name"])
        w.writerows([[n, f"n{i}"] for i, n in enumerate(numbers)])
    return path


def _run(fleet: Fleet, *create: str) -> tuple[str, dict, list[dict]]:
    cid = str(json.loads(fleet.cli("campaign", "create", *create, "--json").stdout)["id"])
    fleet.cli("campaign", "start", cid)

    def done() -> dict | None:
        st = json.loads(fleet.cli("campaign", "status", cid, "--json").stdout)
        return st if st["state"] in ("completed", "paused") else None

    status = wait_until(done, 120, interval=1, what=f"campaign {cid} to complete")
    rows = list(csv.DictReader(io.StringIO(fleet.cli("campaign", "export", cid).stdout)))
    return cid, status, rows


def test_pools_local_presence_refused_numbers_and_recordings(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {
        "DIALER_DATABASE_URL": database_named("pools"),
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 6)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "pools",
        "DIALER_ACCOUNT_CPS": "50",
        "DIALER_NUMBER_CPS": "1",
    }
    many = _contacts(tmp_path / "many.csv", [f"+1415200{i:04d}" for i in range(60)])
    # Six callees in each area code the local pool covers (one of them refused), and six
    # in one it does not.
    local = _contacts(
        tmp_path / "local.csv",
        [
            f"+1{code}555{2000 + i}"
            for code in ("919", "704", "212", "312", "415")
            for i in range(6)
        ],
    )
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator(
                "--number-rate", "1", "--answer-delay", "0.05", "--talk-time", "0.05",
                "--refuse-from", REFUSED,
            )  # fmt: skip
            fleet.start_receiver(workers=1)
            for n in range(2):
                fleet.start_worker(f"w{n}", concurrency=8)
            fleet.start_beat()
            # 1. A 5-number pool, recorded and transcribed.
            pool_id, pooled, exported = _run(
                fleet, "--name", "pool", "--from", ",".join(POOL), "--contacts", str(many),
                "--record", "--record-format", "mp3", "--transcribe",
                "--sip-header", "X-Campaign=pool", "--callback-timeout", "5000",
            )  # fmt: skip

            # The recording and transcription events come after the hangup that
            # completed the campaign: the export has them a moment later.
            def media_in() -> list[dict] | None:
                out = fleet.cli("campaign", "export", pool_id).stdout
                got = list(csv.DictReader(io.StringIO(out)))
                return got if all(r["transcript"] for r in got) else None

            try:
                exported = wait_until(media_in, 30, interval=0.5, what="transcripts")
            except TimeoutError:
                # Which calls lack one, and what the campaign says, ahead of the logs.
                out = fleet.cli("campaign", "export", pool_id).stdout
                print("without a transcript:", [
                    {k: r[k] for k in ("e164", "status", "call_id", "recording_url")}
                    for r in csv.DictReader(io.StringIO(out)) if not r["transcript"]
                ])  # fmt: skip
                print(fleet.cli("campaign", "status", pool_id).stdout)
                raise
            calls = fleet.sim_calls()
            stats = requests.get(fleet.sim_url + "/_sim/stats", timeout=5).json()
            requests.post(fleet.sim_url + "/_sim/reset", timeout=5)
            # 2. Local presence, one number refused by the carrier.
            _, localised, local_rows = _run(
                fleet, "--name", "local", "--from", ",".join(LOCAL), "--contacts", str(local),
                "--local-presence",
            )  # fmt: skip
        except BaseException:
            print(fleet.logs())
            raise

    # --- the pool: ~5 calls/s, never more than one a second per number, none refused.
    assert pooled["state"] == "completed"
    assert len(calls) == 60
    assert stats["refused"] == {}, f"the carrier refused requests: {stats['refused']}"
    by_number: dict[str, list[float]] = defaultdict(list)
    for call in calls:
        by_number[call["from"]].append(call["created_at"])
    assert set(by_number) == set(POOL)
    overall = achieved_rate([c["created_at"] for c in calls])
    print(f"pool of 5: {overall:.2f} calls/s; per number: "
          + ", ".join(f"{len(t)} calls, busiest {busiest_second(t)}" for t in by_number.values()))  # fmt: skip
    assert overall == pytest.approx(5.0, rel=0.12), f"achieved {overall:.2f}/s"
    assert all(busiest_second(t) <= 1 for t in by_number.values())
    assert {c["calls"] for c in pooled["caller_ids"]} == {len(t) for t in by_number.values()}
    assert sum(c["calls"] for c in pooled["caller_ids"]) == 60
    assert pooled["rules"]["record"] is True and pooled["rules"]["record_format"] == "mp3"
    # Every call carried the options; the export has each call's number, recording and
    # transcript.
    sim_from = {c["to"]: c["from"] for c in calls}
    for row in exported:
        assert row["from"] == sim_from[row["e164"]]
        assert row["recording_url"].endswith(f"/recordings/r-{row['call_id']}")
        assert row["transcript"].startswith(f"Simulated transcript of call {row['call_id']}")

    # --- local presence: every covered callee from its own area code; the refused
    # number left the pool and the campaign carried on.
    assert localised["state"] == "completed", localised.get("state_reason")
    for row in local_rows:
        assert row["status"] == "answered", row
        code = row["e164"][2:5]
        if code in ("919", "704", "212"):
            assert row["from"][2:5] == code, row
        assert row["from"] != REFUSED
    ids = {c["number"]: c for c in localised["caller_ids"]}
    assert ids[REFUSED]["state"] == "removed" and "number-access-denied" in ids[REFUSED]["reason"]
    assert ids[REFUSED]["calls"] == 0
    assert all(ids[n]["state"] == "active" for n in LOCAL[:3])
