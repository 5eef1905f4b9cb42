"""Many campaigns at once: what the tick costs as running campaigns grow, and each
campaign's share of the account.

    python benchmarks/many_campaigns.py                       # 10, 100 and 1,000 campaigns
    python benchmarks/many_campaigns.py --campaigns 1000 --window 120 --keep-logs /tmp/many

Issue 13, target 5: with 1,000 running campaigns of 100 contacts and mixed ``--cps``
weights, the tick's cost per second grows at most linearly with running campaigns, and
each campaign's share of the account stays within 10% of its weight.

The campaigns (``--contacts`` each, ``--cps`` taking ``--weights`` in turn) are created
once into a template database through ``dialer.api.create_campaign`` in this process
(the code behind ``dialer campaign create``: a thousand CLI processes would take a
quarter of an hour for nothing the figure needs), and cloned for each size. For each
size N a child process starts the first N of them with ``api.start`` (what ``dialer
campaign start`` calls), then brings up the real fleet (simulator, receiver, workers,
beat) with the account paced at ``--account-cps`` x N / 1,000: a 25th of the
campaigns' summed ``--cps`` by default, and the same share per campaign at every size,
so only the number of campaigns differs. Starting them before the workers come keeps
the first campaigns from running alone, at their whole ``--cps``, while the others
start. After ``--warmup`` seconds it measures over ``--window`` seconds:

- the tick, from every ``dialer.tick`` the workers ran in the window
  (``benchmarks/ticktrace``: wall time, the worker thread's CPU, SQL statements, rows
  they returned, commits, Redis round trips, messages published), per tick, per second
  and per running campaign;
- one tick alone after the window, in this process with the workers and beat stopped:
  the same, plus the rows PostgreSQL read for it (``pg_stat_user_tables``: sequential
  and index reads) and the CPU of its PostgreSQL backend;
- each campaign's calls created in the window (the simulator's create times, the
  campaign from the call's tag) over its fair share of the account
  (``dialer.policy.pacing.fair_shares``: weight / sum of weights x account rate when
  the account is the limit) x the window, as a distribution and by weight; and the
  same against the calls the account actually made. A campaign that ran out of due
  contacts before the window ended is counted apart.

Needs PostgreSQL (``DIALER_BENCH_DATABASE_URL``: databases ``dialer_bench_many`` and
``dialer_bench_many_tpl`` are dropped and created) and ``redis-server``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    FROM,
    Bench,
    code_env,
    database_url,
    log,
    median,
    percentile,
)
from benchmarks.machine import (  # noqa: E402
    CpuMeter,
    cpu_seconds,
    describe,
    load_average,
    system_cpu,
)

RUN_DB = "dialer_bench_many"
TEMPLATE_DB = "dialer_bench_many_tpl"
# Short calls: every contact is final soon after its create, so a campaign's pending
# contacts are what it has left to dial.
SIM_FLAGS = ["--answer-delay", "0.05", "--talk-time", "0.05"]
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------ the template


def _signature(contacts: int, weights: list[float]) -> str:
    return f"many-{contacts}x-w{'-'.join(f'{w:g}' for w in weights)}-"


def template(count: int, contacts: int, weights: list[float], rebuild: bool) -> None:
    """``count`` draft campaigns of ``contacts`` each, --cps from ``weights`` in turn, in
    TEMPLATE_DB; made once, through the API, and reused while the parameters match."""
    url = database_url(TEMPLATE_DB)
    prefix = _signature(contacts, weights)
    if not rebuild:
        try:
            engine = create_engine(url)
            with engine.connect() as conn:
                have = conn.scalar(
                    text("SELECT count(*) FROM campaign WHERE name LIKE :p AND state = 'draft'"),
                    {"p": prefix + "%"},
                )
            engine.dispose()
            if have is not None and have >= count:
                return
        except Exception:
            pass
    from dialer.dev.fleet import fresh_database

    fresh_database(url)
    from dialer import api, settings
    from dialer.store import migrate

    settings.override(settings.load({"DIALER_DATABASE_URL": url}))
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    log(f"creating {count:,} campaigns of {contacts} contacts in {TEMPLATE_DB} (once)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dialer-many-") as tmp:
        for i in range(count):
            path = Path(tmp) / f"c{i}.csv"
            with path.open("w") as f:
                f.write("phone,ref\n")
                for j in range(contacts):
                    g = i * contacts + j  # distinct numbers across campaigns
                    f.write(f"+1212{200 + g // 10_000:03d}{g % 10_000:04d},r{g}\n")
            api.create_campaign(
                f"{prefix}{i:05d}", FROM, path, cps=weights[i % len(weights)], max_attempts=1
            )
    from dialer.store import db

    db.engine().dispose()  # no session left on the template: it is cloned next
    settings.override(None)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    log(f"created in {time.perf_counter() - started:.0f} s")


# ------------------------------------------------------------------ one size (child)


def _db_backends(conn: Any) -> list[int]:
    return [
        int(p)
        for p in conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        ).scalars()
    ]


def _table_reads(conn: Any) -> dict[str, tuple[int, int]]:
    """Per table: (rows read by sequential and index scans, rows inserted and updated)."""
    conn.execute(text("SELECT pg_stat_clear_snapshot()"))
    return {
        name: (int(read), int(written))
        for name, read, written in conn.execute(
            text(
                "SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0), "
                "n_tup_ins + n_tup_upd FROM pg_stat_user_tables"
            )
        )
    }


def stop(bench: Bench, name: str, grace: float = 30.0) -> None:
    """A warm shutdown, or a kill when the process does not stop within ``grace``."""
    proc = bench.fleet.procs.pop(name)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop within {grace:g} s: killed")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tick_alone(bench: Bench, repeat: int) -> list[dict[str, float]]:
    """``repeat`` ticks in this process with the workers and beat stopped: wall, CPU,
    statements, and the rows and PostgreSQL CPU they cost."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from dialer import clock
    from dialer.store import db
    from dialer.worker import scheduling

    for name in ["beat", *bench.worker_names()]:
        stop(bench, name)
    time.sleep(2.0)  # their backends exit and flush their statistics
    counts = {"sql": 0}

    def statement(*_: Any) -> None:
        counts["sql"] += 1

    out = []
    with db.engine().connect():
        pass  # the pool holds one connection: its backend is the tick's
    for _ in range(repeat):
        with bench.engine.connect() as conn:
            pids = _db_backends(conn)
            before = _table_reads(conn)
        cpu0 = {p: cpu_seconds(p) for p in pids}
        counts["sql"] = 0
        event.listen(Engine, "before_cursor_execute", statement)
        wall, cpu = time.perf_counter(), time.thread_time()
        scheduling.release_running(clock.now())
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        event.remove(Engine, "before_cursor_execute", statement)
        pg_cpu = sum(cpu_seconds(p) - c for p, c in cpu0.items())
        db.engine().dispose()  # the backend exits, flushing its table statistics
        time.sleep(1.0)
        with bench.engine.connect() as conn:
            after = _table_reads(conn)
        out.append(
            {
                "wall": wall,
                "cpu": cpu,
                "sql": counts["sql"],
                "pg_cpu": pg_cpu,
                "read": sum(after[t][0] - before.get(t, (0, 0))[0] for t in after),
                "written": sum(after[t][1] - before.get(t, (0, 0))[1] for t in after),
            }
        )
        with db.engine().connect():
            pass
    return out


