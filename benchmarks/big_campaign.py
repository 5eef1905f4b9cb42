"""A campaign of ten million contacts, dialed paced, and what each call costs the database.

    python benchmarks/big_campaign.py                              # 10,000,000 contacts, 600 s at 100/s
    python benchmarks/big_campaign.py --contacts 10000 --seconds 60
    python benchmarks/big_campaign.py --contacts 1000000 --seconds 60

Everything goes through the public commands, with default settings but for the pace:

1. **Import.** A contacts file of ``--contacts`` rows (import_csv.py's mix: ~2% invalid,
   ~1% repeated, ~1% on the do-not-call list, mixed spellings, three context columns) and
   its do-not-call list go in with ``dialer dnc add`` and ``dialer campaign create --cps``:
   seconds and the command's peak RSS (``wait4``). Done once into a template database
   (``dialer_bench_big_<size>``) that later runs clone; ``--reimport`` does it again.
2. **Dialing.** The fleet (simulator, receiver, 2 workers, beat) on a clone, the campaign
   started with ``dialer campaign start``; the simulator answers 70%, and 15% each are
   busy or unanswered, retried after ``--retry-delay`` (60 s) so retries are in the mix.
   Over the window after ``--warmup`` seconds: calls created per second; rows read per
   call (``pg_stat_user_tables``: sequential-scan rows plus index fetches, every table,
   divided by the calls created); statements and commits per call; Redis commands per
   call; CPU per call of the workers, the receiver, PostgreSQL (every backend) and Redis
   (the beat's and the simulator's printed apart); the machine's busy cores; each tick's
   wall time, CPU and wait on its SQL (benchmarks/ticktrace; ``--keep-ticks DIR`` keeps
   each tick's record, its slowest statement named); the workers' RSS each second (flat or
   not: first and last fifth of the window); and ``dialer campaign status --json`` every
   ``--status-every`` seconds, as a user would type it. The machine's server runs with
   autovacuum off (its configuration, not production's), so the run stands in for its
   analyses: after the warm-up and every 15 s, each table autovacuum's default rule
   would analyse is analysed (``autoanalyze``).
3. **Export.** ``dialer campaign export`` of the whole campaign to a file, after the fleet
   stops: seconds and peak RSS, beside the export of a 10,000-contact campaign.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import import_csv  # noqa: E402
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
    PostgresMeter,
    describe,
    load_average,
    system_cpu,
    tree,
)
from benchmarks.machine import rss_mb as proc_rss_mb  # noqa: E402
from dialer.dev.fleet import Fleet, fresh_database  # noqa: E402

TRACE_DIR = Path(__file__).resolve().parent / "ticktrace"
OUTCOMES = "answered=0.7,busy=0.15,no-answer=0.15"
SIM_FLAGS = ["--answer-delay", "0.2", "--talk-time", "0.5", "--no-answer-delay", "0.5"]


def label(rows: int) -> str:
    return f"{rows // 1_000_000}m" if rows >= 1_000_000 else f"{rows // 1000}k"


def spawn_measured(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of one command: the child is reaped with wait4,
    so the rusage is that command's own, not the largest child's so far."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: become the command
            try:
                os.chdir(cwd)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(argv[2:])} failed:\n{err.read().decode()[-3000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


def template(rows: int, retry_delay: int, cps: float, reimport: bool) -> tuple[str, int, dict]:
    """The template database with the imported draft campaign; (name, id, import figures)."""
    name = f"dialer_bench_big_{label(rows)}"  # not harness.MILLION_DB: that one is status.py's
    url = database_url(name)
    if not reimport:
        found = _imported(url)
        if found is not None:
            return name, found[0], found[1]
    fresh_database(url)
    env = {**os.environ, "DIALER_DATABASE_URL": url, **code_env()}
    with tempfile.TemporaryDirectory(prefix=f"dialer-{label(rows)}-") as tmp:
        workdir = Path(tmp)
        Fleet(workdir, {"DIALER_DATABASE_URL": url, **code_env()}).cli("db", "upgrade")
        csv_path = workdir / "contacts.csv"
        log(f"writing {rows:,} contacts to {csv_path}")
        dnc = import_csv.generate(csv_path, rows)
        dnc_path = workdir / "dnc.csv"
        dnc_path.write_text("phone\n" + "\n".join(dnc) + "\n")
        cli = [sys.executable, "-m", "dialer.cli"]
        spawn_measured([*cli, "dnc", "add", str(dnc_path)], env, workdir)
        load_before = load_average()
        log(f"importing {rows:,} contacts into {name} (once; later runs reuse it)")
        seconds, peak, out = spawn_measured(
            [*cli, "campaign", "create", "--name", f"big-{rows}", "--from", FROM,
             "--contacts", str(csv_path), "--cps", str(cps), "--retry-delay", str(retry_delay),
             "--json"],
            env, workdir,
        )  # fmt: skip
    report = json.loads(out)
    figures = {
        "rows": rows,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "imported": report.get("imported"),
        "load": f"{load_before} -> {load_average()}",
    }
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE bench_import (id int, figures text)"))
        conn.execute(
            text("INSERT INTO bench_import VALUES (:i, :f)"),
            {"i": report["id"], "f": json.dumps(figures)},
        )
        conn.execute(text("VACUUM ANALYZE"))  # as autovacuum would, before anyone dials
    engine.dispose()
    return name, int(report["id"]), figures


# autovacuum's analyze rule with PostgreSQL's defaults: a table is analysed once the
# rows changed since its last analysis pass autovacuum_analyze_threshold (50) plus
# autovacuum_analyze_scale_factor (0.1) of its rows. This machine's server runs with
# autovacuum off (its conf.d), which production never does: without it the planner
# keeps the statistics of an empty ``attempt`` table all run long, and plans for that.
_DUE_FOR_ANALYZE = """
SELECT s.relname FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
 WHERE s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)
