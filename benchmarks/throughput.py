"""Sustained call creation on an unpaced campaign, and CPU per call.

    python benchmarks/throughput.py --calls 20000 --workers 2
    python benchmarks/throughput.py --calls 20000 --workers 2 --profile /tmp/profiles

Real processes on loopback: the simulator (every call answered, answer and hangup
callbacks ~0.1 s after the create), the receiver (uvicorn, 2 processes), ``--workers``
celery workers (thread pool) and beat, against a fresh PostgreSQL database and a
private Redis. The account and number rates are set far above what the machine can do,
and the campaign has no --cps (unless ``--cps N`` is given: the production case, where
callbacks come in as the calls go out), so nothing paces the calls but the dialer's own cost.

After a warm-up (``--warmup`` seconds from the first create) it measures over a window
(``--seconds``, or until 90% of the contacts have calls):

- calls/s: creates the carrier answered with a call id, per second;
- completed/s: attempts ended, i.e. with every callback applied;
- CPU per call: CPU seconds of the worker and receiver process trees (from /proc; not
  the simulator, PostgreSQL or Redis) over the window, divided by the calls completed
  in it;
- the simulator's own CPU share and the latency of a probe request to it, the delay
  from each event's carrier time to its receipt, and from receipt to being applied:
  whether the simulator kept up is read from these (see benchmarks/PROFILE.md).

``--profile DIR`` also records py-spy (``pip install py-spy``) on one worker and on the
receiver during the window, as collapsed stacks plus a ranked summary
(benchmarks/profile_summary.py). Profiling costs CPU: use it for where, not how much.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests
from sqlalchemy import text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Bench, log, median, percentile, write_contacts  # noqa: E402
from benchmarks.machine import (  # noqa: E402
    CpuMeter,
    PostgresMeter,
    describe,
    load_average,
    system_cpu,
)

SIM_FLAGS = ["--answer-delay", "0.05", "--talk-time", "0.05"]


def progress(bench: Bench, campaign_id: int) -> tuple[int, int]:
    """(attempts with a call id, attempts ended) of the campaign."""
    with bench.engine.connect() as conn:
        created, ended = conn.execute(
            text(
                "SELECT count(call_id), count(*) FILTER (WHERE status = 'ended') "
                "FROM attempt WHERE campaign_id = :c"
            ),
            {"c": campaign_id},
        ).one()
    return int(created), int(ended)


def event_delays(bench: Bench, since: float, until: float) -> dict[str, list[float]]:
    """Per event received in [since, until] (epoch s): carrier time -> received, and
    received -> applied, in seconds."""
    with bench.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT extract(epoch FROM received_at - event_time), "
                "extract(epoch FROM applied_at - received_at) FROM call_event "
                "WHERE received_at BETWEEN to_timestamp(:a) AND to_timestamp(:b)"
            ),
            {"a": since, "b": until},
        ).all()
    return {
        "delivery": [float(a) for a, _ in rows if a is not None],
        "apply": [float(b) for _, b in rows if b is not None],
        "unapplied": [1.0 for _, b in rows if b is None],
    }


def db_stats(bench: Bench) -> dict[str, int]:
    """The database's counters: connections opened, commits, rollbacks, rows touched."""
    with bench.engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(
            text(
                "SELECT sessions, xact_commit, xact_rollback, tup_returned, tup_fetched, "
                "tup_inserted, tup_updated FROM pg_stat_database WHERE datname = current_database()"
            )
        ).one()
        stats = dict(zip(
            ("connections", "commits", "rollbacks", "rows returned", "rows fetched",
             "rows inserted", "rows updated"), map(int, row), strict=True,
        ))  # fmt: skip
        # Which table the rows come from, and by which kind of scan.
        for table, seq, seq_read, idx, idx_fetch in conn.execute(
            text(
                "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), "
                "coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables"
            )
        ):
            stats[f"{table} seq scans"] = int(seq)
            stats[f"{table} seq rows"] = int(seq_read)
            stats[f"{table} index scans"] = int(idx)
            stats[f"{table} index rows"] = int(idx_fetch)
    return stats


