"""Issue 4: four real workers hold a campaign's --cps exactly, against a carrier that
refuses anything faster (403 call-rate-limit over its 10-second window)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import requests

from benchmarks.pacing import busiest_second
from dialer.dev.fleet import Fleet, RedisServer, wait_until
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e


def test_four_workers_hold_five_calls_per_second(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {
        "DIALER_DATABASE_URL": database_named("dialer_pacing"),
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 4)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "pacing",
        "DIALER_ACCOUNT_CPS": "50",
        "DIALER_NUMBER_CPS": "50",
    }
    contacts = tmp_path / "contacts.csv"
    with contacts.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone"])
        w.writerows([[f"+1415200{i:04d}"] for i in range(110)])
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator("--rate", "5", "--answer-delay", "0.05", "--talk-time", "0.05")
            fleet.start_receiver(workers=1)
            for n in range(4):
                fleet.start_worker(f"w{n}", concurrency=8)
            fleet.start_beat()
            cid = str(
                json.loads(
                    fleet.cli(
                        "campaign",
                        "create",
                        "--name",
                        "paced",
                        "--from",
                        "+19195550000",
                        "--contacts",
                        str(contacts),
                        "--cps",
                        "5",
                        "--json",
                    ).stdout
                )["id"]
            )
            fleet.cli("campaign", "start", cid)

            def done() -> bool:
                st = json.loads(fleet.cli("campaign", "status", cid, "--json").stdout)
                return st["state"] == "completed"

            wait_until(done, 120, interval=1, what="the paced campaign to complete")
            calls = fleet.sim_calls()
            stats = requests.get(fleet.sim_url + "/_sim/stats", timeout=5).json()
        except BaseException:
            print(fleet.logs())
            raise
    times = sorted(c["created_at"] for c in calls)
    assert len(times) == 110
    assert stats["refused"] == {}, f"the carrier refused requests: {stats['refused']}"
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved == pytest.approx(5.0, rel=0.05), f"achieved {achieved:.3f}/s"
    assert busiest_second(times) <= 6
