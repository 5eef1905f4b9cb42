"""The whole dialer with real processes: simulator, receiver, two workers and beat.

A 1,000-row campaign with bad, repeated and do-not-call numbers runs to completion;
every contact ends in the status the simulator's outcomes imply under the retry
policy, each call the dialer made exists exactly once in the simulator's record, and
the export matches that record call id for call id.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from dialer.dev.fleet import Fleet, RedisServer, wait_until
from dialer.store.models import Attempt
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e

RETRYABLE = {"busy", "no-answer", "congestion"}
FINAL_FOR = {"answered": "answered", "rejected": "unanswered", "unallocated": "failed"}


def write_contacts(path: Path, dnc_path: Path) -> dict[str, int]:
    """1,000 rows: 940 good numbers, 20 invalid, 20 repeats (other spellings), 20 on DNC."""
    rng = random.Random(7)
    good = [f"+1919{200 + i // 10000:03d}{i % 10000:04d}" for i in range(960)]
    dnc = good[-20:]
    rows: list[list[str]] = []
    for i, number in enumerate(good):
        rows.append(
            [number if i % 2 else f"(919) {number[5:8]}-{number[8:]}", f"name{i}", f"acct-{i}"]
        )
    for i in range(20):
        rows.append(
            [rng.choice(["not a number", "12", "", "+1999", "abc-def"]), f"bad{i}", f"acct-bad-{i}"]
        )
    for i in range(20):
        rows.append([good[i * 7][2:], f"again{i}", f"acct-dup-{i}"])  # 919... without +1
    rng.shuffle(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "name", "account"])
        w.writerows(rows)
    with dnc_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number"])
        w.writerows([[n] for n in dnc])
    return {"rows": 1000, "invalid": 20, "duplicate": 20, "suppressed": 20, "imported": 940}


def test_campaign_runs_to_completion_with_real_processes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    db_url = database_named("dialer_e2e")
    env = {
        "DIALER_DATABASE_URL": db_url,
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 1)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "e2e-secret",
        "DIALER_ACCOUNT_CPS": "400",
        "DIALER_NUMBER_CPS": "400",
        "DIALER_HTTP_TIMEOUT": "5",
    }
    contacts, dnc = tmp_path / "contacts.csv", tmp_path / "dnc.csv"
    expected_report = write_contacts(contacts, dnc)
    with Fleet(tmp_path / "fleet", env) as fleet:
        try:
            fleet.cli("db", "upgrade")
            fleet.start_simulator(
                "--outcomes",
                "answered=0.55,busy=0.15,no-answer=0.1,rejected=0.1,"
                "congestion=0.05,unallocated=0.05",
                "--answer-delay",
                "0.05",
                "--talk-time",
                "0.05",
                "--no-answer-delay",
                "0.2",
                "--seed",
                "11",
            )
            fleet.start_receiver()
            fleet.start_worker("w1")
            fleet.start_worker("w2")
            fleet.start_beat()
            created = json.loads(
                fleet.cli(
                    "campaign",
                    "create",
                    "--name",
                    "e2e",
                    "--from",
                    "+19195550000",
                    "--contacts",
                    str(contacts),
                    "--dnc",
                    str(dnc),
                    "--max-attempts",
                    "3",
                    "--retry-delay",
                    "1",
                    "--call-timeout",
                    "30",
                    "--tag-field",
                    "account",
                    "--json",
                ).stdout
            )
            assert {k: created[k] for k in expected_report} == expected_report
            cid = str(created["id"])
            fleet.cli("campaign", "start", cid)

            def finished() -> dict | None:
                st = json.loads(fleet.cli("campaign", "status", cid, "--json").stdout)
                return st if st["state"] == "completed" else None

            status = wait_until(finished, 240, interval=1, what="the campaign to complete")
            export = list(csv.DictReader(fleet.cli("campaign", "export", cid).stdout.splitlines()))
            calls = fleet.sim_calls()
        except BaseException:
            print(fleet.logs())
            raise

    # Every row is in the export, in file order, with its context.
    assert len(export) == 1000 and status["total"] == 1000
    with contacts.open() as f:
        source = list(csv.DictReader(f))
    assert [r["phone"] for r in export] == [r["phone"] for r in source]
    assert [r["account"] for r in export] == [r["account"] for r in source]
    counts = status["contacts"]
    assert (counts["invalid"], counts["duplicate"], counts["suppressed"]) == (20, 20, 20)
    assert counts["pending"] == counts["dialing"] == 0

    # The simulator's record: each call once, to a number we meant to dial.
    by_number: dict[str, list[dict]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c["created_at"]):
        by_number[call["to"]].append(call)
    assert len({c["id"] for c in calls}) == len(calls)
    dialable = {
        r["e164"]: r for r in export if r["status"] not in ("invalid", "duplicate", "suppressed")
    }
    assert set(by_number) == set(dialable), "a number was skipped or an extra one was dialed"
    for number, row in dialable.items():
        made = by_number[number]
        outcomes = [c["outcome"] for c in made]
        assert int(row["attempts"]) == len(made), (number, outcomes, row)
        assert all(o in RETRYABLE for o in outcomes[:-1]), (number, outcomes)
        last = outcomes[-1]
        want = FINAL_FOR.get(last) or ("unanswered" if len(made) == 3 else "pending")
        assert row["status"] == want, (number, outcomes, row)
        assert row["call_id"] == made[-1]["id"]
        assert json.loads(made[-1]["tag"])["account"] == row["account"]
    # And the database holds exactly those calls, no more.
    engine = create_engine(db_url)
    with engine.connect() as conn:
        ids = set(conn.scalars(select(Attempt.call_id).where(Attempt.call_id.is_not(None))))
    engine.dispose()
    assert ids == {c["id"] for c in calls}
