"""Pacing across the fleet: 1, 2 and 4 worker processes at 1, 10 and 50 calls/s.

    python benchmarks/pacing.py
    python benchmarks/pacing.py --workers 4 --rates 50 --seconds 30
    python benchmarks/pacing.py --pools            # caller-id pools of 1, 5 and 20 numbers
    python benchmarks/pacing.py --pools 5 --seconds 20

``--pools``: campaigns whose caller-id pool has 1, 5 and 20 numbers, at
DIALER_NUMBER_CPS=1 and a high account rate, against a simulator that refuses more than 1
call/s per number (403 call-rate-limit over its 10-second window); per number and
overall: target, achieved, the busiest 1-second window, and the carrier's 403s. Two
workers; under a minute by default (``--seconds 5`` of calls per pool).

For each combination a campaign with ``--cps TARGET`` runs against the simulator set
to refuse anything faster (403 call-rate-limit over its 10-second window), and the
script prints: target, achieved (creates per second from the first to the last call,
over a run of at least 10 s), the busiest 1-second window, and the carrier's 403s.

Needs PostgreSQL (``--database-url``; dropped and created) and ``redis-server``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import requests

from dialer.dev.fleet import Fleet, RedisServer, free_port, fresh_database, wait_until


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def achieved_rate(times: list[float]) -> float:
    """Calls per second from the first create to the last (runs last 10 s or more)."""
    times = sorted(times)
    return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


def run(
    workers: int, rates: list[float], seconds: float, database_url: str, workdir: Path
) -> list[dict[str, float]]:
    redis = RedisServer(free_port())
    redis.start()
    env = {
        "DIALER_DATABASE_URL": fresh_database(database_url),
        "DIALER_BROKER_URL": redis.url,
        "CATAPULT_USER_ID": "u-sim",
        "CATAPULT_API_TOKEN": "sim-token",
        "CATAPULT_API_SECRET": "sim-secret",
        "DIALER_CALLBACK_SECRET": "pacing",
        "DIALER_ACCOUNT_CPS": "1000",
        "DIALER_NUMBER_CPS": "1000",
    }
    rows = []
    fleet = Fleet(workdir / f"w{workers}", env)
    try:
        fleet.cli("db", "upgrade")
        fleet.start_simulator("--answer-delay", "0.05", "--talk-time", "0.05")
        fleet.start_receiver()
        for n in range(workers):
            fleet.start_worker(f"w{n}")
        fleet.start_beat()
        for i, rate in enumerate(rates):
            requests.post(fleet.sim_url + "/_sim/reset", timeout=10)
            requests.post(fleet.sim_url + "/_sim/config", json={"rate": rate}, timeout=10)
            path = workdir / f"w{workers}-{rate}.csv"
            count = max(15, int(rate * seconds))
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["phone"])
                w.writerows(
                    [[f"+1{312 + i}{200 + n // 10000:03d}{n % 10000:04d}"] for n in range(count)]
                )
            cid = str(
                json.loads(
                    fleet.cli(
                        "campaign",
                        "create",
                        "--name",
                        f"pace-{rate}",
                        "--from",
                        "+19195550000",
                        "--contacts",
                        str(path),
                        "--cps",
                        str(rate),
                        "--json",
                    ).stdout
                )["id"]
            )
            fleet.cli("campaign", "start", cid)
            wait_until(
                lambda c=cid: (
                    json.loads(fleet.cli("campaign", "status", c, "--json").stdout)["state"]
                    == "completed"
                ),
                seconds * 4 + 60,
                interval=1,
                what=f"the {rate}/s campaign",
            )
            times = [c["created_at"] for c in fleet.sim_calls()]
            refused = requests.get(fleet.sim_url + "/_sim/stats", timeout=10).json()["refused"]
            rows.append(
                {
                    "workers": workers,
                    "target": rate,
                    "calls": len(times),
                    "achieved": round(achieved_rate(times), 3),
                    "busiest_1s": busiest_second(times),
                    "carrier_403s": sum(n for k, n in refused.items() if k.startswith("403")),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        fleet.close()
        redis.stop()
    return rows


def pool_rate(times: list[float], number_cps: float = 1.0) -> float:
    """A pool's calls per second: its N numbers start together, so (calls - 1) over the
    span would count N - 1 calls in no time; each call is given its number's interval."""
    return len(times) / max(max(times) - min(times) + 1.0 / number_cps, 1e-9)