def redis_commands(bench: Bench) -> dict[str, int]:
    """Commands Redis has processed so far, by command."""
    import redis

    stats = redis.Redis.from_url(bench.redis.url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def probe(url: str) -> float:
    started = time.perf_counter()
    requests.get(url + "/_sim/stats", timeout=10)
    return time.perf_counter() - started


def start_profilers(bench: Bench, out: Path, seconds: float) -> list[subprocess.Popen[bytes]]:
    if shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid, extra in (
        ("worker", bench.pid("w0"), []),
        ("receiver", bench.pid("receiver"), ["--subprocesses"]),
    ):
        argv = [
            "py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", "200", "--format", "raw", "--nonblocking", "--gil",
            "-o", str(out / f"{name}.txt"), *extra,
        ]  # fmt: skip
        with (out / f"{name}.err").open("w") as err:  # the child keeps its own copy
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err))
    return procs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20_000, help="contacts in the campaign")
    p.add_argument("--workers", type=int, default=2, help="celery worker processes")
    p.add_argument("--threads", type=int, help="threads per worker (default: the setting's 32)")
    p.add_argument(
        "--cps",
        type=float,
        help="pace the campaign (calls/s); unpaced by default. At a pace the machine "
        "sustains, callbacks are applied as they come rather than queued behind the dial",
    )
    p.add_argument("--warmup", type=float, default=5.0, help="seconds after the first create")
    p.add_argument("--seconds", type=float, default=60.0, help="longest rate window")
    p.add_argument("--drain", type=float, default=120.0, help="longest wait for the last call")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the window into DIR")
    p.add_argument("--keep-logs", type=Path, metavar="DIR", help="keep the processes' logs")
    p.add_argument(
        "--trace-sql",
        type=Path,
        metavar="DIR",
        help="count the workers' SQL statements, transactions and connections into DIR",
    )
    args = p.parse_args()
    load_at_start = load_average()

    env = {}
    if args.trace_sql:
        args.trace_sql.mkdir(parents=True, exist_ok=True)
        for old in args.trace_sql.glob("sql.*.json"):
            old.unlink()
        here = Path(__file__).resolve().parent
        env = {
            "DIALER_SQL_TRACE": str(args.trace_sql.resolve() / "sql"),
            "PYTHONPATH": os.pathsep.join(
                [str(here / "sqltrace"), str(here.parent), os.environ.get("PYTHONPATH", "")]
            ),
        }
    with Bench("dialer_bench_throughput", keep_logs=args.keep_logs, env=env) as bench:
        path = write_contacts(bench.workdir / "contacts.csv", args.calls)
        pace = ["--cps", f"{args.cps:g}"] if args.cps else []
        campaign_id = bench.create_campaign(
            path, "--max-attempts", "1", "--tag-field", "ref", *pace
        )
        bench.up(workers=args.workers, threads=args.threads, simulator=SIM_FLAGS)
        sim = bench.fleet.sim_url
        roots = {n: bench.pid(n) for n in bench.worker_names()}
        roots.update(receiver=bench.pid("receiver"), beat=bench.pid("beat"))
        roots.update(simulator=bench.pid("simulator"), redis=bench.redis.proc.pid)  # type: ignore[union-attr]

        # What the idle fleet costs (ticks, sweeps, polling), for scale.
        idle = CpuMeter(roots)
        idle.start()
        time.sleep(3)
        idle_wall, idle_cpu = idle.read()

        # The whole run: CPU from start until every call has ended (all callbacks applied).
        whole = CpuMeter(roots)
        whole.start()
        bench.fleet.cli("campaign", "start", str(campaign_id))
        started = time.monotonic()
        while progress(bench, campaign_id)[0] == 0:
            if time.monotonic() - started > 60:
                raise TimeoutError("no call created within 60 s")
            time.sleep(0.1)
        log(f"first call after {time.monotonic() - started:.2f} s; warming up {args.warmup:g} s")
        time.sleep(args.warmup)

        # The rate window: after warm-up, until 90% of the contacts have calls.
        meter = CpuMeter(roots)
        postgres = PostgresMeter()
        profilers = start_profilers(bench, args.profile, args.seconds) if args.profile else []
        created0, ended0 = progress(bench, campaign_id)
        stats0, redis0 = db_stats(bench), redis_commands(bench)
        busy0, total0 = system_cpu()
        wall0 = time.time()
        meter.start()
        postgres.start()
        probes: list[float] = []
        samples: list[tuple[float, int, int]] = []
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            time.sleep(0.5)
            probes.append(probe(sim))
            created, ended = progress(bench, campaign_id)
            samples.append((time.monotonic(), created, ended))
            if created >= 0.9 * args.calls:
                break
        created1, ended1 = progress(bench, campaign_id)
        stats1, redis1 = db_stats(bench), redis_commands(bench)
        wall, cpu = meter.read()
        pg_cpu = postgres.read()
        busy1, total1 = system_cpu()
        wall1 = time.time()
        for proc in profilers:
            proc.wait(timeout=args.seconds + 60)
        delays = event_delays(bench, wall0, wall1)

        log("window over; waiting for every call to end")
        drain_deadline = time.monotonic() + args.drain
        final = progress(bench, campaign_id)
        while final[1] < final[0] or final[0] < args.calls:
            if time.monotonic() > drain_deadline:
                break
            time.sleep(0.5)
            final = progress(bench, campaign_id)
        whole_wall, whole_cpu = whole.read()
        counts = bench.attempt_counts(campaign_id)
        refused = requests.get(sim + "/_sim/stats", timeout=10).json()["refused"]

    made = created1 - created0
    done = ended1 - ended0
    per_second = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:], strict=False)]

    def dialer(c: dict[str, float]) -> tuple[float, float]:
        return sum(v for k, v in c.items() if k.startswith("w")), c["receiver"]

    errors = {k: v for k, v in counts.items() if k in ("unknown", "failed", "withdrawn")}
    paced = f"paced at {args.cps:g} calls/s" if args.cps else "unpaced"
    print(f"throughput: {args.workers} worker processes, {args.calls:,} contacts, {paced}")
    print(f"rate window: {wall:.1f} s after {args.warmup:g} s of warm-up")
    print(f"calls created: {made:,} -> {made / wall:.1f} calls/s sustained")
    if per_second:
        print(
            f"  per 0.5 s sample: median {median(per_second):.0f}/s, "
            f"min {min(per_second):.0f}/s, max {max(per_second):.0f}/s"
        )
    print(f"calls completed in the window (all callbacks applied): {done:,} -> {done / wall:.1f}/s")
    w_cpu, r_cpu = dialer(whole_cpu)
    ended_all = final[1]
    complete = ended_all >= args.calls
    print(
        f"CPU per call, whole run ({whole_wall:.0f} s, {ended_all:,} calls ended"
        f"{'' if complete else ', NOT all: the drain timed out'}): "
        f"{1000 * (w_cpu + r_cpu) / max(ended_all, 1):.2f} ms "
        f"(workers {1000 * w_cpu / max(ended_all, 1):.2f}, "
        f"receiver {1000 * r_cpu / max(ended_all, 1):.2f})"
    )
    w_cpu, r_cpu = dialer(cpu)
    print(
        f"CPU per call in the window, per call created: {1000 * (w_cpu + r_cpu) / max(made, 1):.2f}"
        f" ms (meaningful when completed/s ~ created/s)"
    )
    iw, ir = dialer(idle_cpu)
    print(
        f"idle fleet before the run: workers {iw / idle_wall:.3f} cores, receiver "
        f"{ir / idle_wall:.3f} cores"
    )
    print("CPU use over the rate window (cores = CPU s / wall s):")
    for name, seconds in sorted(cpu.items()):
        print(f"  {name:>10}: {seconds / wall:5.2f} cores")
    print(f"  {'postgres':>10}: {pg_cpu / wall:5.2f} cores (every postgres process on the machine)")
    cores = (total1 - total0) / max(wall, 1e-9)
    print(
        f"  {'machine':>10}: {(busy1 - busy0) / wall:5.2f} of {cores:.0f} cores busy "
        f"({100 * (busy1 - busy0) / max(total1 - total0, 1e-9):.0f}%; others' work included)"
    )
    print(
        f"simulator: {100 * cpu['simulator'] / wall:.0f}% of one core; probe GET latency "
        f"median {1000 * median(probes):.1f} ms, max {1000 * max(probes):.1f} ms; "
        f"refused {refused or 'none'}"
    )
    print(
        f"event delivery (carrier time -> received): p50 "
        f"{1000 * percentile(delays['delivery'], 50):.0f} ms, "
        f"p99 {1000 * percentile(delays['delivery'], 99):.0f} ms "
        f"({len(delays['delivery']):,} events)"
    )
    print(
        f"event apply (received -> applied): p50 {1000 * percentile(delays['apply'], 50):.0f} ms, "
        f"p99 {1000 * percentile(delays['apply'], 99):.0f} ms"
    )
    calls = max((made + done) / 2, 1)
    print(
        "per call in the window (calls = mean of created and completed): "
        + ", ".join(
            f"{k} {(stats1[k] - stats0[k]) / calls:.1f}"
            for k in stats0
            if stats1.get(k, 0) != stats0[k] or " " not in k
        )
    )
    by_command = {k: n - redis0.get(k, 0) for k, n in redis1.items()}
    print(
        f"redis commands per call: {sum(by_command.values()) / calls:.1f} ("
        + ", ".join(
            f"{k} {n / calls:.2f}"
            for k, n in sorted(by_command.items(), key=lambda kv: -kv[1])[:10]
        )
        + ")"
    )
    print(f"attempts by status at the end: {dict(sorted(counts.items()))}; errors {errors or 0}")
    if args.profile:
        from benchmarks.profile_summary import summarize

        for name in ("worker", "receiver"):
            raw = args.profile / f"{name}.txt"
            if raw.exists():
                # One worker of --workers was profiled: it did about its share of the calls.
                calls = (made + done) / 2 / (args.workers if name == "worker" else 1)
                (args.profile / f"{name}-summary.txt").write_text(
                    summarize(raw, rate=200, calls=calls)
                )
                print(f"profile: {raw} (ranked in {name}-summary.txt)")
    if args.trace_sql:
        print_sql_trace(args.trace_sql, final[1])
    print(describe(bench.db_url, load_at_start))
    return 0


def print_sql_trace(folder: Path, calls: int) -> None:
    """Statements per call over the whole run, from every process that wrote a trace
    (workers and beat; the CLI commands the benchmark ran too, which are few)."""
    total: dict[str, int] = {}
    for path in folder.glob("sql.*.json"):
        for key, n in json.loads(path.read_text()).items():
            total[key] = total.get(key, 0) + n
    if not total:
        print("sql trace: nothing written (did the workers exit cleanly?)")
        return
    statements = sum(n for k, n in total.items() if k.startswith("SQL "))
    print(
        f"sql trace over the whole run, per call ({calls:,} calls): "
        f"{statements / calls:.1f} statements"
    )
    for key, n in sorted(total.items(), key=lambda kv: -kv[1])[:40]:
        print(f"  {n / calls:6.2f}  {key}")


if __name__ == "__main__":
    sys.exit(main())
