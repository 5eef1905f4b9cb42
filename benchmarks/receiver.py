"""The callback receiver under load: events/s, acknowledgement latency, event-to-row lag.

    python benchmarks/receiver.py --rate 2500 --seconds 20
    python benchmarks/receiver.py --rate 0 --seconds 20     # as fast as it goes (closed loop)

The receiver runs as in production (``dialer receiver``: uvicorn, ``--receiver-workers``
processes) with ``--workers`` celery workers applying the events, on a fresh database
holding one campaign whose attempts all have a call on the wire (``created``), so every
event matches a row. A load generator in its own processes (``--clients`` processes x
``--connections`` keep-alive ``http.client`` connections each) posts authenticated
``answer`` then ``hangup`` callbacks, as the carrier sends them, at ``--rate`` events/s
in total (open loop: each event has a planned send time, and its latency counts from
then, so a receiver that falls behind is not flattered by a generator that waits).

Prints the events/s acknowledged (2xx), ack latency p50/p99/max from the planned time
(and from the actual send), the receiver's and the generator's CPU, and, once the
workers have drained (at most ``--drain`` s), the lag from receipt to applied
(``call_event.received_at`` -> ``applied_at``) p50/p99 and the workers' apply rate.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    CALLBACK_SECRET,
    FROM,
    Bench,
    log,
    median,
    percentile,
    write_contacts,
)
from benchmarks.machine import (  # noqa: E402
    CpuMeter,
    PostgresMeter,
    describe,
    load_average,
    system_cpu,
)

PATH = "/callbacks/catapult"


def prepare_calls(bench: Bench, campaign_id: int) -> list[tuple[int, str, str]]:
    """Every contact gets an attempt with a call on the wire; (attempt id, call id, to)."""
    with bench.engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO attempt (contact_id, campaign_id, number, status, call_id, tag,
                                     queued_at, sent_at, created_at, lease_until, sends)
                SELECT c.id, c.campaign_id, 1, 'created', 'c-bench' || lpad(c.id::text, 18, '0'),
                       NULL, now(), now(), now(), now() + interval '1 hour', 1
                FROM contact c WHERE c.campaign_id = :c AND c.status = 'pending'
                """
            ),
            {"c": campaign_id},
        )
        # The tag names the attempt, as the dialer's does.
        conn.execute(
            text(
                """UPDATE attempt SET tag = json_build_object('attempt', id, 'campaign',
                   campaign_id)::text WHERE campaign_id = :c"""
            ),
            {"c": campaign_id},
        )
        conn.execute(
            text(
                """UPDATE contact c SET status = 'dialing', due_at = NULL, attempts = 1,
                   last_attempt_id = a.id FROM attempt a
                   WHERE a.contact_id = c.id AND c.campaign_id = :c"""
            ),
            {"c": campaign_id},
        )
        rows = conn.execute(
            text(
                "SELECT a.id, a.call_id, c.e164 FROM attempt a JOIN contact c "
                "ON c.id = a.contact_id WHERE a.campaign_id = :c ORDER BY a.id"
            ),
            {"c": campaign_id},
        ).all()
    return [(int(a), str(b), str(c)) for a, b, c in rows]


def _iso(ts: float) -> str:
    ms = int(ts * 1000)
    return f"{datetime.fromtimestamp(ms // 1000, UTC):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _events(calls: list[tuple[int, str, str]], base: str) -> list[bytes]:
    """answer then hangup for each call, bodies as the simulator (and carrier) sends them."""
    out = []
    for attempt_id, call_id, to in calls:
        tag = json.dumps({"attempt": attempt_id, "campaign": 0}, separators=(",", ":"))
        common = {"from": FROM, "to": to, "callId": call_id, "callUri": f"{base}/{call_id}"}
        now = _iso(time.time())
        out.append(
            json.dumps(
                {"eventType": "answer", **common, "callState": "active", "time": now, "tag": tag}
            ).encode()
        )
        out.append(
            json.dumps(
                {
                    "eventType": "hangup",
                    **common,
                    "callState": "completed",
                    "cause": "NORMAL_CLEARING",
                    "time": now,
                    "tag": tag,
                }  # fmt: skip
            ).encode()
        )
    return out