def run_pools(
    sizes: list[int], seconds: float, database_url: str, workdir: Path
) -> list[dict[str, object]]:
    """One fleet; a campaign per pool size, each number at 1 call/s."""
    redis = RedisServer(free_port())
    redis.start()
    env = {
        "DIALER_DATABASE_URL": fresh_database(database_url),
        "DIALER_BROKER_URL": redis.url,
        "CATAPULT_USER_ID": "u-sim",
        "CATAPULT_API_TOKEN": "sim-token",
        "CATAPULT_API_SECRET": "sim-secret",
        "DIALER_CALLBACK_SECRET": "pacing",
        "DIALER_ACCOUNT_CPS": "1000",
        "DIALER_NUMBER_CPS": "1",
    }
    rows: list[dict[str, object]] = []
    fleet = Fleet(workdir / "pools", env)
    try:
        fleet.cli("db", "upgrade")
        fleet.start_simulator("--number-rate", "1", "--answer-delay", "0.05", "--talk-time", "0.05")
        fleet.start_receiver()
        for n in range(2):
            fleet.start_worker(f"w{n}")
        fleet.start_beat()
        for size in sizes:
            requests.post(fleet.sim_url + "/_sim/reset", timeout=10)
            pool = [f"+1919555{9000 + i:04d}" for i in range(size)]
            path = workdir / f"pool-{size}.csv"
            count = max(8, int(size * seconds))
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["phone"])
                w.writerows([[f"+1{312 + n // 10000}200{n % 10000:04d}"] for n in range(count)])
            out = fleet.cli(
                "campaign", "create", "--name", f"pool-{size}", "--from", ",".join(pool),
                "--contacts", str(path), "--json",
            )  # fmt: skip
            cid = str(json.loads(out.stdout)["id"])
            fleet.cli("campaign", "start", cid)
            wait_until(
                lambda c=cid: (
                    json.loads(fleet.cli("campaign", "status", c, "--json").stdout)["state"]
                    == "completed"
                ),
                seconds * 4 + 60,
                interval=1,
                what=f"the pool of {size}",
            )
            calls = fleet.sim_calls()
            refused = requests.get(fleet.sim_url + "/_sim/stats", timeout=10).json()["refused"]
            by_number: dict[str, list[float]] = {n: [] for n in pool}
            for call in calls:
                by_number.setdefault(call["from"], []).append(call["created_at"])
            times = [c["created_at"] for c in calls]
            for number, ts in by_number.items():
                rows.append(
                    {"pool": size, "number": number, "target": 1.0, "calls": len(ts),
                     "achieved": round(achieved_rate(ts), 3) if len(ts) > 1 else 0.0,
                     "busiest_1s": busiest_second(ts), "carrier_403s": ""}
                )  # fmt: skip
            rows.append(
                {"pool": size, "number": "overall", "target": float(size), "calls": len(times),
                 "achieved": round(pool_rate(times), 3), "busiest_1s": busiest_second(times),
                 "carrier_403s": sum(n for k, n in refused.items() if k.startswith("403"))}
            )  # fmt: skip
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        fleet.close()
        redis.stop()
    return rows


def print_pools(rows: list[dict[str, object]]) -> None:
    print(
        f"{'pool':>4} {'number':>13} {'calls':>5} {'target/s':>8} {'achieved/s':>10} "
        f"{'busiest 1 s':>11} {'carrier 403s':>12}"
    )
    for r in rows:
        print(
            f"{r['pool']:>4} {r['number']!s:>13} {r['calls']:>5} {r['target']:>8g} "
            f"{r['achieved']:>10.3f} {r['busiest_1s']:>11} {r['carrier_403s']!s:>12}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--rates", type=float, nargs="*", default=[1, 10, 50])
    p.add_argument("--seconds", type=float, help="length of each run (>= 10; default 15, pools 5)")
    p.add_argument(
        "--pools",
        type=int,
        nargs="*",
        help="caller-id pool sizes instead (none given: 1 5 20), each number at 1 call/s",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "DIALER_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/dialer_pacing"
        ),
    )
    args = p.parse_args()
    if args.pools is not None:
        with tempfile.TemporaryDirectory(prefix="dialer-pacing-") as tmp:
            pool_rows = run_pools(
                args.pools or [1, 5, 20], args.seconds or 5, args.database_url, Path(tmp)
            )
        print(
            f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}"
        )
        print_pools(pool_rows)
        return 0
    args.seconds = args.seconds or 15
    rows = []
    with tempfile.TemporaryDirectory(prefix="dialer-pacing-") as tmp:
        for workers in args.workers:
            rows += run(workers, args.rates, args.seconds, args.database_url, Path(tmp))
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        f"{'workers':>7} {'target/s':>8} {'achieved/s':>10} {'busiest 1 s':>11} "
        f"{'carrier 403s':>12}"
    )
    for r in rows:
        print(
            f"{r['workers']:>7} {r['target']:>8g} {r['achieved']:>10.3f} "
            f"{r['busiest_1s']:>11} {r['carrier_403s']:>12}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