def profile(bench: Bench, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy on worker w0 over the window (``--profile``): where its CPU goes."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        "py-spy", "record", "--pid", str(bench.pid("w0")), "--duration", str(int(seconds)),
        "--rate", "100", "--format", "raw", "--nonblocking", "--gil", "-o", str(out / "w0.txt"),
    ]  # fmt: skip
    with (out / "w0.err").open("w") as err:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)


def fleet_counts(bench: Bench) -> dict[str, float]:
    """The fleet's own counters (dialer.metrics, in Redis): calls created, and the waits
    for slots (pace-sleep: a thread slept for it; pace-requeue: given back for later)."""
    import redis

    from dialer import metrics

    store = metrics.read_store(redis.Redis.from_url(bench.redis.url))
    return {
        " ".join([name, *(v for _, v in labels)]): value for (name, labels), value in store.items()
    }


def fleet_ticks(trace: Path, since: float, until: float) -> list[dict[str, float]]:
    ticks = []
    for path in trace.parent.glob(trace.name + ".*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if since <= record["at"] < until:
                ticks.append(record)
    return sorted(ticks, key=lambda r: r["at"])


def account_rate(args: argparse.Namespace, n: int) -> float:
    """The account's rate for ``n`` running campaigns: ``--account-cps`` at 1,000, in
    proportion at other sizes, so each campaign's share is the same at every size and
    only the number of campaigns differs."""
    return args.account_cps * n / 1000


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    trace = Path(tempfile.mkdtemp(prefix="dialer-ticks-")) / "tick"
    env = {
        "DIALER_ACCOUNT_CPS": f"{account_rate(args, n):g}",
        "DIALER_TICK_TRACE": str(trace),
        "PYTHONPATH": os.pathsep.join([str(HERE / "ticktrace"), code_env()["PYTHONPATH"]]),
    }
    logs = args.keep_logs / f"n{n}" if args.keep_logs else None
    with Bench(RUN_DB, template=TEMPLATE_DB, env=env, keep_logs=logs) as bench:
        with bench.engine.connect() as conn:
            weights = {
                int(cid): float(cps)
                for cid, cps in conn.execute(
                    text("SELECT id, cps FROM campaign WHERE name LIKE :p ORDER BY id LIMIT :n"),
                    {"p": _signature(args.contacts, args.weights) + "%", "n": n},
                )
            }
        # This process calls the API as an admin script would, on the fleet's settings.
        os.environ.update(
            {k: v for k, v in bench.fleet.env.items() if k.startswith(("DIALER", "CAT"))}
        )
        os.environ.pop("DIALER_TICK_TRACE", None)
        from dialer import api, settings
        from dialer.policy import pacing
        from dialer.worker import clients, tasks

        del tasks  # the Celery app and its tasks, on the fleet's broker
        settings.override(None)
        clients.reset_clients()
        started = time.perf_counter()
        for cid in weights:
            api.start(cid)
        start_seconds = time.perf_counter() - started
        log(f"{n} campaigns started in {start_seconds:.1f} s; the fleet comes up")
        bench.up(workers=args.workers, simulator=SIM_FLAGS)
        time.sleep(args.warmup)

        log(f"measuring {args.window:g} s")
        roots = {n: bench.pid(n) for n in [*bench.worker_names(), "receiver", "simulator"]}
        meter = CpuMeter(roots)
        busy0, total0 = system_cpu()
        counts0 = fleet_counts(bench)
        meter.start()
        t0 = time.time()
        spy = profile(bench, args.profile / f"n{n}", args.window) if args.profile else None
        time.sleep(args.window)
        t1 = time.time()
        if spy is not None:
            spy.wait(timeout=args.window + 60)
        _, fleet_cpu = meter.read()
        counts = {k: v - counts0.get(k, 0.0) for k, v in fleet_counts(bench).items()}
        busy1, total1 = system_cpu()
        machine = (busy1 - busy0) / (t1 - t0), (total1 - total0) / (t1 - t0)
        with bench.engine.connect() as conn:
            pending = dict(
                conn.execute(
                    text(
                        "SELECT campaign_id, count(*) FROM contact WHERE status = 'pending' "
                        "AND due_at <= now() GROUP BY campaign_id"
                    )
                ).all()
            )
        calls = requests.get(bench.fleet.sim_url + "/_sim/calls", timeout=120).json()
        if logs:  # every create, for a closer look at the pace
            (logs / "calls.json").write_text(
                json.dumps([[c["created_at"], json.loads(c["tag"])["campaign"]] for c in calls])
            )
        ticks = fleet_ticks(trace, t0, t1)
        log("window over; one tick alone, workers and beat stopped")
        alone = tick_alone(bench, args.repeat)
        url = bench.db_url

    made: dict[int, int] = dict.fromkeys(weights, 0)
    for call in calls:
        if t0 <= call["created_at"] < t1:
            cid = int(json.loads(call["tag"])["campaign"])
            made[cid] = made.get(cid, 0) + 1
    window = t1 - t0
    fair = pacing.fair_shares(account_rate(args, n), dict(weights.items()))
    total = sum(made.values())
    achieved = pacing.fair_shares(total / window, dict(weights.items()))
    return {
        "n": n,
        "window": window,
        "start_seconds": start_seconds,
        "ticks": ticks,
        "alone": alone,
        "campaigns": [
            {
                "id": cid,
                "weight": w,
                "made": made[cid],
                "expected": fair[cid] * window,
                "expected_of_made": achieved[cid] * window,
                "ran_out": cid not in pending,
            }
            for cid, w in weights.items()
        ],
        "total": total,
        "counts": counts,
        "cpu": {
            "workers": sum(v for k, v in fleet_cpu.items() if k.startswith("w")) / window,
            "receiver": fleet_cpu["receiver"] / window,
            "simulator": fleet_cpu["simulator"] / window,
            "machine busy": machine[0],
            "machine cores": machine[1],
        },
        "url": url,
    }


# ------------------------------------------------------------------ the report


def tick_rows(results: list[dict[str, Any]]) -> list[str]:
    head = (
        f"{'running':>8} {'ticks':>5} {'wall p50':>9} {'p95':>7} {'max':>7} "
        f"{'CPU/tick':>9} {'CPU/s':>8} {'CPU/camp':>9} {'SQL/tick':>9} {'SQL/camp':>8} "
        f"{'rows/tick':>9} {'commits':>8} {'redis':>6} {'msgs':>5}"
    )
    lines = [
        "(a) the tick in the fleet: every tick the workers ran in the window; wall and "
        "CPU (the worker thread's) in ms; CPU/s = tick CPU per second of the window; "
        "CPU/camp in µs per running campaign per tick; rows = rows the statements "
        "returned or changed; commits, Redis round trips and messages published per tick",
        head,
    ]
    for r in results:
        t, n, w = r["ticks"], r["n"], r["window"]
        if not t:
            lines.append(f"{n:>8} no tick recorded in the window")
            continue
        walls = [x["wall"] * 1000 for x in t]
        cpu = [x["cpu"] * 1000 for x in t]

        def mean(key: str, ticks: list[dict[str, Any]] = t) -> float:
            return sum(x.get(key, 0) for x in ticks) / len(ticks)

        lines.append(
            f"{n:>8} {len(t):>5} {median(walls):>9.1f} {percentile(walls, 95):>7.1f} "
            f"{max(walls):>7.1f} {sum(cpu) / len(t):>9.1f} {sum(cpu) / w:>8.1f} "
            f"{1000 * sum(cpu) / len(t) / n:>9.0f} {mean('sql'):>9.0f} "
            f"{mean('sql') / n:>8.2f} {mean('rows'):>9.0f} {mean('commits'):>8.0f} "
            f"{mean('redis'):>6.0f} {mean('published'):>5.0f}"
        )
    lines += [
        "",
        "(a') one tick alone (workers and beat stopped, in the benchmark's process; mean "
        "of the runs): wall and CPU in ms; rows read = PostgreSQL's sequential and index "
        "reads, rows written = inserted + updated; PostgreSQL CPU of the tick's backend",
        f"{'running':>8} {'wall':>8} {'CPU':>8} {'SQL':>6} {'rows read':>9} "
        f"{'written':>8} {'PG CPU':>7} | per campaign: {'CPU µs':>7} {'SQL':>5} "
        f"{'read':>5} {'PG µs':>6}",
    ]
    for r in results:
        a, n = r["alone"], r["n"]

        def avg(key: str, runs: list[dict[str, float]] = a) -> float:
            return sum(x[key] for x in runs) / len(runs)

        lines.append(
            f"{n:>8} {1000 * avg('wall'):>8.1f} {1000 * avg('cpu'):>8.1f} {avg('sql'):>6.0f} "
            f"{avg('read'):>9.0f} {avg('written'):>8.0f} {1000 * avg('pg_cpu'):>7.1f} | "
            f"{'':>13} {1e6 * avg('cpu') / n:>7.0f} {avg('sql') / n:>5.2f} "
            f"{avg('read') / n:>5.1f} {1e6 * avg('pg_cpu') / n:>6.0f}"
        )
    return lines


def fairness_rows(r: dict[str, Any], account_cps: float) -> list[str]:
    camps = [c for c in r["campaigns"] if not c["ran_out"]]
    out_of_contacts = len(r["campaigns"]) - len(camps)
    lines = [
        f"(b) {r['n']} campaigns, {r['window']:.0f} s window, account {account_cps:g}/s: "
        f"{r['total']:,} calls ({r['total'] / r['window']:.1f}/s); "
        f"{out_of_contacts} campaign(s) ran out of due contacts before the window's end "
        "(left out below)"
    ]
    cpu = r["cpu"]
    lines.append(
        f"  CPU over the window, in cores: workers {cpu['workers']:.2f}, receiver "
        f"{cpu['receiver']:.2f}, simulator {cpu['simulator']:.2f}; the machine "
        f"{cpu['machine busy']:.2f} of {cpu['machine cores']:.0f} busy (others' work included)"
    )
    counts, made = r.get("counts", {}), max(1, r["total"])
    sleeps = counts.get("dialer_rate_limit_waits_total pace-sleep", 0)
    slept = counts.get("dialer_rate_limit_wait_seconds_total pace-sleep", 0)
    requeues = counts.get("dialer_rate_limit_waits_total pace-requeue", 0)
    lines.append(
        f"  per call created: {requeues / made:.2f} given back for a later slot, "
        f"{sleeps / made:.2f} slept for one ({1000 * slept / max(1, sleeps):.0f} ms each)"
    )
    for label, key in (("fair share of the account", "expected"), ("of the calls made", "m")):
        ratios = [
            c["made"] / (c["expected"] if key == "expected" else c["expected_of_made"])
            for c in camps
        ]
        outside = sum(1 for x in ratios if abs(x - 1) > 0.10)
        lines.append(
            f"  calls / {label}: min {min(ratios):.3f}, p5 {percentile(ratios, 5):.3f}, "
            f"median {median(ratios):.3f}, p95 {percentile(ratios, 95):.3f}, max "
            f"{max(ratios):.3f}; outside ±10%: {outside} of {len(ratios)}"
        )
    for w in sorted({c["weight"] for c in camps}):
        group = [c for c in camps if c["weight"] == w]
        ratios = [c["made"] / c["expected"] for c in group]
        lines.append(
            f"  --cps {w:g}: {len(group)} campaigns, expected {group[0]['expected']:.1f} "
            f"calls each, made median {median([c['made'] for c in group]):.0f} "
            f"(min {min(c['made'] for c in group)}, max {max(c['made'] for c in group)}); "
            f"ratio min {min(ratios):.3f}, median {median(ratios):.3f}, max {max(ratios):.3f}"
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--campaigns", type=int, nargs="*", default=[10, 100, 1000])
    p.add_argument("--contacts", type=int, default=100, help="contacts per campaign")
    p.add_argument(
        "--weights",
        type=float,
        nargs="*",
        default=[1, 2, 3],
        help="--cps of the campaigns, in turn (default 1 2 3: a third each)",
    )
    p.add_argument(
        "--account-cps",
        type=float,
        default=80.0,
        help="DIALER_ACCOUNT_CPS at 1,000 running campaigns; N/1,000 of it at N, so every "
        "campaign's share is the same at every size (default 80: a 25th of the summed --cps, "
        "what the 2-core machine sustained beside other jobs)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--warmup",
        type=float,
        default=180.0,
        help="seconds before the window: the first calls each start released at the "
        "campaign's own --cps drain at its share first (about 150 s at 1,000 campaigns)",
    )
    p.add_argument(
        "--window",
        type=float,
        default=480.0,
        help="seconds measured (default: about 20 calls for a --cps 1 campaign, and its "
        "--cps 3 peers still have contacts at the end)",
    )
    p.add_argument("--repeat", type=int, default=3, help="ticks measured alone")
    p.add_argument("--rebuild", action="store_true", help="create the template again")
    p.add_argument("--keep-logs", type=Path, metavar="DIR")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy worker w0 into DIR")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        result = run_one(args.one, args)
        args.out.write_text(json.dumps(result))
        return 0

    load_at_start = load_average()
    template(max(args.campaigns), args.contacts, args.weights, args.rebuild)
    results = []
    for n in args.campaigns:
        # One size per process: the Celery app in a process binds to one broker.
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            argv = [sys.executable, __file__, "--one", str(n), "--out", str(out)]
            for flag in ("contacts", "account_cps", "workers", "warmup", "window", "repeat"):
                argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            argv += ["--weights", *map(str, args.weights)]
            for flag in ("keep_logs", "profile"):
                if getattr(args, flag):
                    argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            log(f"--- {n} running campaigns (load average {load_average()})")
            subprocess.run(argv, check=True)
            results.append(json.loads(out.read_text()))

    print(
        f"many campaigns: {args.contacts} contacts each, --cps {'/'.join(f'{w:g}' for w in args.weights)} "
        f"in turn, account {args.account_cps:g} calls/s per 1,000 running campaigns, "
        f"{args.workers} workers; window "
        f"{args.window:g} s after {args.warmup:g} s of warm-up"
    )
    for r in results:
        print(f"  {r['n']} campaigns started (api.start each) in {r['start_seconds']:.1f} s")
    print()
    for line in tick_rows(results):
        print(line)
    print()
    for r in results:
        for line in fairness_rows(r, account_rate(args, r["n"])):
            print(line)
    print(describe(results[-1]["url"] if results else None, load_at_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
