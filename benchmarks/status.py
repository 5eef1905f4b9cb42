"""``campaign status --json`` on a million-contact campaign: the CLI and the API call,
on the campaign at rest and while it runs.

    python benchmarks/status.py                 # at rest, then running paced at 50 calls/s
    python benchmarks/status.py --cps 0         # running unpaced (the workers take both cores)
    python benchmarks/status.py --rebuild       # import the campaign again (and time that)

The campaign is imported once, by ``dialer campaign create`` as a user would, into the
database ``dialer_bench_1m`` (the other benchmarks that need a million contacts clone
it), then vacuumed and analysed as autovacuum would leave it. This script never changes
that template: it clones it into ``dialer_bench_status`` and runs this checkout's
``dialer db upgrade`` there (timed: a migration may backfill).

Then, each ``--repeat`` times, it times ``dialer campaign status ID --json`` as a
subprocess (what a user waits for: interpreter start and imports included) and
``api.status(ID)`` in this process (the queries alone), median and max, twice:

1. **at rest**: the draft campaign, vacuumed (all-visible pages);
2. **running**: a fleet (simulator, receiver, 2 workers, beat) dials the campaign, paced
   at ``--cps`` (0: unpaced), for ``--warmup`` seconds first, so rows are changing while
   it is timed. Where this checkout keeps a status tally (``dialer.store.tally``), the
   benchmark compacts it every 10 s, standing in for the sweep (``--no-compact``: never).

With ``--trigger-cost`` it also prices the tally triggers on the write path: the same
single-row updates run inside PostgreSQL (a DO loop, no round trips) with the triggers
on and off, in a transaction rolled back afterwards.

It prints the interpreter's bare start and the status command's own imports for scale
(``-X importtime``: the total, and whether SQLAlchemy, the ORM models, phonenumbers or
Celery were imported), the plan of the counting query, and the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    MILLION_DB,
    Bench,
    code_env,
    log,
    median,
    million_campaign,
)
from benchmarks.machine import describe, load_average  # noqa: E402

BENCH_DB = "dialer_bench_status"
SIM_FLAGS = ["--answer-delay", "0.05", "--talk-time", "0.05"]
HEAVY = ("sqlalchemy", "dialer.store.models", "phonenumbers", "celery")


def time_commands(
    commands: dict[str, list[str]], env: dict[str, str], repeat: int
) -> dict[str, tuple[list[float], list[float]]]:
    """(wall seconds, CPU seconds) of each run of each command, the commands taking turns
    so that they meet the same load on a shared machine. CPU time (the child's user +
    system, from the kernel) is what the command itself costs, whatever the load."""
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in commands}
    for _ in range(repeat):
        for name, argv in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv[1:])} failed:\n{done.stderr[-3000:]}")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            out[name][0].append(wall)
            out[name][1].append(cpu)
    return out


def import_profile(argv: list[str], env: dict[str, str]) -> tuple[float, list[str]]:
    """(seconds of imports, heavy packages imported) of one run under ``-X importtime``."""
    err = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, check=True, capture_output=True
    ).stderr.decode()
    total, heavy = 0, set()
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (p.strip() for p in line[len("import time:") :].split("|"))
        if not cumulative.isdigit():
            continue
        if not line.split("|")[2].startswith("  "):  # a top-level import: its whole cost
            total += int(cumulative)
        heavy.update(h for h in HEAVY if name == h)
    return total / 1e6, sorted(heavy)


def time_api(campaign_id: int, repeat: int) -> tuple[list[float], dict[str, Any]]:
    from dialer import api

    st = api.status(campaign_id)  # the first call connects
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        st = api.status(campaign_id)
        out.append(time.perf_counter() - started)
    return out, st


def ms(values: list[float]) -> str:
    return f"median {1000 * median(values):.0f} ms, max {1000 * max(values):.0f} ms"


class Compactor(threading.Thread):
    """Compacts the tally every ``every`` seconds, as the sweep does in production."""

    def __init__(self, url: str, every: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, pool_size=1)
        self.every = every
        self.stop = threading.Event()
        self.runs: list[float] = []

    def run(self) -> None:
        from dialer.store import tally

        while not self.stop.wait(self.every):
            started = time.perf_counter()
            with self.engine.begin() as conn:
                tally.compact(conn)
            self.runs.append(time.perf_counter() - started)


def tally_rows(url: str) -> int | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM contact_tally")) or 0)
    except Exception:
        return None
    finally:
        engine.dispose()


def plan(url: str, campaign_id: int, has_tally: bool) -> list[str]:
    query = (
        "SELECT status, zones, sum(n) FROM contact_tally WHERE campaign_id = :c "
        "GROUP BY status, zones"
        if has_tally
        else "SELECT status, count(*) FROM contact WHERE campaign_id = :c GROUP BY status"
    )
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {query}"), {"c": campaign_id}
        ).all()
    engine.dispose()
    return [query] + [r[0] for r in rows]


TRIGGER_LOOPS = {
    "contact: one status change": "UPDATE contact SET status = CASE status WHEN 'pending' "
    "THEN 'dialing' ELSE 'pending' END WHERE id = {i}",
    "contact: no status change (attempts + 1)": "UPDATE contact SET attempts = attempts + 1 "
    "WHERE id = {i}",
    "attempt: its call id set (or cleared)": "UPDATE attempt SET call_id = CASE WHEN call_id "
    "IS NULL THEN 'bench-' || {i} END WHERE id = {i}",
    "attempt: no call id (status, lease)": "UPDATE attempt SET status = 'created', "
    "lease_until = now() WHERE id = {i}",
}


def trigger_cost(url: str, campaign_id: int, loops: int = 5000) -> list[str]:
    """Microseconds per statement of each hot-path update, triggers on vs off."""
    engine = create_engine(url)
    out = []
    with engine.connect() as conn:
        first = conn.scalar(
            text("SELECT min(id) FROM contact WHERE campaign_id = :c"), {"c": campaign_id}
        )
        # Attempts to update: one per contact, as the release makes them.
        conn.execute(
            text(
                "INSERT INTO attempt (id, contact_id, campaign_id, number, run, status, "
                "queued_at, sends) SELECT id, id, campaign_id, 1, 1, 'queued', now(), 0 "
                "FROM contact WHERE campaign_id = :c AND id < :last"
            ),
            {"c": campaign_id, "last": first + loops},
        )
        for name, statement in TRIGGER_LOOPS.items():
            table = statement.split()[1]
            timing: dict[bool, float] = {}
            for on in (True, False, True, False):  # alternating; the best of two each
                conn.execute(
                    text(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER USER")
                )
                body = statement.replace("{i}", "i")
                started = time.perf_counter()
                conn.execute(
                    text(
                        f"DO $$ BEGIN FOR i IN {first}..{first + loops - 1} LOOP {body}; "
                        "END LOOP; END $$"
                    )
                )
                took = 1e6 * (time.perf_counter() - started) / loops
                timing[on] = min(took, timing.get(on, took))
            out.append(
                f"{name}: {timing[True]:.0f} µs with the triggers, {timing[False]:.0f} µs "
                f"without: {timing[True] - timing[False]:+.0f} µs per statement"
            )
        conn.rollback()  # the attempts, the updates, the triggers switched off: all undone
    engine.dispose()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--rebuild", action="store_true", help="import the campaign again")
    p.add_argument("--cps", type=float, default=50.0, help="pace while running (0: unpaced)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds of dialing before timing")
    p.add_argument("--no-compact", action="store_true", help="never compact the tally")
    p.add_argument("--no-running", action="store_true", help="only the campaign at rest")
    p.add_argument("--trigger-cost", action="store_true", help="price the triggers on writes")
    args = p.parse_args()
    load_at_start = load_average()

    _, campaign_id, import_seconds = million_campaign(args.rows, rebuild=args.rebuild)
    fleet_env = (
        {"DIALER_ACCOUNT_CPS": str(args.cps), "DIALER_NUMBER_CPS": str(args.cps)}
        if args.cps
        else {}
    )
    results: dict[str, dict[str, Any]] = {}
    with Bench(BENCH_DB, template=MILLION_DB, env=fleet_env) as bench:
        url = bench.db_url
        started = time.perf_counter()
        bench.fleet.cli("db", "upgrade")
        upgrade_seconds = time.perf_counter() - started
        with bench.engine.connect() as conn:
            head = conn.scalar(text("SELECT version_num FROM alembic_version"))

        env = {**os.environ, "DIALER_DATABASE_URL": url, **code_env()}
        # An installed dialer has its bytecode cached; a sandbox that forbids writing it
        # (PYTHONDONTWRITEBYTECODE) would time compiling the package from source instead.
        nocache = env.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["DIALER_DATABASE_URL"] = url
        from dialer import settings

        settings.override(None)
        # The schema says whether this checkout keeps a tally (an import could find a
        # dialer.store.tally of another installed copy).
        with bench.engine.connect() as conn:
            has_tally = conn.scalar(text("SELECT to_regclass('contact_tally')")) is not None

        cli = [sys.executable, "-m", "dialer.cli", "campaign", "status", str(campaign_id)]
        cli.append("--json")
        # The first run writes the bytecode cache and warms PostgreSQL's buffers.
        subprocess.run(cli, env=env, check=True, capture_output=True)
        imports, heavy = import_profile(cli, env)
        commands = {"cli": cli, "bare": [sys.executable, "-c", "pass"]}

        log("timing the campaign at rest")
        rest_load = load_average()
        rest = time_commands(commands, env, args.repeat)
        rest_api, rest_st = time_api(campaign_id, args.repeat)
        results["at rest (draft, vacuumed)"] = {
            "runs": rest,
            "api": rest_api,
            "st": rest_st,
            "load": rest_load,
        }
        rest_plan = plan(url, campaign_id, has_tally)
        costs = trigger_cost(url, campaign_id) if args.trigger_cost and has_tally else []

        if not args.no_running:
            bench.up(workers=2, simulator=SIM_FLAGS)
            bench.fleet.cli("campaign", "start", str(campaign_id))
            compactor = None
            if has_tally and not args.no_compact:
                compactor = Compactor(url)
                compactor.start()
            pace = f"paced at {args.cps:g} calls/s" if args.cps else "unpaced"
            log(f"running the campaign {pace}: {args.warmup:g} s of warm-up")
            time.sleep(args.warmup)
            before = json.loads(subprocess.run(cli, env=env, capture_output=True).stdout)
            t0 = time.monotonic()
            run_load = load_average()
            running = time_commands(commands, env, args.repeat)
            run_api, run_st = time_api(campaign_id, args.repeat)
            seconds = time.monotonic() - t0
            changed = run_st["calls"] - before["calls"]
            results[f"running, {pace}"] = {
                "runs": running,
                "load": run_load,
                "api": run_api,
                "st": run_st,
                "note": f"{changed:,} calls created while timing ({seconds:.1f} s), "
                f"{run_st['calls']:,} in all; contacts {run_st['contacts']}",
            }
            if compactor is not None:
                compactor.stop.set()
                compactor.join()
                results[f"running, {pace}"]["note"] += (
                    f"; {len(compactor.runs)} compactions, median "
                    f"{1000 * median(compactor.runs):.0f} ms"
                    if compactor.runs
                    else ""
                )
            rows = tally_rows(url)
            if rows is not None:
                results[f"running, {pace}"]["note"] += f"; contact_tally holds {rows:,} rows"
            run_plan = plan(url, campaign_id, has_tally)

    print(
        f"status: campaign {campaign_id} ({rest_st['total']:,} contacts), cloned from "
        f"{MILLION_DB} into {BENCH_DB}; schema {head}"
    )
    if import_seconds:
        print(f"import by `dialer campaign create` (this run): {import_seconds:.1f} s")
    print(f"`dialer db upgrade` on the clone: {upgrade_seconds:.1f} s")
    for name, r in results.items():
        (wall, cpu), (bare_wall, bare_cpu) = r["runs"]["cli"], r["runs"]["bare"]
        print(f"{name} (load average while timed: {r['load']}):")
        print(
            f"  `dialer campaign status {campaign_id} --json`: {ms(wall)}; CPU median "
            f"{1000 * median(cpu):.0f} ms ({args.repeat} runs)"
        )
        print(
            f"  bare interpreter start, taking turns with it: {ms(bare_wall)}; CPU median "
            f"{1000 * median(bare_cpu):.0f} ms"
        )
        print(f"  api.status({campaign_id}) in process: {ms(r['api'])} ({args.repeat} runs)")
        if "note" in r:
            print(f"  {r['note']}")
    print(
        f"the status command's imports: {1000 * imports:.0f} ms (-X importtime, one run), "
        f"of the heavy ones: {', '.join(heavy) or 'none'}"
    )
    if nocache:
        print("(PYTHONDONTWRITEBYTECODE was set here; unset for the subprocesses timed)")
    if costs:
        print("the tally triggers on the write path (inside PostgreSQL, 5,000 statements each):")
        for line in costs:
            print(f"  {line}")
    print("plan of the count by status, at rest:")
    for line in rest_plan:
        print(f"  {line}")
    if not args.no_running:
        print("and while running:")
        for line in run_plan:
            print(f"  {line}")
    print(describe(url, load_at_start))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