"""


def autoanalyze(engine: Any) -> list[str]:
    """What autovacuum would analyse now, analysed (the stand-in for its daemon)."""
    with engine.connect() as conn:
        due = list(conn.scalars(text(_DUE_FOR_ANALYZE)))
        for table in due:
            conn.execute(text(f'ANALYZE "{table}"'))
        conn.commit()
    return due


def _imported(url: str) -> tuple[int, dict] | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, figures FROM bench_import")).first()
            return (int(row[0]), json.loads(row[1])) if row else None
    except Exception:
        return None
    finally:
        engine.dispose()


def table_reads(engine: Any) -> dict[str, dict[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, coalesce(seq_tup_read, 0), coalesce(idx_tup_fetch, 0),"
                " coalesce(seq_scan, 0) FROM pg_stat_user_tables"
            )
        ).all()
        db = conn.execute(
            text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        ).scalar_one()
    out = {r[0]: {"seq": int(r[1]), "idx": int(r[2]), "seq_scans": int(r[3])} for r in rows}
    out["_db"] = {"xacts": int(db)}
    return out


def created(engine: Any, campaign_id: int) -> int:
    """Calls created for the campaign so far (the status tally's count)."""
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text("SELECT coalesce(sum(n), 0) FROM call_tally WHERE campaign_id = :c"),
                {"c": campaign_id},
            )
        )


def redis_commands(url: str) -> dict[str, int]:
    stats = redis.Redis.from_url(url).info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def trace_files(prefix: Path) -> list[Path]:
    """The workers' tick traces: ``PREFIX.<pid>.jsonl`` each (benchmarks/ticktrace)."""
    return sorted(prefix.parent.glob(prefix.name + ".*.jsonl"))


def ticks(prefix: Path, since: float, until: float) -> list[tuple[float, float, float]]:
    """(wall, CPU, SQL wall) seconds of every tick that started in [since, until)."""
    out = []
    for path in trace_files(prefix):
        for line in path.read_text().splitlines():
            tick = json.loads(line)
            if since <= tick["at"] < until:
                out.append((tick["wall"], tick["cpu"], tick.get("sql_wall", 0.0)))
    return out


