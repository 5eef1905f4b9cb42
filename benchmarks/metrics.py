"""What metrics cost: per hook call, per flush, per scrape on a large campaign.

    python benchmarks/metrics.py [--calls 200000] [--attempts 1000000] [--database-url URL]

1. The hooks on the dial and callback paths (``call_created``, ``callback``,
   ``event_applied`` with its lag histogram): CPU and wall time per call, with the
   flusher thread running against a private ``redis-server``; beside it, what one
   synchronous HINCRBY round trip per event would cost instead.
2. One flush of a second's worth of counts (one MULTI/EXEC).
3. The scrape on a campaign of ``--attempts`` finished attempts plus 2,000 in flight:
   the in-flight query alone, its plan, and the whole exposition.

Without ``--database-url`` the local ``dialer_bench_metrics`` database is dropped,
created and migrated.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime

import redis
from sqlalchemy import create_engine, text

from dialer import metrics, settings
from dialer.dev import fleet
from dialer.store import migrate

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/dialer_bench_metrics"


def per_call(fn, n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def hooks(redis_url: str, n: int) -> None:
    rec = metrics.Recorder(lambda: redis.Redis.from_url(redis_url))
    metrics.reset(rec)
    stamp = datetime.now(UTC).isoformat()
    print(f"hooks ({n:,} calls each, flusher running every {metrics.FLUSH_SECONDS:g} s):")
    for name, fn in [
        ("call_created", metrics.call_created),
        ("callback(200)", lambda: metrics.callback(200, "accepted", "hangup")),
        ("event_applied", lambda: metrics.event_applied("applied", stamp)),
    ]:
        cpu, wall = per_call(fn, n)
        print(f"  {name:<16} {cpu:6.2f} µs CPU  {wall:6.2f} µs wall")
    client = redis.Redis.from_url(redis_url)
    m = min(n, 20_000)
    cpu, wall = per_call(lambda: client.hincrby("bench:sync", "x", 1), m)
    print(f"  {'sync HINCRBY':<16} {cpu:6.2f} µs CPU  {wall:6.2f} µs wall   (the alternative)")
    rec.flush()
    # A busy second: 400 calls, their errors, 1,200 events, as distinct keys as it gets.
    for _ in range(400):
        metrics.call_created()
        metrics.rate_limit_wait("pace-sleep", 0.002)
    for i in range(1200):
        metrics.callback(200, "accepted", ("answer", "hangup", "timeout")[i % 3])
        metrics.event_applied(("applied", "repeat")[i % 2], stamp)
    keys = len(rec.pending())
    started = time.perf_counter()
    assert rec.flush()
    print(
        f"  one flush of a busy second ({keys} keys): {(time.perf_counter() - started) * 1e3:.2f} ms"
    )
    metrics.reset(None)


def scrape(database_url: str, attempts: int) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    live = 2000
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO campaign (name, from_number, state, region, phone_column, columns,"
                " tag_fields, max_attempts, retry_delay, timezone, rows, imported, invalid,"
                " duplicate, suppressed, created_at) VALUES ('bench', '+19195550000', 'running',"
                " 'US', 'phone', '[]', '[]', 3, 600, 'UTC', :n, :n, 0, 0, 0, now())"
            ),
            {"n": attempts},
        )
        conn.execute(
            text(
                "INSERT INTO contact (campaign_id, row, phone, e164, status, context, attempts)"
                " SELECT 1, g, '+1919' || lpad(g::text, 7, '0'), '+1919' || lpad(g::text, 7, '0'),"
                " 'answered', '{}', 1 FROM generate_series(1, :n) g"
            ),
            {"n": attempts},
        )
        conn.execute(
            text(
                "INSERT INTO attempt (contact_id, campaign_id, number, status, queued_at, sends,"
                " result) SELECT g, 1, 1, CASE WHEN g <= :live THEN"
                " (ARRAY['queued','sending','created','answered'])[1 + g % 4] ELSE 'ended' END,"
                " now(), 1, CASE WHEN g > :live THEN 'answered' END"
                " FROM generate_series(1, :n) g"
            ),
            {"n": attempts, "live": live},
        )
    with engine.begin() as conn:
        conn.execute(text("ANALYZE attempt"))
    print(f"scrape ({attempts:,} attempts, {live:,} in flight):")
    settings.override(settings.Settings(database_url=database_url, redis_url="memory://"))
    try:
        best = min(_timed(metrics.read_database) for _ in range(5))
        print(f"  in-flight query + campaigns: {best * 1e3:.2f} ms (best of 5)")
        with engine.connect() as conn:
            every = min(
                _timed(
                    lambda: conn.execute(
                        text("SELECT status, count(*) FROM attempt GROUP BY status")
                    ).all()
                )
                for _ in range(3)
            )
            print(f"  (every status, as a scrape does not: {every * 1e3:.0f} ms)")
            plan = conn.execute(
                text(
                    "EXPLAIN SELECT status, count(*) FROM attempt WHERE status IN"
                    " ('queued','sending','unknown','created','answered') GROUP BY status"
                )
            ).scalars()
            print("  plan: " + "\n        ".join(plan))
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.FleetCollector(dict, metrics.read_database))  # type: ignore[arg-type]
        best = min(_timed(lambda: generate_latest(registry)) for _ in range(5))
        print(f"  whole exposition (counters from a dict): {best * 1e3:.2f} ms (best of 5)")
    finally:
        settings.override(None)
    engine.dispose()


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    server = fleet.RedisServer()
    server.start()
    try:
        hooks(server.url, args.calls)
    finally:
        server.stop()
    url = args.database_url or fleet.fresh_database(DEFAULT_URL)
    scrape(url, args.attempts)


if __name__ == "__main__":
    main()
