"""Chaos: a campaign through everything production throws at a fleet.

    python benchmarks/chaos.py                 # 10,000 contacts
    python benchmarks/chaos.py --contacts 1000 # the size the test suite runs

Real processes on loopback: the simulator injecting ambiguous timeouts, 500s, 503s,
rate-limit 403s, 429s, duplicate and reordered callbacks; the receiver; two workers and
beat on a private PostgreSQL, one worker and beat through PgBouncer in transaction mode
(``DIALER_DATABASE_POOLER=transaction``), the other worker directly; a private Redis
with the append-only file, as docker-compose.yml runs it. Mid-campaign, in turn: a worker SIGKILLed; PostgreSQL
stopped as a crash stops it (every connection cut) and kept down 10 s; Redis restarted
from its append-only file; the carrier cut off for 30 s (connections refused, open ones
reset); Redis crashed and restarted with its data gone (every queued message and event
lost); the worker SIGKILLed again. It prints contacts, creates, extra dials, missing
dials, contacts not final, events refused: all zero but the first two when nothing is
lost or repeated, and the export must match the simulator's record of every call.

Needs the ``postgres`` (initdb, pg_ctl), ``pgbouncer`` and ``redis-server`` binaries.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from dialer.dev.cutoff import Cutoff
from dialer.dev.databases import PgBouncer, PostgresServer
from dialer.dev.fleet import Fleet, RedisServer, free_port, fresh_database, wait_until
from dialer.store.dialects.postgresql import PLANNER_SETTINGS
from dialer.store.models import Attempt

RETRYABLE = {"busy", "no-answer", "congestion"}
FINAL = {"answered": "answered", "rejected": "unanswered", "unallocated": "failed"}
MAX_ATTEMPTS = 3


@dataclass
class Report:
    contacts: int
    creates: int
    extra_dials: int
    missing_dials: int
    not_final: int
    events_refused: int
    export_mismatches: int
    unknown_calls: int
    seconds: float
    callbacks_undelivered: int
    # Per fault, seconds from the service's return (the fault's end) to the next call
    # the carrier created: how long the fleet took to resume.
    resumed_after: dict[str, float]


def expected_creates(outcomes: list[str]) -> int:
    """How many calls the retry policy makes for this sequence of outcomes."""
    for i, outcome in enumerate(outcomes[:MAX_ATTEMPTS]):
        if outcome not in RETRYABLE:
            return i + 1
    return MAX_ATTEMPTS


def run_chaos(
    contacts: int,
    workdir: Path,
    *,
    cps: float = 60.0,
    redis_down: float = 15.0,
    postgres_down: float = 10.0,
    carrier_down: float = 30.0,
    timeout: float = 900.0,
    log: callable = print,  # type: ignore[valid-type]
) -> Report:
    postgres = PostgresServer()
    postgres.start()
    bouncer = PgBouncer(postgres)
    bouncer.start()
    fresh_database(postgres.database("chaos"))
    # What an operator does once behind a pooler (docs/operations.md, "Behind PgBouncer").
    admin = create_engine(postgres.database("chaos"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for setting in PLANNER_SETTINGS.items():
            conn.execute(text("ALTER DATABASE chaos SET {} = '{}'".format(*setting)))
    admin.dispose()
    redis = RedisServer(free_port(), data_dir=workdir / "redis")
    redis.start()
    env = {
        "DIALER_DATABASE_URL": bouncer.database("chaos"),
        "DIALER_DATABASE_POOLER": "transaction",
        "DIALER_BROKER_URL": redis.url,
        "DIALER_REDIS_URL": redis.url,
        "CATAPULT_USER_ID": "u-sim",
        "CATAPULT_API_TOKEN": "sim-token",
        "CATAPULT_API_SECRET": "sim-secret",
        "DIALER_CALLBACK_SECRET": "chaos-secret",
        "DIALER_ACCOUNT_CPS": str(cps),
        "DIALER_NUMBER_CPS": str(cps),
        # The simulator here puts no limit on reads: an account whose non-create limit
        # was raised as far as its creates'. At the default 1 read a second the sweep
        # recovers the calls whose callbacks the Redis restart lost one a second, which
        # is the carrier's limit, not what this run tests.
        "DIALER_ACCOUNT_RPS": str(cps),
        "DIALER_HTTP_TIMEOUT": "2",
    }
    path = workdir / "contacts.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "ref"])
        for i in range(contacts):
            w.writerow(
                [
                    f"+1{212 + (i // 8_000_000) * 100}{200 + (i // 10_000) % 800:03d}"
                    f"{i % 10_000:04d}",
                    f"r{i}",
                ]
            )
    direct = {"DIALER_DATABASE_URL": postgres.database("chaos"), "DIALER_DATABASE_POOLER": "none"}
    # The checks read the server directly, not through the pooler under test.
    engine = create_engine(postgres.database("chaos"), pool_pre_ping=True)
    started = time.monotonic()
    say = log

    def log(message: str) -> None:  # type: ignore[no-redef]
        say(f"[{time.monotonic() - started:5.0f} s] {message}")

    fleet = Fleet(workdir / "fleet", env)
    carrier: Cutoff | None = None
    returns: list[tuple[str, float]] = []
    try:
        fleet.cli("db", "upgrade")
        sim_url = fleet.start_simulator(
            "--outcomes",
            "answered=0.5,busy=0.2,no-answer=0.15,rejected=0.1,congestion=0.05",
            "--answer-delay",
            "0.1",
            "--talk-time",
            "0.2",
            "--no-answer-delay",
            "0.5",
            "--fault-ambiguous",
            "0.03",
            "--ambiguous-hold",
            "4",
            "--fault-500",
            "0.02",
            "--fault-503",
            "0.02",
            "--fault-rate-limit",
            "0.02",
            "--fault-429",
            "0.02",
            "--duplicate-callbacks",
            "0.1",
            "--reorder-callbacks",
            "0.1",
            "--callback-retries",
            "8",
            "--seed",
            "3",
        )
        # The fleet reaches the carrier through a relay that can cut it off; the
        # simulator's callbacks still reach the receiver directly.
        carrier = Cutoff(("127.0.0.1", int(sim_url.rsplit(":", 1)[1]))).start()
        fleet.env["CATAPULT_API_URL"] = carrier.url
        fleet.start_receiver()
        fleet.start_worker("w1")
        # w2 reaches PostgreSQL directly, as a fleet without a pooler does: its pooled
        # connections all break at the restart, where w1's (to PgBouncer) wait.
        fleet.start_worker("w2", env=direct)
        fleet.start_beat()
        report = json.loads(
            fleet.cli(
                "campaign",
                "create",
                "--name",
                "chaos",
                "--from",
                "+19195550000",
                "--contacts",
                str(path),
                "--max-attempts",
                str(MAX_ATTEMPTS),
                "--retry-delay",
                "2",
                "--call-timeout",
                "10",
                "--tag-field",
                "ref",
                "--json",
            ).stdout
        )
        cid = str(report["id"])
        fleet.cli("campaign", "start", cid)

        def created() -> int:
            try:
                with engine.connect() as conn:
                    return (
                        conn.scalar(
                            select(func.count())
                            .select_from(Attempt)
                            .where(Attempt.call_id.is_not(None))
                        )
                        or 0
                    )
            except OperationalError:
                return -1  # the server is down: not there yet

        def kill_worker() -> None:
            log(f"SIGKILL worker w1 at {created()} calls")
            fleet.kill("w1")
            time.sleep(1)
            fleet.start_worker("w1")
            returns.append(("worker killed", time.time()))

        def restart_postgres() -> None:
            log(f"PostgreSQL down (immediate) for {postgres_down:.0f} s at {created()} calls")
            postgres.stop("immediate")
            time.sleep(postgres_down)
            postgres.start()
            returns.append(("postgres restart", time.time()))
            log("PostgreSQL back")

        def restart_redis() -> None:
            log(f"Redis restarted from its append-only file at {created()} calls")
            redis.stop(graceful=True)
            time.sleep(2)
            redis.start()
            returns.append(("redis restart (aof)", time.time()))

        def cut_carrier() -> None:
            assert carrier is not None
            log(f"carrier cut off for {carrier_down:.0f} s at {created()} calls")
            carrier.cut()
            time.sleep(carrier_down)
            carrier.restore()
            returns.append(("carrier cut off", time.time()))
            log("carrier back")

        def lose_redis() -> None:
            log(f"Redis crashed, its data lost, down {redis_down:.0f} s at {created()} calls")
            redis.stop()
            shutil.rmtree(workdir / "redis")
            time.sleep(redis_down)
            redis.start()
            returns.append(("redis data lost", time.time()))
            log("Redis back, empty")

        expected_total = contacts * 1.5
        for share, fault in (
            (0.12, kill_worker),
            (0.24, restart_postgres),
            (0.36, restart_redis),
            (0.48, cut_carrier),
            (0.62, lose_redis),
            (0.75, kill_worker),
        ):
            wait_until(
                lambda s=share: created() >= expected_total * s,
                timeout,
                interval=0.2,
                what=f"{share:.0%} of the calls",
            )
            fault()

        def finished() -> bool:
            st = json.loads(fleet.cli("campaign", "status", cid, "--json").stdout)
            return st["state"] == "completed"

        wait_until(finished, timeout, interval=2, what="the campaign to complete")
        seconds = time.monotonic() - started
        export = list(csv.DictReader(io.StringIO(fleet.cli("campaign", "export", cid).stdout)))
        calls = fleet.sim_calls()
        with engine.connect() as conn:
            ours = set(conn.scalars(select(Attempt.call_id).where(Attempt.call_id.is_not(None))))
    except BaseException:
        log(fleet.logs())
        log("----- postgres -----\n" + postgres.log())
        log("----- pgbouncer -----\n" + bouncer.log())
        raise
    finally:
        fleet.close()
        if carrier is not None:
            carrier.close()
        redis.stop()
        engine.dispose()
        bouncer.close()
        postgres.close()

    by_number: dict[str, list[dict]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c["created_at"]):
        by_number[call["to"]].append(call)
    extra = missing = mismatches = not_final = 0
    for row in export:
        made = by_number.get(row["e164"], [])
        want = expected_creates([c["outcome"] for c in made]) if made else 1
        extra += max(0, len(made) - want)
        missing += max(0, want - len(made))
        if row["status"] in ("pending", "dialing"):
            not_final += 1
        last = made[-1] if made else None
        status = FINAL.get(last["outcome"], "unanswered") if last else None
        if (
            last is None
            or row["call_id"] != last["id"]
            or int(row["attempts"]) != len(made)
            or row["status"] != status
        ):
            mismatches += 1
    made_at = sorted(c["created_at"] for c in calls)
    resumed: dict[str, float] = {}
    for name, back in returns:
        after = next((t for t in made_at if t >= back), None)
        key = name if name not in resumed else f"{name} (2)"
        resumed[key] = round(after - back, 1) if after is not None else float("inf")
    return Report(
        contacts=len(export),
        creates=len(calls),
        extra_dials=extra,
        missing_dials=missing,
        not_final=not_final,
        events_refused=sum(c.get("refused", 0) for c in calls),
        export_mismatches=mismatches,
        unknown_calls=len({c["id"] for c in calls} ^ ours),
        seconds=round(seconds, 1),
        callbacks_undelivered=sum(len(c.get("undelivered", [])) for c in calls),
        resumed_after=resumed,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--cps", type=float, default=100.0)
    p.add_argument("--redis-down", type=float, default=30.0)
    p.add_argument("--postgres-down", type=float, default=10.0)
    p.add_argument("--carrier-down", type=float, default=30.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dialer-chaos-") as tmp:
        report = run_chaos(
            args.contacts,
            Path(tmp),
            cps=args.cps,
            redis_down=args.redis_down,
            postgres_down=args.postgres_down,
            carrier_down=args.carrier_down,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    for key, value in asdict(report).items():
        print(f"{key:>22}: {value}")
    bad = (
        report.extra_dials,
        report.missing_dials,
        report.not_final,
        report.events_refused,
        report.export_mismatches,
        report.unknown_calls,
    )
    return 0 if not any(bad) else 1


if __name__ == "__main__":
    sys.exit(main())
