"""``dialer campaign start`` with real processes: the workers act on the command's nudge (a
Celery task message it writes without Celery, dialer.worker.nudge), and a nudge that
never arrives costs only the wait for the next tick."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from dialer.dev.fleet import Fleet, RedisServer, free_port, wait_until
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e


def contacts(path: Path, start: int, n: int) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone"])
        w.writerows([[f"+1312555{start + i:04d}"] for i in range(n)])
    return path


def create(fleet: Fleet, path: Path) -> str:
    out = fleet.cli(
        "campaign", "create", "--name", path.stem, "--from", "+19195550000",
        "--contacts", str(path), "--json",
    )  # fmt: skip
    return str(json.loads(out.stdout)["id"])


def test_the_workers_act_on_the_nudge_and_the_tick_covers_a_lost_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {
        "DIALER_DATABASE_URL": database_named("dialer_start"),
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 6)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "start",
        "DIALER_ACCOUNT_CPS": "100",
        "DIALER_NUMBER_CPS": "100",
    }
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator("--answer-delay", "0.05", "--talk-time", "0.05")
            fleet.start_receiver(workers=1)
            fleet.start_worker("w1")
            wait_until(lambda: "ready." in (tmp_path / "fleet" / "w1.log").read_text(), 60)
            # No beat: nothing but the command's nudge can release this campaign's work.
            first = create(fleet, contacts(tmp_path / "nudged.csv", 0, 20))
            out = fleet.cli("campaign", "start", first)
            assert out.stdout == f"campaign {first} is running\n" and out.stderr == ""
            wait_until(lambda: len(fleet.sim_calls()) == 20, 30, what="the nudged calls")

            # A nudge that cannot be sent: the command says so, and the tick releases.
            second = create(fleet, contacts(tmp_path / "ticked.csv", 100, 20))
            unreachable = {**fleet.env, "DIALER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/6"}
            fleet.env, kept = unreachable, fleet.env
            out = fleet.cli("campaign", "start", second, "--json")
            fleet.env = kept
            assert json.loads(out.stdout)["state"] == "running"
            assert "could not ask the workers to release work now" in out.stderr
            time.sleep(2)
            assert len(fleet.sim_calls()) == 20, "nothing released it yet"
            fleet.start_beat()
            wait_until(lambda: len(fleet.sim_calls()) == 40, 60, what="the tick's calls")
            assert len({c["to"] for c in fleet.sim_calls()}) == 40, "each number once"
        except BaseException:
            print(fleet.logs())
            raise