def workers_rss(bench: Bench) -> float:
    return sum(proc_rss_mb(p) for n in bench.worker_names() for p in tree(bench.pid(n)))


def per_call(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], calls: int
) -> dict:
    tables = {}
    for table, end in after.items():
        if table == "_db":
            continue
        start = before.get(table, {"seq": 0, "idx": 0, "seq_scans": 0})
        seq, idx = end["seq"] - start["seq"], end["idx"] - start["idx"]
        if seq or idx:
            tables[table] = {"seq": seq / calls, "idx": idx / calls,
                             "seq_scans": (end["seq_scans"] - start["seq_scans"]) / calls}  # fmt: skip
    return tables


def dial(args: argparse.Namespace, template_name: str, campaign_id: int) -> dict[str, Any]:
    run_db = f"{template_name}_run"
    with tempfile.TemporaryDirectory(prefix="dialer-ticks-") as tmp:
        prefix = Path(tmp) / "ticks"
        pythonpath = os.pathsep.join([str(TRACE_DIR), code_env()["PYTHONPATH"]])
        env = {"DIALER_TICK_TRACE": str(prefix), "PYTHONPATH": pythonpath}
        log(f"cloning {template_name} and starting the fleet")
        with Bench(run_db, template=template_name, env=env) as bench:
            if args.auto_explain:
                _auto_explain(bench.db_url)
            bench.up(workers=2, simulator=["--outcomes", OUTCOMES, *SIM_FLAGS])
            fleet_env = {k: v for k, v in bench.fleet.env.items() if k != "DIALER_TICK_TRACE"}
            status_cmd = [sys.executable, "-m", "dialer.cli", "campaign", "status", str(campaign_id), "--json"]  # fmt: skip
            bench.fleet.cli("campaign", "start", str(campaign_id))
            started = time.time()
            log(f"dialing; warm-up {args.warmup} s, then a {args.seconds} s window")
            time.sleep(args.warmup)
            analysed_in_warmup = autoanalyze(bench.engine)

            redis_pid = bench.redis.proc.pid if bench.redis.proc else 0
            roots = {n: bench.pid(n) for n in bench.worker_names()}
            roots["receiver"] = bench.pid("receiver")
            roots["redis"] = redis_pid
            # Read, not counted per call: the beat, and the carrier's stand-in, which
            # shares the machine here and would not in production.
            roots["beat"], roots["simulator"] = bench.pid("beat"), bench.pid("simulator")
            cpu, pg = CpuMeter(roots), PostgresMeter()
            busy0, total0 = system_cpu()
            reads0, calls0 = table_reads(bench.engine), created(bench.engine, campaign_id)
            cmds0 = redis_commands(bench.redis.url)
            window_start = time.time()
            cpu.start()
            pg.start()
            rss: list[float] = []
            status_ms: list[float] = []
            next_status = time.monotonic()
            end = time.monotonic() + args.seconds
            analysed: list[str] = []
            next_analyze = time.monotonic()
            while time.monotonic() < end:
                rss.append(workers_rss(bench))
                if time.monotonic() >= next_analyze:  # autovacuum's naptime is 60 s
                    analysed += autoanalyze(bench.engine)
                    next_analyze += 15
                if time.monotonic() >= next_status:
                    t = time.perf_counter()
                    subprocess.run(status_cmd, env=fleet_env, check=True, capture_output=True)
                    status_ms.append(1000 * (time.perf_counter() - t))
                    next_status += args.status_every
                time.sleep(max(0.0, 1.0 - (time.monotonic() % 1.0)))
            wall, used = cpu.read()
            pg_cpu = pg.read()
            busy1, total1 = system_cpu()
            window_end = time.time()
            calls = created(bench.engine, campaign_id) - calls0
            reads1, cmds1 = table_reads(bench.engine), redis_commands(bench.redis.url)
            tick_list = ticks(prefix, window_start, window_end)
            if args.keep_ticks:
                args.keep_ticks.mkdir(parents=True, exist_ok=True)
                for path in trace_files(prefix):
                    shutil.copy(path, args.keep_ticks / path.name)
            states = bench.attempt_counts(campaign_id)

    calls = max(calls, 1)
    tables = per_call(reads0, reads1, calls)
    worker_cpu = sum(v for k, v in used.items() if k.startswith("w"))
    fifth = max(1, len(rss) // 5)
    return {
        "window_s": round(wall, 1),
        "calls": calls,
        "calls_per_s": calls / wall,
        "attempts_by_status_at_end": states,
        "rows_read_per_call": sum(t["seq"] + t["idx"] for t in tables.values()),
        "tables": tables,
        "transactions_per_call": (reads1["_db"]["xacts"] - reads0["_db"]["xacts"]) / calls,
        "redis_commands_per_call": {
            k: (v - cmds0.get(k, 0)) / calls for k, v in cmds1.items() if v - cmds0.get(k, 0) > 0
        },
        "cpu_ms_per_call": {
            "workers": 1000 * worker_cpu / calls,
            "receiver": 1000 * used["receiver"] / calls,
            "postgresql": 1000 * pg_cpu / calls,
            "redis": 1000 * used["redis"] / calls,
        },
        "cpu_ms_per_call_not_counted": {
            "beat": 1000 * used["beat"] / calls,
            "simulator": 1000 * used["simulator"] / calls,
        },
        # The machine's cores in use over the window (every process, this script too).
        "machine_busy_cores": (busy1 - busy0) / wall,
        "machine_cores": (total1 - total0) / wall,
        "ticks": len(tick_list),
        "tick_ms": _spread([1000 * w for w, _, _ in tick_list]),
        "tick_cpu_ms": _spread([1000 * c for _, c, _ in tick_list]),
        "tick_sql_ms": _spread([1000 * q for _, _, q in tick_list]),
        "workers_rss_mb": {
            "first_fifth": median(rss[:fifth]),
            "last_fifth": median(rss[-fifth:]),
            "max": max(rss) if rss else float("nan"),
        },
        "status_ms": _spread(status_ms),
        "analysed": {"after_warmup": analysed_in_warmup, "in_window": analysed},
        "started_at": started,
    }


def _auto_explain(url: str) -> None:
    """Every statement's plan to the server's log (auto_explain), for finding the one
    that reads too much; sessions opened from now on load it."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        name = conn.scalar(text("SELECT current_database()"))
        for setting, value in (
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_nested_statements", "on"),
        ):
            conn.execute(text(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'"))
    engine.dispose()


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def export(template_name: str, campaign_id: int) -> dict[str, float]:
    """``dialer campaign export`` of the whole campaign (on the template: the same rows)."""
    env = {**os.environ, "DIALER_DATABASE_URL": database_url(template_name), **code_env()}
    with tempfile.TemporaryDirectory(prefix="dialer-export-") as tmp:
        out = Path(tmp) / "export.csv"
        argv = [sys.executable, "-m", "dialer.cli", "campaign", "export", str(campaign_id), "--output", str(out)]  # fmt: skip
        seconds, peak, _ = spawn_measured(argv, env, Path(tmp))
        size = out.stat().st_size / 1e6
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1), "file_mb": round(size, 1)}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3 if abs(value) < 10 else 1)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000_000)
    parser.add_argument("--cps", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--retry-delay", type=int, default=60)
    parser.add_argument("--status-every", type=float, default=10.0)
    parser.add_argument("--reimport", action="store_true")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--keep-ticks", type=Path, help="copy the per-tick traces here")
    parser.add_argument(
        "--auto-explain", action="store_true", help="log every plan (PostgreSQL's log); slow"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    load_at_start = load_average()
    name, campaign_id, imported = template(args.contacts, args.retry_delay, args.cps, args.reimport)
    figures: dict[str, Any] = {"contacts": args.contacts, "import": imported}
    figures["dialing"] = dial(args, name, campaign_id)
    if not args.no_export:
        figures["export"] = export(name, campaign_id)
    print(describe(database_url(name), load_at_start))
    print(json.dumps(_rounded(figures), indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
