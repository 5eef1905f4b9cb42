"""Real processes: a campaign whose calling window excludes the recipients' local time
creates no call while its contacts wait, and dials them once the window is widened."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dialer.dev.fleet import Fleet, RedisServer, wait_until
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e

NUMBERS = [f"+1212555{i:04d}" for i in range(30)]  # New York


def test_a_shut_window_holds_every_call_until_it_is_widened(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {
        "DIALER_DATABASE_URL": database_named("dialer_window"),
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 4)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "window",
        "DIALER_ACCOUNT_CPS": "50",
        "DIALER_NUMBER_CPS": "50",
    }
    contacts = tmp_path / "contacts.csv"
    with contacts.open("w", newline="") as f:
        csv.writer(f).writerows([["phone"], *[[n] for n in NUMBERS]])
    local = datetime.now(ZoneInfo("America/New_York"))
    shut = f"{(local + timedelta(hours=2)):%H:%M}-{(local + timedelta(hours=3)):%H:%M}"
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator("--answer-delay", "0.05", "--talk-time", "0.05")
            fleet.start_receiver(workers=1)
            fleet.start_worker("w1")
            fleet.start_beat()
            out = fleet.cli(
                "campaign", "create", "--name", "window", "--from", "+19195550000",
                "--contacts", str(contacts), "--window", shut, "--json",
            )  # fmt: skip
            cid = str(json.loads(out.stdout)["id"])
            fleet.cli("campaign", "start", cid)

            def status() -> dict:
                return json.loads(fleet.cli("campaign", "status", cid, "--json").stdout)

            wait_until(lambda: status()["window"]["waiting"] == 30, 30, what="contacts to wait")
            time.sleep(4)  # several ticks and sweeps with the window shut
            assert fleet.sim_calls() == [], "no call while the window is shut"
            st = status()
            assert st["contacts"]["pending"] == 30 and st["state"] == "running"
            opening = datetime.fromisoformat(st["window"]["next_opening"])
            assert timedelta(hours=1) < opening - datetime.now(opening.tzinfo) < timedelta(hours=3)
            text = fleet.cli("campaign", "status", cid).stdout
            assert "30 wait for their calling window" in text

            fleet.cli("campaign", "update", cid, "--window", "00:00-24:00")
            wait_until(lambda: status()["state"] == "completed", 90, interval=1,
                       what="the widened campaign to complete")  # fmt: skip
            calls = fleet.sim_calls()
        except BaseException:
            print(fleet.logs())
            raise
    per_number = Counter(c["to"] for c in calls)
    assert set(per_number) == set(NUMBERS)
