"""Worker memory: a 10,000- and a 1,000,000-contact campaign, same window, same fleet.

    python benchmarks/worker_memory.py --seconds 60
    python benchmarks/worker_memory.py --seconds 60 --cps 50     # paced instead

For each size a fresh fleet (simulator, receiver, 2 workers, beat) runs the campaign for
``--seconds`` (neither needs to finish), unpaced unless ``--cps`` is given, sampling
each worker's RSS every second. Steady state is the median of the last third of the
window. The million-contact campaign is the one ``status.py`` imports, cloned. Also
printed: what the broker holds at the end (messages queued and unacknowledged, Redis
memory), since releasing work faster than it is sent grows the queue instead, and
``api.status`` timed on the running campaign (not vacuumed, rows changing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    MILLION_DB,
    Bench,
    log,
    median,
    million_campaign,
    write_contacts,
)
from benchmarks.machine import describe, load_average, rss_mb, tree  # noqa: E402

SIM_FLAGS = ["--answer-delay", "0.05", "--talk-time", "0.05"]


def broker(bench: Bench) -> dict[str, float]:
    import redis

    r = redis.Redis.from_url(bench.redis.url)
    return {
        "dial queued": int(r.llen("dialer.dial")),
        "events queued": bench.stream_backlog(),  # the event stream, not a Celery queue
        "unacked": int(r.hlen("unacked")),
        "redis MB": int(r.info("memory")["used_memory"]) / 1e6,
    }


def status_ms(bench: Bench, campaign_id: int) -> float:
    """api.status in a subprocess-free way: the same two queries, timed here."""
    from sqlalchemy import text

    started = time.perf_counter()
    with bench.engine.connect() as conn:
        conn.execute(
            text("SELECT status, count(*) FROM contact WHERE campaign_id = :c GROUP BY status"),
            {"c": campaign_id},
        ).all()
        conn.execute(
            text("SELECT count(*) FROM attempt WHERE campaign_id = :c AND call_id IS NOT NULL"),
            {"c": campaign_id},
        ).scalar()
    return 1000 * (time.perf_counter() - started)


def run(bench: Bench, campaign_id: int, args: argparse.Namespace) -> dict[str, object]:
    bench.up(workers=2, simulator=SIM_FLAGS)
    bench.fleet.cli("campaign", "start", str(campaign_id))
    workers = {n: bench.pid(n) for n in bench.worker_names()}
    samples: dict[str, list[float]] = {n: [] for n in workers}
    statuses = []
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        time.sleep(1.0)
        for name, pid in workers.items():
            samples[name].append(sum(rss_mb(p) for p in tree(pid)))
    for _ in range(5):
        statuses.append(status_ms(bench, campaign_id))
    counts = bench.attempt_counts(campaign_id)
    tail = {n: v[len(v) * 2 // 3 :] for n, v in samples.items()}
    return {
        "steady": {n: median(v) for n, v in tail.items()},
        "max": {n: max(v) for n, v in samples.items()},
        "start": {n: v[0] for n, v in samples.items()},
        "broker": broker(bench),
        "calls": sum(v for k, v in counts.items() if k in ("created", "answered", "ended")),
        "status_ms": statuses,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--cps", type=float, help="pace the campaigns (default: unpaced)")
    args = p.parse_args()
    load_at_start = load_average()
    env = {}
    if args.cps:
        env = {"DIALER_ACCOUNT_CPS": str(args.cps), "DIALER_NUMBER_CPS": str(args.cps)}

    results = {}
    with Bench("dialer_bench_memory", env=env) as bench:
        path = write_contacts(bench.workdir / "contacts.csv", args.small)
        campaign_id = bench.create_campaign(path, "--tag-field", "ref")
        log(f"running the {args.small:,}-contact campaign for {args.seconds:g} s")
        results[f"{args.small:,}"] = run(bench, campaign_id, args)
        url = bench.db_url
    _, million_id, _ = million_campaign()
    log("cloning the million-contact campaign")
    with Bench("dialer_bench_memory", template=MILLION_DB, env=env) as bench:
        log(f"running the 1,000,000-contact campaign for {args.seconds:g} s")
        results["1,000,000"] = run(bench, million_id, args)

    pace = f"paced at {args.cps:g} calls/s" if args.cps else "unpaced"
    print(f"worker memory: 2 workers, {pace}, {args.seconds:g} s per campaign, RSS in MB")
    for size, r in results.items():
        steady, peak, first = r["steady"], r["max"], r["start"]  # type: ignore[index]
        per = ", ".join(
            f"{n} {steady[n]:.0f} (start {first[n]:.0f}, max {peak[n]:.0f})"
            for n in steady  # type: ignore[union-attr]
        )
        print(f"  {size:>9} contacts: steady {per}; {r['calls']:,} calls made")
        print(f"  {'':>9}           broker at the end: {r['broker']}")
        st = r["status_ms"]
        print(
            f"  {'':>9}           status queries while running: median {median(st):.0f} ms, "
            f"max {max(st):.0f} ms"
        )  # type: ignore[arg-type]
    small = median(list(results[f"{args.small:,}"]["steady"].values()))  # type: ignore[union-attr]
    large = median(list(results["1,000,000"]["steady"].values()))  # type: ignore[union-attr]
    print(
        f"steady-state worker RSS: {small:.0f} MB vs {large:.0f} MB -> "
        f"{100 * (large - small) / small:+.1f}% (target: within 10%)"
    )
    print(describe(url, load_at_start))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
