"""Pause and cancel under load, with real workers: once the command returns, no new
call is created for the campaign; resume carries on where it stopped."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from dialer.dev.fleet import Fleet, RedisServer, wait_until
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e


def write(path: Path, start: int, n: int) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone"])
        w.writerows(
            [[f"+1312{200 + (start + i) // 10000:03d}{(start + i) % 10000:04d}"] for i in range(n)]
        )
    return path


def test_pause_resume_and_cancel_hold_under_load(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {
        "DIALER_DATABASE_URL": database_named("dialer_controls"),
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 3)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "controls",
        "DIALER_ACCOUNT_CPS": "100",
        "DIALER_NUMBER_CPS": "100",
    }
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator("--answer-delay", "0.05", "--talk-time", "0.05")
            fleet.start_receiver(workers=1)
            fleet.start_worker("w1")
            fleet.start_worker("w2")
            fleet.start_beat()
            ids = []
            # The cancelled one goes slowly, so most of it is still to dial when the
            # cancel comes, however slow the machine is.
            for name, start, cps in (("paused", 0, "15"), ("cancelled", 1000, "5")):
                out = fleet.cli(
                    "campaign",
                    "create",
                    "--name",
                    name,
                    "--from",
                    "+19195550000",
                    "--contacts",
                    str(write(tmp_path / f"{name}.csv", start, 300)),
                    "--cps",
                    cps,
                    "--json",
                )
                ids.append(str(json.loads(out.stdout)["id"]))
                fleet.cli("campaign", "start", ids[-1])
            wait_until(lambda: len(fleet.sim_calls()) >= 40, 60, what="calls to start")
            fleet.cli("campaign", "pause", ids[0])
            paused_at = time.time()
            fleet.cli("campaign", "cancel", ids[1])
            cancelled_at = time.time()
            time.sleep(4)
            calls = fleet.sim_calls()
            late = [
                c
                for c in calls
                if (c["to"] <= "+13122000299" and c["created_at"] > paused_at)
                or (c["to"] >= "+13122001000" and c["created_at"] > cancelled_at)
            ]
            assert late == [], f"{len(late)} calls created after pause/cancel returned"
            cancelled = json.loads(fleet.cli("campaign", "status", ids[1], "--json").stdout)
            assert cancelled["state"] == "cancelled"
            assert cancelled["contacts"]["pending"] == 0
            # Every contact it had not dialed is cancelled (the simulator answers all).
            dialed = {c["to"] for c in calls if c["to"] >= "+13122001000"}
            assert cancelled["contacts"]["cancelled"] == 300 - len(dialed) > 0

            fleet.cli("campaign", "resume", ids[0])

            def done() -> bool:
                st = json.loads(fleet.cli("campaign", "status", ids[0], "--json").stdout)
                return st["state"] == "completed"

            wait_until(done, 120, interval=1, what="the resumed campaign to complete")
            calls = fleet.sim_calls()
        except BaseException:
            print(fleet.logs())
            raise
    per_number = Counter(c["to"] for c in calls if c["to"] <= "+13122000299")
    assert len(per_number) == 300 and set(per_number.values()) == {1}, (
        "every contact of the resumed campaign dialed exactly once"
    )