def _client(
    url: str,
    calls: list[tuple[int, str, str]],
    connections: int,
    interval: float,
    start_at: float,
    stop_at: float,
    conn_out: mp.connection.Connection,
) -> None:
    """One generator process: ``connections`` threads, each posting its share of calls
    at one event per ``interval`` s from ``start_at`` (epoch), until ``stop_at``."""
    parts = urlsplit(url)
    auth = "Basic " + base64.b64encode(f"dialer:{CALLBACK_SECRET}".encode()).decode()
    headers = {"Content-Type": "application/json; charset=utf-8", "Authorization": auth}
    results: list[tuple[float, float, float, int]] = []  # planned, sent, done, status
    lock = threading.Lock()

    def run(i: int) -> None:
        mine = _events(calls[i::connections], "http://carrier/calls")
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        out = []
        # Threads are staggered across the interval so the process sends evenly.
        planned = start_at + interval * i / connections
        for body in mine:
            if planned >= stop_at or time.time() >= stop_at:
                break  # the window is over, whether or not the plan was kept
            delay = planned - time.time()
            if delay > 0:
                time.sleep(delay)
            sent = time.time()
            try:
                conn.request("POST", PATH, body, headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                status = 0
            out.append((planned, sent, time.time(), status))
            planned = planned + interval if interval else time.time()
        conn.close()
        with lock:
            results.extend(out)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn_out.send(results)
    conn_out.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=2500, help="events/s offered; 0: closed loop")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=2, help="load generator processes")
    p.add_argument("--connections", type=int, default=32, help="connections per process")
    p.add_argument("--receiver-workers", type=int, default=2, help="uvicorn processes")
    p.add_argument("--workers", type=int, default=2, help="celery workers applying events")
    p.add_argument("--drain", type=float, default=60.0, help="longest wait for the workers")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the receiver into DIR")
    args = p.parse_args()
    load_at_start = load_average()

    events_needed = int((args.rate or 5000) * args.seconds * 1.1) + 100
    env = {"CATAPULT_API_URL": "http://127.0.0.1:9"}  # nothing here may reach a carrier
    with Bench("dialer_bench_receiver", env=env) as bench:
        path = write_contacts(bench.workdir / "contacts.csv", events_needed // 2 + 1)
        campaign_id = bench.create_campaign(path, "--max-attempts", "1")
        calls = prepare_calls(bench, campaign_id)
        log(f"{len(calls):,} calls on the wire; starting the receiver and workers")
        # No beat: no tick, and no sweep reading these made-up calls from a carrier.
        bench.up(workers=args.workers, receiver_workers=args.receiver_workers, beat=False)
        url = bench.fleet.receiver_url

        total = args.clients * args.connections
        interval = total / args.rate if args.rate else 0.0
        start_at = time.time() + 3.0
        stop_at = start_at + args.seconds
        receiver = CpuMeter({"receiver": bench.pid("receiver")})
        workers = CpuMeter({n: bench.pid(n) for n in bench.worker_names()})
        services = CpuMeter({"redis": bench.redis.proc.pid})  # type: ignore[union-attr]
        postgres = PostgresMeter()
        ctx = mp.get_context("fork")
        pipes, procs = [], []
        for c in range(args.clients):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_client,
                args=(
                    url,
                    calls[c :: args.clients],
                    args.connections,
                    interval,
                    start_at,
                    stop_at,
                    send,
                ),  # fmt: skip
            )
            proc.start()
            pipes.append(recv)
            procs.append(proc)
        generator = CpuMeter({f"gen{i}": proc.pid for i, proc in enumerate(procs)})
        time.sleep(max(0.0, start_at - time.time()))
        receiver.start()
        workers.start()
        generator.start()
        services.start()
        postgres.start()
        busy0, total0 = system_cpu()
        spies = []
        if args.profile:  # after a warm-up: imports and first connections are not the point
            from benchmarks.throughput import start_profilers

            time.sleep(min(3.0, args.seconds / 4))
            spied_from = time.time()
            spies = start_profilers(bench, args.profile, stop_at - spied_from)
        time.sleep(max(0.0, stop_at - time.time()))
        r_wall, r_cpu = receiver.read()
        g_wall, g_cpu = generator.read()
        s_wall, s_cpu = services.read()
        pg_cpu = postgres.read()
        busy1, total1 = system_cpu()
        backlog = bench.stream_backlog()
        results = [row for pipe in pipes for row in pipe.recv()]
        for proc in procs:
            proc.join()
        for spy in spies:
            spy.wait(timeout=args.seconds + 60)

        log("load over; waiting for the workers to apply what was acknowledged")
        acked = sum(1 for r in results if 200 <= r[3] < 300)
        deadline = time.monotonic() + args.drain
        while bench.event_count() < acked and time.monotonic() < deadline:
            time.sleep(0.5)
        w_wall, w_cpu = workers.read()
        with bench.engine.connect() as conn:
            lags = conn.execute(
                text(
                    "SELECT extract(epoch FROM applied_at - received_at), received_at, "
                    "applied_at FROM call_event WHERE disposition <> 'orphan'"
                )
            ).all()
            dispositions = dict(
                conn.execute(
                    text("SELECT disposition, count(*) FROM call_event GROUP BY disposition")
                ).all()
            )
            statuses = dict(
                conn.execute(text("SELECT status, count(*) FROM contact GROUP BY status")).all()
            )

    ok = [r for r in results if 200 <= r[3] < 300]
    failed = len(results) - len(ok)
    # From the planned start to the last acknowledgement (a straggler finishing just
    # after the window counts in it).
    window = max(r[2] for r in results) - min(r[0] for r in results) if results else 1.0
    from_planned = [r[2] - r[0] for r in ok]
    from_sent = [r[2] - r[1] for r in ok]
    applied = [float(x) for x, _, _ in lags if x is not None]
    apply_span = (
        (max(a for _, _, a in lags if a) - min(a for _, _, a in lags if a)).total_seconds()
        if applied
        else 0.0
    )
    print(
        f"receiver: {args.receiver_workers} uvicorn processes, offered "
        f"{'closed loop' if not args.rate else f'{args.rate:g} events/s'} for {args.seconds:g} s "
        f"from {args.clients} x {args.connections} keep-alive connections"
    )
    print(
        f"acknowledged: {len(ok):,} events in {window:.1f} s -> {len(ok) / window:,.0f} events/s"
        f"; {failed} not acknowledged"
    )
    print(
        f"ack latency from planned send: p50 {1000 * percentile(from_planned, 50):.1f} ms, "
        f"p99 {1000 * percentile(from_planned, 99):.1f} ms, max {1000 * max(from_planned):.0f} ms"
    )
    print(
        f"ack latency from actual send:  p50 {1000 * percentile(from_sent, 50):.1f} ms, "
        f"p99 {1000 * percentile(from_sent, 99):.1f} ms"
    )
    print(
        f"receiver CPU: {r_cpu['receiver'] / r_wall:.2f} cores, "
        f"{1e6 * r_cpu['receiver'] / max(len(ok), 1):.0f} us per event; generator "
        f"{sum(g_cpu.values()) / g_wall:.2f} cores"
    )
    print(
        f"during the load: postgres {pg_cpu / s_wall:.2f} cores (every postgres process on "
        f"the machine), redis {s_cpu['redis'] / s_wall:.2f} cores; machine "
        f"{(busy1 - busy0) / s_wall:.2f} of {(total1 - total0) / s_wall:.0f} cores busy "
        f"(others' work included); event backlog at the end: {backlog:,}"
    )
    unapplied = len(ok) - len(applied)
    print(
        f"event -> row (received_at -> applied_at): p50 {1000 * percentile(applied, 50):.0f} ms, "
        f"p99 {1000 * percentile(applied, 99):.0f} ms, max {1000 * max(applied or [0]):.0f} ms"
        f"; {max(unapplied, 0):,} acknowledged events not applied within {args.drain:g} s of drain"
    )
    print(
        f"workers applied {len(applied):,} events at {len(applied) / max(apply_span, 1e-9):.0f}/s,"
        f" {1e3 * sum(w_cpu.values()) / max(len(applied), 1):.2f} ms worker CPU per event"
    )
    print(f"call_event dispositions: {dispositions}; contacts: {statuses}")
    print(
        f"(median of planned-send lateness: {1000 * median([r[1] - r[0] for r in results]):.1f}"
        f" ms: large means the generator itself fell behind)"
    )
    if args.profile:
        from benchmarks.profile_summary import summarize

        spied = [r for r in ok if spied_from <= r[2] <= stop_at]
        applied_then = [
            a for _, _, a in lags if a is not None and spied_from <= a.timestamp() <= stop_at
        ]
        for name, count in (
            ("receiver", len(spied)),
            ("worker", len(applied_then) / args.workers),
        ):
            raw = args.profile / f"{name}.txt"
            if raw.exists():
                (args.profile / f"{name}-summary.txt").write_text(
                    summarize(raw, rate=200, calls=count)
                )
                print(f"profile: {raw} (ranked per event in {name}-summary.txt)")
    print(describe(bench.db_url, load_at_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
